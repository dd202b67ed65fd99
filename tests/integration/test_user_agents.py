"""A user's app on the one runtime, on a stack of its own: the README's example end to end, exactly-once across
kill -9 and a second worker, windows closed by the wall clock, late events and poison inputs."""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from streams.catalog import load_catalog
from streams.kafka_util import read_compacted
from streams.local.processes import free_port
from streams.local.state import read_state
from streams.publish import EventEncoder, Publisher
from streams.records import EventDecoder, UndecodableRecordError
from streams.schemas.registry_client import RegistryClient
from tests.integration.worker_harness import catalog_stack, header, read_topic, start_process, stop_worker, wait_for

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

    from confluent_kafka import Message

    from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).parent / "apps"
LIMIT = 100  # examples/velocity.py


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with catalog_stack(tmp_path_factory.mktemp("user-agents")) as settings:
        yield settings


def start_app(settings: Settings, app: str, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "streams.cli", "worker", "--app", app, "--web-port", str(port), *extra]
    return start_process(settings, command, log), port


def actions(count: int, users: int, tenant: str) -> list[dict[str, Any]]:
    """`count` user actions over `users` users, interleaved (each user's own order kept)."""
    return [
        {
            "user_id": f"{tenant}-u{n % users:02d}",
            "tenant_id": tenant,
            "action": "invoice.approve",
            "resource": f"inv-{n}",
            "occurred_at": 1_700_000_000_000 + n,
        }
        for n in range(count)
    ]


def expected_velocity(settings: Settings, tenant: str) -> tuple[dict[str, int], set[str]]:
    """What one uninterrupted run gives: the per-user totals and the violations (by source event id), from the
    records as they are stored (their timestamps decide the minutes), in partition order."""
    totals: collections.Counter[str] = collections.Counter()
    per_minute: collections.Counter[tuple[str, int]] = collections.Counter()
    violations = set()
    for message, event in _decoded(settings, "user.action"):
        if event["tenant_id"] != tenant:
            continue
        user, minute = event["user_id"], message.timestamp()[1] // 60_000
        totals[user] += 1
        per_minute[user, minute] += 1
        if per_minute[user, minute] == LIMIT:
            violations.add(header(message, "ce_id"))
    return dict(totals), violations


def table_totals(settings: Settings, group: str, tenant: str) -> dict[str, int]:
    changelog = read_compacted({"bootstrap.servers": settings.bootstrap_servers()}, f"{group}-store-changelog")
    prefix = f"actions-per-user:{tenant}-".encode()
    return {
        key.decode().split(":", 1)[1]: orjson.loads(value)
        for key, value in changelog.items()
        if key.startswith(prefix) and value is not None
    }


def violations_of(settings: Settings, tenant: str) -> list[str]:
    found = []
    for _, event in _decoded(settings, "compliance.violation"):
        if event["tenant_id"] == tenant and event["rule_code"] == "VELOCITY-100":
            found.append(event["source_event"]["event_id"])
    return found


