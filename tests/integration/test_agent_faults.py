"""The worker under faults: kill -9 and rebalances lose no validation outcome, change no verdict, and leave
the audit chain complete, without duplicates or forks."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.agents.audit_chain import ChainDecoder, ChainEntry, read_chain
from streams.agents.audit_verify import verify_entries
from streams.agents.zatca import outcome_id
from streams.catalog import load_catalog
from streams.demo.samples import invoice_chain
from streams.local.processes import free_port
from streams.publish import Publisher
from streams.schemas.registry_client import RegistryClient
from tests.integration.worker_harness import catalog_stack, header, read_topic, start_worker, stop_worker, wait_for

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from streams.settings import KafkaConfig, Settings

# The run size. CI keeps the suite short with the default; acceptance runs set STREAMS_CRASH_EVENTS=20000.
CRASH_EVENTS = int(os.environ.get("STREAMS_CRASH_EVENTS", "4000"))
PATIENCE = 120 + CRASH_EVENTS // 25  # seconds to wait for one stage; the 2-core machine does ~200 invoices/s here
SELLERS = 20
AGENTS = "validation,audit"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with catalog_stack(tmp_path_factory.mktemp("agent-faults")) as settings:
        yield settings


class Tally:
    """Keeps reading a topic from the start and counts the distinct source events of the chosen tenants."""

    def __init__(self, settings: Settings, topic: str, tenants: set[str]) -> None:
        self.tenants = tenants
        self.sources: set[str] = set()
        self.records = 0
        self.consumer = Consumer(
            {"bootstrap.servers": settings.bootstrap_servers(), "group.id": "tests", "enable.auto.commit": False}
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])

    def update(self) -> int:
        for message in self.consumer.consume(10_000, timeout=0.5):
            if message.error() is None and header(message, "ce_tenantid") in self.tenants:
                self.records += 1
                self.sources.add(header(message, "ce_id"))
        return len(self.sources)

    def close(self) -> None:
        self.consumer.close()


def publish_chains(settings: Settings, tenants: list[str], per_tenant: int) -> None:
    chains = [invoice_chain(per_tenant, tenant=tenant) for tenant in tenants]
    with Publisher(settings, source="billing-api") as publisher:
        for position in range(per_tenant):  # interleave the sellers, as real traffic would
            for chain in chains:
                publisher.publish("invoice.created", chain[position])


def missing_report(settings: Settings, tenants: set[str], cleared: Tally) -> str:
    """Which invoices have no outcome, where they sit, and where the worker's group committed."""
    missing = [
        (m.partition(), m.offset())
        for m in read_topic(settings, "invoice.created")
        if header(m, "ce_tenantid") in tenants and outcome_id(header(m, "ce_id"), "cleared") not in cleared.sources
    ]
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers(), "group.id": "streams-worker-validation"})
    try:
        committed = consumer.committed([TopicPartition("invoice.created", p) for p in range(6)], timeout=10)
    finally:
        consumer.close()
    return f"missing (partition, offset): {missing[:40]}; committed: {[(c.partition, c.offset) for c in committed]}"


