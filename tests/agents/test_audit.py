"""The audit chain's entry model, canonical form and entry building (no I/O)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING

from streams.agents.audit import AuditChainWriter, ChainState, PayloadReader, audit_entry
from streams.agents.audit_chain import GENESIS_HASH, ChainEntry, UnreadableEntry, read_jsonl, write_jsonl
from streams.catalog import load_catalog
from streams.demo.samples import user_action, workflow_completed
from streams.errors import ConfigError
from streams.schemas.codec import AvroCodec
from streams.schemas.registry_client import RegistryRequestError
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"e-1"),
    ("ce_type", b"user.action"),
    ("ce_time", b"2026-11-01T08:00:00.123Z"),
    ("ce_tenantid", b"acme"),
    ("ce_traceparent", b"00-x"),
]


class FakeRegistry:
    """Our RegistryClient's schema_by_id, for a fixed set of ids."""

    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas
        self.asked: list[int] = []

    def schema_by_id(self, schema_id: int) -> str:
        self.asked.append(schema_id)
        if schema_id not in self.schemas:
            raise RegistryRequestError("fake", f"GET /schemas/ids/{schema_id}", 404, 40403, "Schema not found")
        return self.schemas[schema_id]


def schema_text(name: str) -> str:
    return (ROOT / "schemas" / f"{name}.avsc").read_text()


def entry(**changes: object) -> ChainEntry:
    fields: dict[str, object] = {
        "sequence": 0,
        "tenant_id": "acme",
        "topic": "user.action",
        "partition": 1,
        "offset": 7,
        "event_id": "e-1",
        "event_type": "user.action",
        "actor": "user-001",
        "occurred_at": 1_793_520_000_123,
        "payload_sha256": "ab" * 32,
        "previous_entry_hash": GENESIS_HASH,
    }
    fields.update(changes)
    return ChainEntry(**fields).sealed()  # type: ignore[arg-type]


def test_canonical_form_is_sorted_compact_utf8_json_of_every_field_but_the_hash() -> None:
    sealed = entry()
    expected = (
        '{"actor":"user-001","event_id":"e-1","event_type":"user.action","occurred_at":1793520000123,'
        f'"payload_sha256":"{"ab" * 32}","previous_entry_hash":"{GENESIS_HASH}","sequence":0,'
        '"source":{"offset":7,"partition":1,"topic":"user.action"},"tenant_id":"acme"}'
    ).encode()
    assert sealed.canonical_bytes() == expected
    assert sealed.entry_hash == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("text", ['quote " and \\ backslash', "ünïcödé ✓ 中文", "tab\tnewline\ncontrol\x01", ""])
def test_hand_written_canonical_form_equals_json_dumps(text: str) -> None:
    for sealed in (entry(actor=text, event_id=text, tenant_id=text), entry(actor=None, topic=text)):
        reference = json.dumps(sealed.body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert sealed.canonical_bytes() == reference.encode()


def test_any_changed_field_changes_the_hash() -> None:
    base = entry()
    changes = {
        "sequence": 1,
        "tenant_id": "other",
        "topic": "x.y",
        "partition": 2,
        "offset": 8,
        "event_id": "e-2",
        "event_type": "z",
        "actor": None,
        "occurred_at": 1,
        "payload_sha256": "cd" * 32,
        "previous_entry_hash": "f" * 64,
    }
    hashes = {entry(**{name: value}).entry_hash for name, value in changes.items()}
    assert base.entry_hash not in hashes
    assert len(hashes) == len(changes)


def test_json_and_avro_round_trips_keep_the_entry() -> None:
    sealed = entry()
    assert ChainEntry.from_json(json.loads(json.dumps(sealed.to_json()))) == sealed
    codec = AvroCodec(schema_text("audit.trail"), 3)
    decoded = codec.decode(codec.encode(sealed.to_json()))
    assert decoded["occurred_at"] == datetime(2026, 11, 1, 8, 0, 0, 123_000, tzinfo=UTC)
    assert ChainEntry.from_json(decoded) == sealed


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sequence", "5", "field 'sequence' must be an integer"),
        ("sequence", True, "field 'sequence' must be an integer"),
        ("actor", 5, "field 'actor' must be a string or null"),
        ("source", None, "field 'source' must be an object"),
        ("entry_hash", None, "field 'entry_hash' must be a string"),
    ],
)
def test_from_json_names_the_wrong_field(field: str, value: object, message: str) -> None:
    record = {**entry().to_json(), field: value}
    with pytest.raises(TypeError, match=message):
        ChainEntry.from_json(record)


def test_jsonl_round_trip_keeps_positions_of_unreadable_records(tmp_path: Path) -> None:
    entries: list[ChainEntry | UnreadableEntry] = [entry(), UnreadableEntry("cannot decode"), entry(sequence=1)]
    path = tmp_path / "chain.jsonl"
    assert write_jsonl(path, entries) == 3
    path.write_text(path.read_text() + "[1, 2]\nnot json\n")
    back = read_jsonl(path)
    assert back[0] == entries[0]
    assert back[2] == entries[2]
    assert isinstance(back[1], UnreadableEntry)
    assert f"{path}:2: cannot decode" in back[1].reason
    assert isinstance(back[3], UnreadableEntry)
    assert "expected a JSON object" in back[3].reason
    assert isinstance(back[4], UnreadableEntry)
    assert "not JSON" in back[4].reason


