"""Exactly one effect per routed event while the bridge, Redis and the Celery worker are killed and restarted.

Events stream in while: the bridge is kill -9'd three times mid-stream (and restarted), the Celery worker is
kill -9'd with tasks reserved (and restarted), and Redis is stopped for over 10 s (and restarted).
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from streams.bridge.celery_wire import PENDING_MESSAGES, PENDING_SET
from tests.bridge.harness import (
    BridgeWorld,
    Proc,
    cleared_event,
    committed_total,
    make_world,
    running,
    violation_event,
    wait_for,
)
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

ROUTES = """\
routes:
  pdf:
    topic: "{cleared}"
    task: streams.generate_invoice_pdf
    queue: default
    retry: {{max_attempts: 5, backoff: 500ms, max_backoff: 5s, max_redeliveries: 10}}
    args: {{invoice_id: invoice_id, invoice_number: invoice_number, tenant_id: tenant_id,
           seller_vat_number: seller_vat_number, tax_inclusive_total: tax_inclusive_total,
           vat_total: vat_total, currency: currency, cleared_at: cleared_at, qr_payload: qr_payload}}
  errors:
    topic: "{violations}"
    where: {{severity: ERROR}}
    task: streams.notify_compliance
    queue: interactive
    retry: {{max_attempts: 5, backoff: 500ms, max_backoff: 5s, max_redeliveries: 10}}
    args: {{violation_id: violation_id, invoice_id: invoice_id, tenant_id: tenant_id, rule_code: rule_code,
           severity: severity, message: message, field_path: field_path, detected_at: detected_at}}
  warnings:
    topic: "{violations}"
    where: {{severity: WARNING}}
    task: streams.notify_compliance
    queue: batch
    priority: 6
    retry: {{max_attempts: 5, backoff: 500ms, max_backoff: 5s, max_redeliveries: 10}}
    args: {{violation_id: violation_id, invoice_id: invoice_id, tenant_id: tenant_id, rule_code: rule_code,
           severity: severity, message: message}}
"""
INVOICES, VIOLATIONS = 450, 150
PACE_S = 0.25  # between chunks of CHUNK events: the stream lasts about 20 s
CHUNK = 8


class Stream(threading.Thread):
    """Publishes the events in paced chunks, so the faults land while events are flowing."""

    def __init__(self, world: BridgeWorld, events: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(daemon=True)
        self.world, self.events = world, events
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.world.publisher() as publisher:
                for start in range(0, len(self.events), CHUNK):
                    futures = [publisher.publish(topic, event) for topic, event in self.events[start : start + CHUNK]]
                    for future in futures:
                        future.result(timeout=30)
                    self.sent += len(futures)
                    time.sleep(PACE_S)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc


@pytest.mark.timeout(300)
def test_every_routed_event_has_exactly_one_effect_through_kills_and_an_outage(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> None:
    with running(make_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES)) as world:
        invoices = [cleared_event(i) for i in range(INVOICES)]
        violations = [violation_event(i, "ERROR" if i % 3 else "WARNING") for i in range(VIOLATIONS)]
        events = [(world.cleared, e) for e in invoices] + [(world.violations, e) for e in violations]
        random.Random(7).shuffle(events)
        # Supervised like under systemd: kombu 5.7 can end a worker with an unrecoverable AttributeError
        # when Redis vanishes (docs/decisions/0008); the bridge needs no supervisor in this test.
        worker = world.worker(concurrency=2, prefetch=4).start().supervise()
        # Tasks a broker loses after the push (kombu pops, then records the reservation) come back from the
        # bridge's ledger sweeper once their queue is empty.
        bridge = world.bridge("--batch-size", "16", "--redeliver-after", "5", "--sweep-interval", "1").start()
        stream = Stream(world, events)
        stream.start()

        # 1) kill -9 the bridge three times while it works, restarting it each time.
        for kill, threshold in enumerate((40, 110, 180), start=1):

            def reached(t: int = threshold) -> bool:
                return world.effects() >= t

            wait_for(reached, 60, f"{threshold} effects before bridge kill {kill}")
            bridge.kill9_and_restart()
        # 2) kill -9 the worker (all its processes) while it holds reserved, unacknowledged tasks.
        reserved = kill_worker_holding_tasks(world, worker, after_effects=250)
        # 3) stop Redis for more than 10 s mid-stream; the bridge pauses, stays up, and resumes.
        outage = stop_redis(world, after_effects=330, seconds=10.5)
        assert bridge.alive()

        stream.join(timeout=90)
        assert stream.error is None, stream.error
        assert stream.sent == len(events)
        assert (bridge.starts, worker.starts - worker.crashes, outage >= 10, reserved > 0) == (4, 2, True, True)
        assert_exactly_one_effect_per_event(world, invoices, violations)


def kill_worker_holding_tasks(world: BridgeWorld, worker: Proc, *, after_effects: int) -> int:
    wait_for(lambda: world.effects() >= after_effects, 60, f"{after_effects} effects before the worker kill")
    client = world.redis.client()
    reserved = wait_for(lambda: client.hlen("unacked"), 30, "tasks reserved by the worker", 0.01)
    worker.kill9_and_restart()
    return int(reserved)


def stop_redis(world: BridgeWorld, *, after_effects: int, seconds: float) -> float:
    wait_for(lambda: world.effects() >= after_effects, 60, f"{after_effects} effects before the Redis outage")
    world.redis.stop()
    started = time.monotonic()
    time.sleep(seconds)
    world.redis.start()
    return time.monotonic() - started


def assert_exactly_one_effect_per_event(
    world: BridgeWorld, invoices: list[dict[str, Any]], violations: list[dict[str, Any]]
) -> None:
    expected = len(invoices) + len(violations)
    topics = [world.cleared, world.violations]
    wait_for(lambda: world.effects() >= expected, 120, f"{expected} effects", 0.5)
    wait_for(lambda: committed_total(world.bootstrap, world.group, topics) == expected, 60, "every offset committed")
    client = world.redis.client()

    def done_markers() -> set[str] | None:
        found = {key.decode() for key in client.scan_iter("streams:effects:done:*", count=1000)}
        return found if len(found) >= expected else None

    # A run cut off by the outage or a kill left its effect but not yet its marker; its redelivery (after
    # the visibility time-out, or the stale claim's expiry) finds the file and sets the marker.
    done = wait_for(done_markers, 60, "a done marker per event")
    time.sleep(2)  # stragglers (redelivered duplicates) still run now: they must not add effects

    pdf_ids = [path.stem for path in world.pdfs()]
    assert len(pdf_ids) == len(invoices)
    assert set(pdf_ids) == {e["invoice_id"] for e in invoices}
    for path in world.pdfs():
        assert path.read_bytes().startswith(b"%PDF-")
        assert path.read_bytes().rstrip().endswith(b"%%EOF")
    notes = [json.loads(path.read_text()) for path in world.notifications()]
    assert len(notes) == len(violations)
    by_id = {e["violation_id"]: e for e in violations}
    assert {n["violation_id"] for n in notes} == set(by_id)
    assert all(n["severity"] == by_id[n["violation_id"]]["severity"] for n in notes)
    assert len(list((world.data_dir / "bridge").rglob("*.tmp"))) <= 2  # temp files of runs killed mid-write
    assert len(done) == expected
    assert {client.get(key) for key in done} == {b"ok"}
    assert world.effects() == expected
    wait_for(lambda: client.zcard(PENDING_SET) == 0, 30, "an empty pending ledger")
    assert client.hlen(PENDING_MESSAGES) == 0