def run_with_faults(
    stack: Settings,
    tmp_path: Path,
    tenants: list[str],
    per_tenant: int,
    fault: Callable[[int, list[subprocess.Popen[bytes]]], None],
    marks: list[int],
) -> Tally:
    """Publish, run a worker, call `fault` at each progress mark, and wait until every invoice has its outcome."""
    total = len(tenants) * per_tenant
    publish_chains(stack, tenants, per_tenant)
    cleared = Tally(stack, "invoice.cleared", set(tenants))
    workers = [start_worker(stack, AGENTS, free_port(), tmp_path / "worker-0.log")]
    try:
        for mark in marks:

            def reached(mark: int = mark) -> bool:
                return cleared.update() >= mark

            def wanted(mark: int = mark) -> str:
                return f"{mark} cleared (have {len(cleared.sources)})"

            wait_for(reached, PATIENCE, wanted)
            fault(mark, workers)
        try:
            wait_for(
                lambda: cleared.update() >= total,
                PATIENCE,
                lambda: f"all {total} cleared (have {len(cleared.sources)})",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {missing_report(stack, set(tenants), cleared)}") from None
        wait_for(lambda: chain_complete(stack), PATIENCE, lambda: "the audit chain to catch up")
        time.sleep(2)  # anything still in flight lands now, so duplicates would be counted
        cleared.update()
        return cleared
    finally:
        for process in workers:
            stop_worker(process, signal.SIGKILL)
        cleared.close()


def chain_complete(stack: Settings) -> bool:
    """One audit entry per record of every audited topic (duplicates would make it more)."""
    sources = sum(len(read_topic(stack, spec.name)) for spec in load_catalog(stack.catalog_path).topics if spec.audit)
    return len(read_topic(stack, "audit.trail")) >= sources


def assert_chain_intact(stack: Settings) -> None:
    """Every audited record exactly once in the chain, one unbroken chain, every source re-read."""
    kafka: KafkaConfig = {"bootstrap.servers": stack.bootstrap_servers()}
    with RegistryClient(stack.registry_url()) as registry:
        chain = [entry for _, entry in read_chain(kafka, ChainDecoder(registry), "audit.trail")]
    entries = [entry for entry in chain if isinstance(entry, ChainEntry)]
    assert len(entries) == len(chain)
    sources = {(e.topic, e.partition, e.offset) for e in entries}
    assert len(sources) == len(entries)  # no record chained twice
    audited = {
        (m.topic(), m.partition(), m.offset())
        for spec in load_catalog(stack.catalog_path).topics
        if spec.audit
        for m in read_topic(stack, spec.name)
    }
    assert sources == audited  # none missing
    assert [e.sequence for e in entries] == list(range(len(entries)))  # no fork, no gap
    report = verify_entries(chain, "audit.trail", kafka)
    assert report.ok, report.to_json()


def violations_of(stack: Settings, tenants: list[str]) -> list[Any]:
    return [m for m in read_topic(stack, "compliance.violation") if header(m, "ce_tenantid") in set(tenants)]


@pytest.mark.timeout(6 * PATIENCE)
def test_kill_9_three_times_loses_nothing_and_judges_redeliveries_the_same(stack: Settings, tmp_path: Path) -> None:
    tenants = [f"crash-{n:02d}" for n in range(SELLERS)]
    per_tenant = CRASH_EVENTS // SELLERS
    total = per_tenant * SELLERS

    def kill_and_restart(mark: int, workers: list[subprocess.Popen[bytes]]) -> None:
        stop_worker(workers[-1], signal.SIGKILL)
        workers.append(start_worker(stack, AGENTS, free_port(), tmp_path / f"worker-{mark}.log"))

    marks = [total * 15 // 100, total * 45 // 100, total * 75 // 100]
    cleared = run_with_faults(stack, tmp_path, tenants, per_tenant, kill_and_restart, marks)
    assert len(cleared.sources) == total  # every invoice has its outcome
    # A redelivered invoice must not be mistaken for a duplicate or an ICV/hash break.
    assert violations_of(stack, tenants) == []
    assert_chain_intact(stack)


@pytest.mark.timeout(6 * PATIENCE)
def test_a_second_worker_joining_and_leaving_loses_nothing(stack: Settings, tmp_path: Path) -> None:
    tenants = [f"rebalance-{n:02d}" for n in range(SELLERS)]
    per_tenant = CRASH_EVENTS // SELLERS
    total = per_tenant * SELLERS

    def join_then_leave(mark: int, workers: list[subprocess.Popen[bytes]]) -> None:
        if len(workers) == 1:
            workers.append(start_worker(stack, AGENTS, free_port(), tmp_path / "worker-b.log"))
        else:
            stop_worker(workers[-1], signal.SIGTERM)

    cleared = run_with_faults(stack, tmp_path, tenants, per_tenant, join_then_leave, [total // 5, total * 3 // 5])
    assert len(cleared.sources) == total
    assert violations_of(stack, tenants) == []
    assert_chain_intact(stack)
