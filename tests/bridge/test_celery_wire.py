"""Tests for streams.bridge.celery_wire: our messages read back the way kombu and Celery read theirs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from kombu.utils.json import loads as kombu_loads

from streams.bridge.celery_wire import (
    PRIORITY_STEPS,
    TaskTemplate,
    priority_slot,
    queue_keys,
    task_id_for,
)


def test_queue_keys_and_priority_slots_follow_kombus_redis_layout() -> None:
    assert queue_keys("default") == ("default", "default\x06\x163", "default\x06\x166", "default\x06\x169")
    assert [priority_slot(p) for p in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert priority_slot(-4) == 0
    assert priority_slot(42) == len(PRIORITY_STEPS) - 1


def test_task_ids_are_deterministic_per_event_and_task() -> None:
    first = task_id_for("event-1", "billing.pdf")
    assert first == task_id_for("event-1", "billing.pdf")
    assert first != task_id_for("event-2", "billing.pdf")
    assert first != task_id_for("event-1", "billing.mail")
    assert first[14] == "5"  # a UUID version 5


def test_envelope_matches_apply_async_and_decodes_with_kombu() -> None:
    template = TaskTemplate(
        "billing.pdf",
        "interactive",
        priority=4,
        countdown_ms=2_000,
        extra_headers={"route": "pdf"},
        redact=frozenset({"buyer"}),
        origin="test@host",
    )
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    kwargs = {"total": Decimal("10.50"), "at": now, "buyer": "Gulf Retail", "raw": b"\xff\x00", "n": 3}
    envelope = json.loads(template.encode("tid-1", kwargs, {"event_id": "e-1", "offset": 7}, now=now))
    assert set(envelope) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert (envelope["content-type"], envelope["content-encoding"]) == ("application/json", "utf-8")
    headers, properties = envelope["headers"], envelope["properties"]
    assert headers["task"] == "billing.pdf"
    assert headers["id"] == headers["root_id"] == properties["correlation_id"] == "tid-1"
    assert headers["eta"] == (now + timedelta(seconds=2)).isoformat()
    assert (headers["lang"], headers["retries"], headers["argsrepr"], headers["origin"]) == ("py", 0, "()", "test@host")
    assert '"buyer":"***"' in headers["kwargsrepr"]
    assert "Gulf Retail" not in headers["kwargsrepr"]
    assert (headers["streams_event_id"], headers["streams_offset"], headers["streams_route"]) == ("e-1", 7, "pdf")
    assert properties["delivery_info"] == {"exchange": "", "routing_key": "interactive"}
    assert (properties["priority"], properties["body_encoding"], properties["delivery_mode"]) == (4, "base64", 2)
    args, decoded, embed = kombu_loads(base64.b64decode(envelope["body"]))
    assert args == []
    assert decoded == kwargs  # Decimal, datetime and bytes come back as themselves
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_every_message_gets_its_own_delivery_tag_and_no_eta_without_countdown() -> None:
    template = TaskTemplate("t", "default")
    first, second = (json.loads(template.encode("id", {}, {})) for _ in range(2))
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
    assert first["headers"]["eta"] is None
    assert json.loads(json.loads(template.encode("id", {"a": 1, "b": [2]}, {}))["headers"]["kwargsrepr"]) == {
        "a": 1,
        "b": [2],
    }  # the arguments' JSON, cut from the body
    long_value = {"text": "x" * 5000}
    assert len(json.loads(template.encode("id", long_value, {}))["headers"]["kwargsrepr"]) == 1024


def test_time_limits_travel_in_celerys_timelimit_header_hard_first() -> None:
    limited = TaskTemplate("billing.pdf", "default", time_limits_ms=(30_000, 60_500), origin="test@host")
    assert json.loads(limited.encode("tid-1", {}, {}))["headers"]["timelimit"] == [60.5, 30.0]
    unlimited = TaskTemplate("billing.pdf", "default", origin="test@host")
    assert json.loads(unlimited.encode("tid-2", {}, {}))["headers"]["timelimit"] == [None, None]
