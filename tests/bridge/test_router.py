"""Tests for streams.bridge.router: decoding, routing and the errors that decide DLQ versus retry."""

from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from kombu.utils.json import loads as kombu_loads

from streams.bridge.celery_wire import task_id_for
from streams.bridge.router import Router, UnroutableRecordError
from streams.bridge.routes import load_bridge
from streams.catalog import load_catalog
from streams.errors import SchemaError
from streams.records import SchemaUnavailableError, UndecodableRecordError
from streams.schemas.codec import AvroCodec
from streams.schemas.registry_client import RegistryRequestError
from tests.bridge.harness import violation_event

REPO = Path(__file__).resolve().parents[2]
SCHEMA = (REPO / "schemas" / "compliance.violation.avsc").read_text()


class Registry:
    """A schema source that knows id 1, and can be told to fail like the real client does."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def schema_by_id(self, schema_id: int) -> str:
        self.calls += 1
        if self.down:
            raise SchemaError("cannot reach the schema registry at http://r: connection refused")
        if schema_id != 1:
            raise RegistryRequestError("http://r", f"GET /schemas/ids/{schema_id}", 404, 40403, "Schema not found")
        return SCHEMA


@pytest.fixture
def router(tmp_path: Path) -> tuple[Router, Registry]:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    (tmp_path / "topics.yaml").write_text("""\
version: 1
defaults: {partitions: 1, replication_factor: 1}
topics:
  compliance.violation: {owner: c, key: invoice_id, schema: schemas/compliance.violation.avsc,
                         pii_fields: [tenant_id]}
bridge:
  tasks: [notify, audit]
  failed_topic: compliance.violation
  routes:
    errors:
      topic: compliance.violation
      where: {severity: ERROR}
      task: notify
      queue: interactive
      args: {violation_id: violation_id, tenant: tenant_id, origin: source_event.topic}
    everything:
      event_type: compliance.violation
      task: audit
      queue: batch
      priority: 9
""")
    catalog = load_catalog(tmp_path / "topics.yaml")
    registry = Registry()
    return Router(load_bridge(catalog), catalog, registry, origin="test"), registry


def encode(event: dict[str, Any]) -> bytes:
    return AvroCodec(SCHEMA, 1).encode(event)


def decoded_message(payload: bytes) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(payload)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def test_an_event_becomes_one_task_per_matching_route(router: tuple[Router, Registry]) -> None:
    route, registry = router
    event = violation_event(1, "ERROR")
    headers: list[tuple[str, str | bytes | None]] = [
        ("ce_id", b"ev-1"),
        ("ce_type", b"compliance.violation"),
        ("ce_tenantid", b"acme"),
    ]
    tasks = route.route("compliance.violation", 0, 42, encode(event), headers)
    assert [(t.route, t.queue, t.slot) for t in tasks] == [("errors", "interactive", 0), ("everything", "batch", 3)]
    first, second = (decoded_message(t.payload) for t in tasks)
    assert first["headers"]["id"] == task_id_for("ev-1", "notify")
    assert first["body"][1] == {"violation_id": event["violation_id"], "tenant": "acme", "origin": "invoice.created"}
    assert '"tenant":"***"' in first["headers"]["kwargsrepr"]  # tenant_id is a PII field of the topic
    assert (first["headers"]["streams_event_id"], first["headers"]["streams_offset"]) == ("ev-1", 42)
    assert first["headers"]["streams_tenant"] == "acme"
    assert first["headers"]["streams_failed_topic"] == "compliance.violation"
    assert first["headers"]["streams_retry"]["max_attempts"] == 3
    assert set(second["body"][1]) == set(event)  # no args: every field
    warning = route.route("compliance.violation", 0, 43, encode(violation_event(2, "WARNING")), headers)
    assert [t.route for t in warning] == ["everything"]
    other_type = route.route("compliance.violation", 0, 44, encode(event), [("ce_type", b"other")])
    assert [t.route for t in other_type] == ["errors"]
    assert registry.calls == 1  # the schema of an id is fetched once


def test_a_record_without_ce_id_gets_a_task_id_from_its_coordinates(router: tuple[Router, Registry]) -> None:
    route, _ = router
    (task, _) = route.route("compliance.violation", 2, 9, encode(violation_event(3, "ERROR")), None)
    assert decoded_message(task.payload)["headers"]["id"] == task_id_for("compliance.violation/2/9", "notify")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "no value"),
        (b"\x00\x00", "shorter than the 5-byte Confluent header"),
        (b"\x09" + bytes(10), "unknown magic byte 9"),
        (b"\x00" + struct.pack(">I", 77) + b"\x00", "schema id 77 is unknown to the registry"),
        (b"\x00" + struct.pack(">I", 1) + b"\x02", "cannot decode Avro datum"),
    ],
)
def test_undecodable_records_are_dead_letters(
    router: tuple[Router, Registry], value: bytes | None, message: str
) -> None:
    route, _ = router
    with pytest.raises(UndecodableRecordError, match=message):
        route.route("compliance.violation", 0, 1, value, [])


def test_a_registry_outage_is_retried_not_dead_lettered(router: tuple[Router, Registry]) -> None:
    route, registry = router
    registry.down = True
    with pytest.raises(SchemaUnavailableError, match="cannot reach the schema registry"):
        route.route("compliance.violation", 0, 1, encode(violation_event(1)), [])
    registry.down = False
    assert route.route("compliance.violation", 0, 1, encode(violation_event(1)), [])


def test_unroutable_records(router: tuple[Router, Registry]) -> None:
    route, _ = router
    with pytest.raises(UnroutableRecordError, match=r"no route for topic 'other\.topic'"):
        route.route("other.topic", 0, 1, encode(violation_event(1)), [])


def test_flat_arguments_come_back_typed_and_a_missing_field_is_unroutable(tmp_path: Path) -> None:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    (tmp_path / "topics.yaml").write_text("""\
version: 1
defaults: {partitions: 1, replication_factor: 1}
topics:
  compliance.violation: {owner: c, key: invoice_id, schema: schemas/compliance.violation.avsc}
bridge:
  tasks: [notify]
  routes:
    flat:
      topic: compliance.violation
      task: notify
      queue: default
      args: {violation: violation_id, tenant: tenant_id, at: detected_at}
""")
    catalog = load_catalog(tmp_path / "topics.yaml")
    old = json.loads(SCHEMA)
    old["fields"] = [f for f in old["fields"] if f["name"] != "tenant_id"]  # an older writer without the field

    class TwoSchemas(Registry):
        def schema_by_id(self, schema_id: int) -> str:
            return json.dumps(old) if schema_id == 2 else super().schema_by_id(schema_id)

    router = Router(load_bridge(catalog), catalog, TwoSchemas(), origin="test")
    event = violation_event(4, "WARNING")
    (task,) = router.route("compliance.violation", 0, 1, encode(event), [("ce_id", b"ev-4")])
    args, kwargs, _ = kombu_loads(base64.b64decode(json.loads(task.payload)["body"]))
    assert (args, kwargs) == ([], {"violation": event["violation_id"], "tenant": "acme", "at": event["detected_at"]})
    assert (task.task_id, task.effect) == (task_id_for("ev-4", "notify"), "notify:ev-4")
    written_by_old = AvroCodec(old, 2).encode({k: v for k, v in event.items() if k != "tenant_id"})
    with pytest.raises(
        UnroutableRecordError, match="route 'flat': the event has no field 'tenant_id' for argument 'tenant'"
    ):
        router.route("compliance.violation", 0, 2, written_by_old, [])