def test_the_example_counts_and_flags_exactly_once_across_kill_9_and_a_second_worker(
    stack: Settings, tmp_path: Path
) -> None:
    """20k actions published while the worker is killed -9 three times and a second worker joins and leaves:
    the tables and violations equal what one uninterrupted run gives (no loss, no double count)."""
    tenant = f"t{uuid.uuid4().hex[:6]}"
    events = actions(int(os.environ.get("STREAMS_CRASH_EVENTS", "20000")), 40, tenant)
    log = tmp_path / "worker.log"
    worker, port = start_app(stack, "examples.velocity:app", log)
    second = None
    chunks = [events[i : i + len(events) // 8] for i in range(0, len(events), len(events) // 8)]
    try:
        with Publisher(stack, source="web-app") as publisher:
            for n, chunk in enumerate(chunks):
                for action in chunk:
                    publisher.publish_nowait("user.action", action)
                publisher.flush()
                if n == 1:  # a second worker joins, takes its share, and leaves (SIGTERM: a drain) later
                    second, _ = start_app(stack, "examples.velocity:app", tmp_path / "second.log")
                    wait_for(
                        lambda: "engine.assigned" in (tmp_path / "second.log").read_text(),
                        60,
                        lambda: "the second worker's assignment",
                    )
                if n == 3 and second is not None:
                    stop_worker(second)
                    second = None
                if n in (4, 5, 6):  # kill -9 while the chunk is being processed, then start again
                    time.sleep(0.2)
                    stop_worker(worker, signal.SIGKILL)
                    worker, port = start_app(stack, "examples.velocity:app", log)
                time.sleep(1.0)
        totals, wanted = expected_velocity(stack, tenant)
        assert sum(totals.values()) == len(events)
        assert wanted, "the run should reach the limit for some users"
        wait_for(
            lambda: table_totals(stack, "velocity-velocity", tenant) == totals,
            180,
            lambda: f"tables {sum(table_totals(stack, 'velocity-velocity', tenant).values())} of {len(events)}",
        )
        found = violations_of(stack, tenant)
        assert sorted(found) == sorted(wanted)  # each once: no loss, no duplicate
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200
        assert health.json()["agents"] == {"velocity": True}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'streams_agent_events_total{agent="velocity",outcome="processed"}' in metrics
    finally:
        if second is not None:
            stop_worker(second)
        stop_worker(worker)


def test_a_quiet_window_closes_by_the_wall_clock_and_a_late_event_is_dead_lettered(
    stack: Settings, tmp_path: Path
) -> None:
    tenant = f"w{uuid.uuid4().hex[:6]}"
    worker, _ = start_app(stack, "tests.integration.apps.windows:app", tmp_path / "worker.log")
    try:
        with Publisher(stack, source="web-app") as publisher:
            for n in range(3):
                publisher.publish("user.action", actions(3, 1, tenant)[n]).result()
        # No event follows: the 2-second window must close on the clock and its callback report the count.
        wait_for(lambda: bool(_closed_windows(stack, tenant)), 60, lambda: "a window-closed violation")
        closed = _closed_windows(stack, tenant)
        assert [count for _, count in closed] == [3]
        late = Producer({"bootstrap.servers": stack.bootstrap_servers()})
        encoded = _encoded_action(stack, actions(1, 1, tenant)[0])
        late.produce(
            "user.action",
            key=f"{tenant}-u00".encode(),
            value=encoded,
            timestamp=int(time.time() * 1000) - 60_000,
            headers=[("ce_id", f"late-{tenant}".encode())],
        )
        assert late.flush(10) == 0
        wait_for(
            lambda: any(header(m, "ce_id") == f"late-{tenant}" for m in read_topic(stack, "user.action.dlq")),
            60,
            lambda: "the late event in user.action.dlq",
        )
        parked = next(m for m in read_topic(stack, "user.action.dlq") if header(m, "ce_id") == f"late-{tenant}")
        assert header(parked, "dlq_error_class") == "LateEvent"
        assert parked.value() == encoded  # intact
    finally:
        stop_worker(worker)


def _encoded_action(settings: Settings, action: dict[str, Any]) -> bytes:
    with RegistryClient(settings.registry_url()) as registry:
        encoder = EventEncoder(load_catalog(settings.catalog_path), registry, source="t")
        return encoder.encode("user.action", action).value


def _closed_windows(settings: Settings, tenant: str) -> list[tuple[str, int]]:
    found = []
    for _, event in _decoded(settings, "compliance.violation"):
        if event["tenant_id"] == tenant and event["rule_code"] == "WINDOW-CLOSED":
            found.append((event["message"], int(event["field_path"])))
    return found


def test_poison_inputs_end_as_specified_and_the_partition_flows(stack: Settings, tmp_path: Path) -> None:
    """Undecodable bytes, a handler that always raises, one that raises Retry three times then succeeds, and a
    record near the topic's size limit: each settles, later records on the same partition still flow, and
    the worker stays up with a bounded RSS."""
    tenant = f"p{uuid.uuid4().hex[:6]}"
    worker, port = start_app(stack, "tests.integration.apps.poison:app", tmp_path / "worker.log")
    try:
        key = f"{tenant}-u00".encode()  # one key: everything lands on one partition, in this order
        producer = Producer({"bootstrap.servers": stack.bootstrap_servers(), "message.max.bytes": 2_000_000})
        bad = b"\x00\x00\x00\x00\x01not avro"
        producer.produce("user.action", key=key, value=bad, headers=[("ce_id", f"{tenant}-bad".encode())])
        near_limit = b"\x00" + b"x" * 1_040_000
        producer.produce("user.action", key=key, value=near_limit, headers=[("ce_id", f"{tenant}-big".encode())])
        assert producer.flush(30) == 0
        with Publisher(stack, source="web-app") as publisher:
            for action, resource in (("always-raise", "r1"), ("retry-3", "r2"), ("approve", "r3")):
                publisher.publish(
                    "user.action", {**actions(1, 1, tenant)[0], "action": action, "resource": f"{tenant}-{resource}"}
                ).result()

        def parked() -> dict[str, Message]:
            return {header(m, "ce_id"): m for m in read_topic(stack, "user.action.dlq") if m.key() == key}

        wait_for(lambda: len(parked()) == 3, 90, lambda: f"3 dead letters of {tenant}, have {sorted(parked())}")
        dead = parked()
        assert dead[f"{tenant}-bad"].value() == bad
        assert header(dead[f"{tenant}-bad"], "dlq_error_class") == "UndecodableRecordError"
        assert dead[f"{tenant}-big"].value() == near_limit  # parked whole: the DLQ topic has room for headers
        raised = next(m for k, m in dead.items() if k not in (f"{tenant}-bad", f"{tenant}-big"))
        assert header(raised, "dlq_error_class") == "RuntimeError"
        assert header(raised, "dlq_attempts") == "4"
        # The retried event and the good one after all of it were handled: the table counts each once.
        wait_for(
            lambda: _table_value(stack, "poison-test-handle", f"seen:{tenant}") == 2,
            60,
            lambda: f"seen[{tenant}] == 2, have {_table_value(stack, 'poison-test-handle', f'seen:{tenant}')}",
        )
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200
        rss_mb = _rss_mb(worker.pid)
        assert rss_mb < 400, f"worker RSS {rss_mb:.0f} MB after the poison inputs"
    finally:
        stop_worker(worker)


def _table_value(settings: Settings, group: str, key: str) -> Any:
    changelog = read_compacted({"bootstrap.servers": settings.bootstrap_servers()}, f"{group}-store-changelog")
    value = changelog.get(key.encode())
    return None if value is None else orjson.loads(value)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _decoded(settings: Settings, topic: str) -> list[tuple[Any, dict[str, Any]]]:
    """Every committed record of `topic` with its decoded value (the poison test's bad records left out)."""
    found = []
    with RegistryClient(settings.registry_url()) as registry:
        decoder = EventDecoder(registry)
        for message in read_topic(settings, topic):
            try:
                found.append((message, decoder.decode(message.value())[1]))
            except UndecodableRecordError:
                continue
    return found


def test_a_registry_outage_holds_the_partition_and_parks_nothing(stack: Settings, tmp_path: Path) -> None:
    """The worker starts while the registry does not answer (stopped with SIGSTOP: connections hang until the
    client's timeout): its records wait, none is dead-lettered, and once the registry answers each is
    handled once."""
    tenant = f"r{uuid.uuid4().hex[:6]}"
    key = f"{tenant}-u00".encode()
    encoded = [_encoded_action(stack, action) for action in actions(5, 1, tenant)]  # while the registry answers
    state = read_state(stack.data_dir)
    assert state is not None
    registry_pid = state.services["registry"].pid
    log = tmp_path / "worker.log"
    os.kill(registry_pid, signal.SIGSTOP)
    worker = None
    try:
        worker, port = start_app(stack, "tests.integration.apps.poison:app", log)
        producer = Producer({"bootstrap.servers": stack.bootstrap_servers()})
        for n, value in enumerate(encoded):
            producer.produce("user.action", key=key, value=value, headers=[("ce_id", f"{tenant}-{n}".encode())])
        assert producer.flush(30) == 0
        wait_for(lambda: log.read_text().count("engine.held") >= 2, 90, lambda: "the worker holding twice")
        assert not [m for m in read_topic(stack, "user.action.dlq") if m.key() == key]
        assert _table_value(stack, "poison-test-handle", f"seen:{tenant}") is None
    finally:
        os.kill(registry_pid, signal.SIGCONT)
    try:
        wait_for(
            lambda: _table_value(stack, "poison-test-handle", f"seen:{tenant}") == len(encoded),
            120,
            lambda: (
                f"seen[{tenant}] == {len(encoded)}, have {_table_value(stack, 'poison-test-handle', f'seen:{tenant}')}"
            ),
        )
        assert not [m for m in read_topic(stack, "user.action.dlq") if m.key() == key]
        text = log.read_text()
        assert "engine.record.isolated" not in text
        assert "cannot reach the schema registry" in text  # the hold says why, in one line
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        if worker is not None:
            stop_worker(worker)
