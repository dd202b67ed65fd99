"""Bad input to the bridge: startup errors from the real CLI process, dead letters for undecodable records."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Producer

from tests.bridge.harness import (
    ROOT,
    BridgeWorld,
    cleared_event,
    make_world,
    read_topic,
    running,
    wait_for,
)
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from confluent_kafka import Message

ROUTES = """\
routes:
  pdf:
    topic: "{cleared}"
    task: streams.generate_invoice_pdf
    queue: default
    args: {{invoice_id: invoice_id, invoice_number: invoice_number, tenant_id: tenant_id,
           seller_vat_number: seller_vat_number, tax_inclusive_total: tax_inclusive_total,
           vat_total: vat_total, currency: currency, cleared_at: cleared_at}}
  notify:
    topic: "{violations}"
    where: {{severity: ERROR}}
    task: streams.notify_compliance
    queue: interactive
    args: {{violation_id: violation_id, invoice_id: invoice_id, tenant_id: tenant_id, rule_code: rule_code,
           severity: severity, message: message}}
"""


@pytest.fixture
def world(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> Iterator[BridgeWorld]:
    with running(make_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES)) as made:
        yield made


def test_undecodable_records_go_to_the_dlq_and_good_ones_to_celery(world: BridgeWorld) -> None:
    events = [cleared_event(i) for i in range(20)]
    with world.publisher() as publisher:
        for event in events[:10]:
            publisher.publish(world.cleared, event)
    producer = Producer({"bootstrap.servers": world.bootstrap})
    garbage = [
        (b"not-avro", b"\x07garbage that is not the Confluent wire format"),
        (b"unknown-id", b"\x00" + struct.pack(">I", 987_654_321) + b"\x02\x04"),
        (b"truncated", None),  # filled below with a real header and a cut datum
    ]
    with world.publisher() as publisher:
        good = publisher.encoder.encode(world.cleared, cleared_event(99)).value
    garbage[2] = (b"truncated", good[:12])
    for key, value in garbage:
        producer.produce(world.cleared, key=key, value=value, partition=0, headers=[("ce_id", key), ("trace", b"kept")])
    assert producer.flush(10) == 0
    with world.publisher() as publisher:
        for event in events[10:]:
            publisher.publish(world.cleared, event)

    world.worker(concurrency=1).start()
    bridge = world.bridge("--batch-size", "7").start()
    wait_for(lambda: len(world.pdfs()) == 20, 90, "20 PDFs")
    letters = read_topic(world.bootstrap, f"{world.cleared}.dlq", 3)
    assert sorted(m.key() or b"" for m in letters) == [b"not-avro", b"truncated", b"unknown-id"]
    for letter in letters:
        headers = bytes_headers(letter)
        assert headers["dlq_agent"] == b"bridge"
        assert headers["dlq_error_class"] == b"UndecodableRecordError"
        assert headers["dlq_topic"] == world.cleared.encode()
        assert headers["dlq_partition"] == b"0"
        assert int(headers["dlq_offset"]) >= 0
        assert int(headers["dlq_timestamp"]) > 0
        assert headers["trace"] == b"kept"
        assert headers["ce_id"] == letter.key()
        original = dict(garbage)[letter.key() or b""]
        assert letter.value() == original
    messages = {m.key(): bytes_headers(m)["dlq_error_message"].decode() for m in letters}
    assert "magic byte 7" in messages[b"not-avro"]
    assert "987654321" in messages[b"unknown-id"]
    assert {p.stem for p in world.pdfs()} == {e["invoice_id"] for e in events}
    assert all(p.read_bytes().startswith(b"%PDF-") for p in world.pdfs())
    assert bridge.alive()


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        (
            "routes:\n  r:\n    topic: '{cleared}'\n    task: streams.generate_invoice_pf\n",
            (
                "field 'task': unknown task 'streams.generate_invoice_pf' (not registered in the Celery app "
                "tests.bridge.worker_app); did you mean 'streams.generate_invoice_pdf'?"
            ),
        ),
        (
            "routes:\n  r:\n    topic: invoice.nope\n    task: streams.generate_invoice_pdf\n",
            "field 'topic': topic 'invoice.nope' is not in the catalog",
        ),
        (
            (
                "routes:\n  r:\n    topic: '{violations}'\n    where: {{severty: ERROR}}\n"
                "    task: streams.notify_compliance\n"
            ),
            "field 'where': 'severty' is not in the schema of",
        ),
    ],
    ids=["unknown-task", "topic-not-in-catalog", "filter-on-missing-field"],
)
def test_startup_errors_are_one_line_and_exit_1(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
    routes: str,
    expected: str,
) -> None:
    with running(make_world(tmp_path, unique_name, kafka_bootstrap, registry_url, routes)) as world:
        result = subprocess.run(
            [sys.executable, "-m", "streams.bridge"],
            env=world.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: {world.catalog_path}:"), lines[0]
        assert expected in lines[0]
        assert "Traceback" not in result.stderr
        checked = subprocess.run(
            [sys.executable, "-m", "streams.bridge", "--check", "-o", "json"],
            env=world.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 1
        assert expected in checked.stderr


def test_routes_listing_checks_against_the_real_celery_app(world: BridgeWorld) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.bridge", "--routes", "-o", "json"],
        env=world.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = json.loads(result.stdout)
    assert listed["group"] == world.group
    assert [(r["route"], r["topic"], r["task"], r["queue"]) for r in listed["routes"]] == [
        ("pdf", world.cleared, "streams.generate_invoice_pdf", "default"),
        ("notify", world.violations, "streams.notify_compliance", "interactive"),
    ]
    assert listed["routes"][1]["where"] == {"severity": ["ERROR"]}


def bytes_headers(message: Message) -> dict[str, bytes]:
    """A record's headers by name (every header we write has a bytes value)."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {name: value for name, value in pairs if isinstance(value, bytes)}
