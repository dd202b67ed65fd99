"""Scaling out is running more processes: two workers and two bridges share the partitions, and when one of
each stops, the other takes its partitions over and the work goes on (local stack, real Celery worker)."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient

from streams.demo.samples import invoice_chain
from streams.local.processes import free_port
from streams.publish import Publisher
from tests.integration.worker_harness import (
    catalog_stack,
    header,
    read_topic,
    start_process,
    start_worker,
    stop_worker,
    wait_for,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from streams.settings import Settings

TENANTS = [f"scale-{n:02d}" for n in range(24)]
PER_TENANT = 10  # per batch


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with catalog_stack(tmp_path_factory.mktemp("scale-out"), with_redis=True) as settings:
        yield settings


def assignments(settings: Settings, group: str) -> list[set[tuple[str, int]]]:
    """Each member's assigned (topic, partition)s, as the group coordinator has them now."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers()})
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    if str(description.state) != "ConsumerGroupState.STABLE":
        return []
    return [{(tp.topic, tp.partition) for tp in member.assignment.topic_partitions} for member in description.members]


def spread_over(settings: Settings, group: str, members: int, topic: str) -> bool:
    """`members` members, each owning some of `topic`'s partitions, all of them owned."""
    owned = [{p for t, p in member if t == topic} for member in assignments(settings, group)]
    return len(owned) == members and all(owned) and len(set().union(*owned)) == 6


def publish_batch(settings: Settings, first_icv: int) -> None:
    with Publisher(settings, source="billing-api") as publisher:
        for tenant in TENANTS:
            chain = invoice_chain(first_icv + PER_TENANT - 1, tenant=tenant)
            for invoice in chain[first_icv - 1 :]:
                publisher.publish("invoice.created", invoice)


def cleared(settings: Settings) -> int:
    return len({header(m, "ce_id") for m in read_topic(settings, "invoice.cleared")})


def pdfs(settings: Settings) -> int:
    return sum(len(list((settings.data_dir / "bridge" / "invoices" / tenant).glob("*.pdf"))) for tenant in TENANTS)


@pytest.mark.timeout(600)
def test_two_workers_and_two_bridges_share_partitions_and_survive_one_stopping(stack: Settings, tmp_path: Path) -> None:
    bridge = [sys.executable, "-m", "streams.cli", "bridge"]
    celery = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "streams.bridge.reference_tasks",
        "worker",
        "-Q",
        "interactive,default,batch",
        "--concurrency",
        "2",
        "--without-gossip",
        "--without-mingle",
    ]
    processes = [
        start_worker(stack, "validation", free_port(), tmp_path / "worker-a.log"),
        start_worker(stack, "validation", free_port(), tmp_path / "worker-b.log"),
        start_process(stack, bridge, tmp_path / "bridge-a.log"),
        start_process(stack, bridge, tmp_path / "bridge-b.log"),
        start_process(stack, celery, tmp_path / "celery.log"),
    ]
    worker_b, bridge_b = processes[1], processes[3]
    try:
        wait_for(
            lambda: spread_over(stack, "streams-worker-validation", 2, "invoice.created"),
            120,
            lambda: f"two workers sharing invoice.created: {assignments(stack, 'streams-worker-validation')}",
        )
        wait_for(
            lambda: spread_over(stack, "streams-bridge", 2, "invoice.cleared"),
            120,
            lambda: f"two bridges sharing invoice.cleared: {assignments(stack, 'streams-bridge')}",
        )
        publish_batch(stack, first_icv=1)
        total = len(TENANTS) * PER_TENANT
        wait_for(
            lambda: cleared(stack) == total and pdfs(stack) == total,
            180,
            lambda: f"{total} cleared and PDFs: {cleared(stack)} cleared, {pdfs(stack)} PDFs",
        )

        stop_worker(worker_b, signal.SIGTERM)
        stop_worker(bridge_b, signal.SIGTERM)
        wait_for(
            lambda: spread_over(stack, "streams-worker-validation", 1, "invoice.created"),
            120,
            lambda: f"one worker owning invoice.created: {assignments(stack, 'streams-worker-validation')}",
        )
        wait_for(
            lambda: spread_over(stack, "streams-bridge", 1, "invoice.cleared"),
            120,
            lambda: f"one bridge owning invoice.cleared: {assignments(stack, 'streams-bridge')}",
        )
        publish_batch(stack, first_icv=PER_TENANT + 1)
        wait_for(
            lambda: cleared(stack) == 2 * total and pdfs(stack) == 2 * total,
            180,
            lambda: f"{2 * total} cleared and PDFs: {cleared(stack)} cleared, {pdfs(stack)} PDFs",
        )
        assert [m for m in read_topic(stack, "compliance.violation") if header(m, "ce_tenantid") in TENANTS] == []
    finally:
        for process in processes:
            stop_worker(process, signal.SIGKILL)
