"""Tasks that never succeed end in task.failed after their bound, and then stop: no retry or redelivery loop."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from streams.bridge.celery_wire import PENDING_MESSAGES, PENDING_SET, task_id_for
from streams.schemas.codec import HEADER, AvroCodec
from streams.schemas.registry_client import RegistryClient
from tests.bridge.harness import (
    QUEUES,
    BridgeWorld,
    cleared_event,
    make_world,
    read_topic,
    running,
    violation_event,
    wait_for,
)
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

ROUTES = """\
routes:
  doomed:
    topic: "{cleared}"
    task: tests.always_fails
    queue: default
    retry: {{max_attempts: 3, backoff: 200ms, max_backoff: 1s, max_redeliveries: 2}}
    args: {{invoice_id: invoice_id}}
  poison:
    topic: "{violations}"
    task: tests.crash_worker
    queue: batch
    retry: {{max_attempts: 3, backoff: 200ms, max_backoff: 1s, max_redeliveries: 2}}
    args: {{invoice_id: invoice_id}}
"""


def decode_all(world: BridgeWorld, expected: int) -> list[dict[str, Any]]:
    records = read_topic(world.bootstrap, world.failed, expected, timeout=20)
    with RegistryClient(world.registry) as registry:
        out = []
        for record in records:
            value = record.value()
            assert value is not None
            schema_id = int.from_bytes(value[1 : HEADER.size], "big")
            out.append(AvroCodec(registry.schema_by_id(schema_id), schema_id).decode(value))
        return out


def settled(world: BridgeWorld) -> bool:
    """Nothing left to run: every queue and the unacked hash are empty."""
    client = world.redis.client()
    return all(world.redis.depth(q) == 0 for q in QUEUES) and client.hlen("unacked") == 0


@pytest.mark.timeout(240)
def test_always_failing_and_worker_killing_tasks_end_in_task_failed_without_looping(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> None:
    with running(make_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES)) as world:
        invoices = [cleared_event(i) for i in range(3)]
        poison = [violation_event(i) for i in range(2)]
        published: dict[str, str] = {}
        with world.publisher() as publisher:
            for event in invoices:
                published[publisher.publish(world.cleared, event).result().event_id] = "tests.always_fails"
            for event in poison:
                published[publisher.publish(world.violations, event).result().event_id] = "tests.crash_worker"
        world.worker(concurrency=1, prefetch=1).start()
        world.bridge().start()

        def five_failures() -> list[dict[str, Any]] | None:
            rows = decode_all(world, 5)
            return rows if len(rows) >= 5 else None

        failed = wait_for(five_failures, 150, "five task.failed events")
        by_task = {row["task_id"]: row for row in failed}
        assert set(by_task) == {task_id_for(event_id, task) for event_id, task in published.items()}
        for row in failed:
            assert row["event_id"] in published
            assert row["task_name"] == published[row["event_id"]]
            if row["task_name"] == "tests.always_fails":
                assert (row["reason"], row["attempts"], row["error_class"]) == ("retries_exhausted", 3, "RuntimeError")
                assert row["error_message"].startswith("always fails")
                assert row["source_topic"] == world.cleared
                assert row["route"] == "doomed"
            else:
                # os._exit in the pool process: Celery requeues (reject_on_worker_lost); our counter stops it.
                assert (row["reason"], row["attempts"]) == ("redelivery_limit", 0)
                assert row["deliveries"] >= 4  # the first run, 2 allowed redeliveries, and the one that gave up
                assert row["error_class"] == "TaskGaveUpError"
                assert row["source_topic"] == world.violations
            assert row["source_offset"] is not None
            assert row["failed_at"].tzinfo is not None

        # No loop: after giving up, nothing is queued, reserved or run again.
        wait_for(lambda: settled(world), 30, "empty queues and no reserved tasks")
        client = world.redis.client()
        counts = {
            key: client.get(key)
            for key in client.scan_iter("streams:effects:*")
            if b":done:" in key or b":deliveries:" in key or b":failures:" in key
        }
        time.sleep(3)
        assert {key: client.get(key) for key in counts} == counts
        assert settled(world)
        assert len(read_topic(world.bootstrap, world.failed, 5, timeout=3)) == 5
        done = {key.decode().rsplit(":", 1)[1]: client.get(key) for key in counts if b":done:" in key}
        assert done == dict.fromkeys(published, b"failed")
        # Each poison event killed a pool process exactly 1 + max_redeliveries times, then never again.
        log = "".join(proc.output() for proc in world.processes if proc.name == "worker")
        assert len(set(re.findall(r"Worker exited prematurely: exitcode 17 Job: (\d+)", log))) == 2 * 3
        assert log.count("tests.always_fails") >= 3
        assert len(re.findall(r"tests\.always_fails\[[0-9a-f-]+\] failed \(attempt", log)) == 3 * 2


LOSSY_ROUTES = """\
routes:
  pdf:
    topic: "{cleared}"
    task: streams.generate_invoice_pdf
    queue: default
    args: {{invoice_id: invoice_id, invoice_number: invoice_number, tenant_id: tenant_id,
           seller_vat_number: seller_vat_number, tax_inclusive_total: tax_inclusive_total,
           vat_total: vat_total, currency: currency}}
"""


def test_tasks_a_broker_loses_after_the_push_are_pushed_again(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> None:
    with running(make_world(tmp_path, unique_name, kafka_bootstrap, registry_url, LOSSY_ROUTES)) as world:
        invoices = [cleared_event(i) for i in range(30)]
        with world.publisher() as publisher:
            for event in invoices:
                publisher.publish(world.cleared, event)
        bridge = world.bridge("--redeliver-after", "2", "--sweep-interval", "0.5").start()
        wait_for(lambda: world.redis.depth("default") == 30, 60, "30 tasks queued")
        client = world.redis.client()
        assert client.zcard(PENDING_SET) == 30
        # What a worker killed between kombu's BRPOP and its bookkeeping does: the message is gone.
        lost = [client.rpop("default") for _ in range(10)]
        assert all(lost)
        world.worker(concurrency=2).start()
        wait_for(lambda: len(world.pdfs()) == 30, 60, "30 PDFs, the 10 lost ones included")
        assert {p.stem for p in world.pdfs()} == {e["invoice_id"] for e in invoices}
        wait_for(lambda: client.zcard(PENDING_SET) == 0, 30, "an empty pending ledger")
        assert client.hlen(PENDING_MESSAGES) == 0
        assert "tasks lost after their push were pushed again" in bridge.output()