def test_entry_takes_cloudevents_headers_and_the_actor_from_the_payload() -> None:
    action = user_action(1)
    value = AvroCodec(schema_text("user.action"), 11).encode(action)
    registry = FakeRegistry({11: schema_text("user.action")})
    made = audit_entry(
        "t.actions", 2, 40, value, HEADERS, 5, sequence=9, previous_hash="a" * 64, payloads=PayloadReader(registry)
    )
    assert (made.event_id, made.event_type, made.tenant_id) == ("e-1", "user.action", "acme")
    assert made.actor == action["user_id"]
    assert made.occurred_at == 1_793_520_000_123
    assert made.payload_sha256 == hashlib.sha256(value).hexdigest()
    assert (made.sequence, made.previous_entry_hash, made.topic, made.partition, made.offset) == (
        9,
        "a" * 64,
        "t.actions",
        2,
        40,
    )
    assert made.entry_hash == made.computed_hash()


def test_entry_prefers_the_actor_field_and_skips_payloads_without_one() -> None:
    workflow = workflow_completed(3)
    registry = FakeRegistry({1: schema_text("workflow.completed"), 2: schema_text("invoice.created")})
    payloads = PayloadReader(registry)
    value = AvroCodec(schema_text("workflow.completed"), 1).encode(workflow)
    assert payloads.fields(value, need_tenant=False) == (workflow["actor"], "acme")
    # invoice.created has neither actor nor user_id: with the tenant in a header it is not decoded at all
    assert payloads.fields(b"\x00\x00\x00\x00\x02" + b"\xff" * 10, need_tenant=False) == (None, None)


def test_record_that_cannot_be_decoded_is_still_an_entry_with_fallbacks() -> None:
    registry = FakeRegistry({11: schema_text("user.action")})
    payloads = PayloadReader(registry)
    for value in (b"random bytes", b"\x00\x00\x00\x00\x0b\xff\xff", b"\x00\x00\x00\x00\x63abc", None):
        made = audit_entry(
            "t.actions", 0, 3, value, None, 1_700_000_000_000, sequence=0, previous_hash=GENESIS_HASH, payloads=payloads
        )
        assert (made.event_id, made.event_type, made.actor, made.tenant_id) == ("t.actions/0/3", "t.actions", None, "")
        assert made.occurred_at == 1_700_000_000_000
        assert made.payload_sha256 == hashlib.sha256(value or b"").hexdigest()
    assert registry.asked == [11, 99]  # each id asked once; an unknown id is remembered


def test_tenant_comes_from_the_payload_when_the_header_is_missing() -> None:
    action = user_action(2, tenant="globex")
    value = AvroCodec(schema_text("user.action"), 11).encode(action)
    payloads = PayloadReader(FakeRegistry({11: schema_text("user.action")}))
    made = audit_entry(
        "t.actions",
        0,
        0,
        value,
        [("ce_time", b"not a time")],
        42,
        sequence=0,
        previous_hash=GENESIS_HASH,
        payloads=payloads,
    )
    assert made.tenant_id == "globex"
    assert made.occurred_at == 42  # an unparsable ce_time falls back to the record timestamp


def test_chain_state_resumes_after_the_highest_chained_offset() -> None:
    state = ChainState()
    assert state.resume_offset("a.b", 0) == OFFSET_BEGINNING
    first = entry(topic="a.b", partition=0, offset=4)
    second = entry(sequence=1, topic="a.b", partition=0, offset=5, previous_entry_hash=first.entry_hash)
    state.apply(first)
    state.apply(second)
    assert (state.next_sequence, state.tip_hash) == (2, second.entry_hash)
    assert state.resume_offset("a.b", 0) == 6
    assert state.resume_offset("a.b", 1) == OFFSET_BEGINNING


CATALOG = """
version: 1
defaults: {partitions: 2, replication_factor: 1, dlq: true}
topics:
  shop.order:    {owner: t, audit: true, legal_retention: 7d, archive: true}
  shop.refund:   {owner: t, audit: true, legal_retention: 7d, archive: true}
  shop.metrics:  {owner: t}
  shop.trail:    {owner: t, partitions: 1, dlq: false, audit: AUDIT, legal_retention: 7d, archive: true}
"""


def test_writer_sources_are_the_audited_topics_and_the_chain_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(CATALOG.replace("AUDIT", "false"))
    writer = AuditChainWriter(Settings(), load_catalog(path), chain_topic="shop.trail")
    assert writer.sources == ("shop.order", "shop.refund")
    assert not writer.leading
    path.write_text(CATALOG.replace("AUDIT", "true"))
    with pytest.raises(ConfigError, match=r"'shop\.trail' must not be `audit: true`"):
        AuditChainWriter(Settings(), load_catalog(path), chain_topic="shop.trail")
