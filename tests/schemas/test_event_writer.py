"""EventEncoder and the native EventWriter behind it: CloudEvents headers, keys, ids and precise errors.

No broker or registry: the registry is a fake of our RegistryClient's lookup; everything here runs
before anything would be produced.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from streams._avro_native import Encoder, EnvelopeError, EventWriter
from streams.catalog import load_catalog
from streams.demo.samples import invoice
from streams.errors import PublishError
from streams.publish import TENANT, TRACEPARENT, EventEncoder
from streams.schemas.codec import AvroCodec, EncodeError
from streams.schemas.registry_client import RegistryClient

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "invoice.created"
NAMES = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type", "ce_tenantid", "ce_traceparent"]


class FakeRegistry:
    """Every schema is registered, with id 7."""

    def lookup(self, subject: str, schema_str: str) -> int:
        assert subject.endswith("-value")
        assert schema_str.startswith("{")
        return 7

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def encoder() -> EventEncoder:
    registry = cast("RegistryClient", FakeRegistry())
    return EventEncoder(load_catalog(ROOT / "topics.yaml"), registry, source="billing-api")


def test_headers_key_and_value(encoder: EventEncoder) -> None:
    event = invoice(1, tenant="acme")
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    record = encoder.encode(TOPIC, event)
    after = datetime.now(UTC) + timedelta(milliseconds=1)

    assert [name for name, _ in record.headers] == NAMES
    headers = dict(record.headers)
    assert all(isinstance(value, bytes) for value in headers.values())
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_source"] == b"billing-api"
    assert headers["ce_type"] == TOPIC.encode()
    assert headers["content-type"] == b"application/avro"
    assert headers["ce_tenantid"] == b"acme"
    assert uuid.UUID(record.event_id).version == 4
    assert str(uuid.UUID(record.event_id)) == record.event_id
    assert headers["ce_id"] == record.event_id.encode()
    assert TRACEPARENT.match(headers["ce_traceparent"].decode())
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", headers["ce_time"])
    stamped = datetime.fromisoformat(headers["ce_time"].decode())
    assert before <= stamped <= after
    assert record.key == b"acme"  # the catalog's key field for invoice.created is tenant_id
    codec = encoder.topic(TOPIC).codec
    assert record.value == codec.encode(event)
    assert record.value[:5] == b"\x00\x00\x00\x00\x07"
    assert codec.decode(record.value)["invoice_id"] == event["invoice_id"]


def test_build_and_encode_agree(encoder: EventEncoder) -> None:
    event = invoice(2)
    fixed: dict[str, Any] = {
        "event_id": "e-1",
        "traceparent": f"00-{'1' * 32}-{'2' * 16}-01",
        "time_": datetime(2026, 11, 1, 11, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=3))),
    }
    record = encoder.encode(TOPIC, event, **fixed)
    assert encoder.build(TOPIC, event, **fixed) == (record.key, record.value, record.headers, "e-1")
    assert dict(record.headers)["ce_time"] == b"2026-11-01T08:00:00.123Z"


def test_options_override_what_is_derived(encoder: EventEncoder) -> None:
    event = invoice(3, tenant="globex")
    record = encoder.encode(
        TOPIC,
        event,
        key=b"k-1",
        tenant="globex",
        event_type="invoice.imported",
        event_id="fixed-id",
        traceparent=f"00-{'a' * 32}-{'b' * 16}-01",
        extra_headers={"x-origin": "batch", "x-raw": b"\x00\x01"},
    )
    headers = dict(record.headers)
    assert record.key == b"k-1"
    assert record.event_id == "fixed-id"
    assert headers["ce_id"] == b"fixed-id"
    assert headers["ce_type"] == b"invoice.imported"
    assert headers["ce_tenantid"] == b"globex"
    assert headers["ce_traceparent"] == f"00-{'a' * 32}-{'b' * 16}-01".encode()
    assert record.headers[-2:] == [("x-origin", b"batch"), ("x-raw", b"\x00\x01")]
    assert encoder.encode(TOPIC, event, key="k-2").key == b"k-2"


def test_event_ids_are_distinct_and_differ_in_a_forked_child(encoder: EventEncoder) -> None:
    event = invoice(4)
    ids = {encoder.build(TOPIC, event)[3] for _ in range(20_000)}
    assert len(ids) == 20_000
    traces = {dict(encoder.build(TOPIC, event)[2])["ce_traceparent"] for _ in range(1000)}
    assert len(traces) == 1000

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the generator's state was copied, and must be reseeded
        try:
            os.write(write, "\n".join(encoder.build(TOPIC, event)[3] for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {encoder.build(TOPIC, event)[3] for _ in range(100)}
    assert len(child) == 100
    assert not child & parent


def test_dotted_key_path_and_non_string_key() -> None:
    schema = (
        '{"type": "record", "name": "R", "fields": [{"name": "order", "type": {"type": "record", "name": "O", '
        '"fields": [{"name": "id", "type": "long"}]}}, {"name": "note", "type": ["null", "string"]}]}'
    )
    codec = AvroCodec(schema, 3)
    writer = EventWriter(codec.native_encoder, codec.wire_header, b"src", b"t", ["order", "id"], 1000)
    key, value, _, _ = writer.build({"order": {"id": 42}, "note": None})
    assert key == b"42"
    assert value == codec.encode({"order": {"id": 42}, "note": None})
    unkeyed = EventWriter(Encoder(schema), b"", b"src", b"t", [], 1000)
    key, _, headers, _ = unkeyed.build({"order": {"id": 42}, "note": None})
    assert key is None
    assert [name for name, _ in headers] == [n for n in NAMES if n != "ce_tenantid"]  # no tenant, no header
    assert dict(unkeyed.build({"order": {"id": 1}, "note": None}, tenant="t1")[2])["ce_tenantid"] == b"t1"


# (case, payload change, options, the message the PublishError must contain, an EncodeError cause?)
BAD: list[tuple[str, dict[str, Any], dict[str, Any], str, bool]] = [
    ("wrong type", {"icv": "seven"}, {}, "field 'icv': expected", True),
    ("decimal scale", {"vat_total": Decimal("1.005")}, {}, "more than 2 decimal places", True),
    ("unknown field", {"colour": "red"}, {}, "unknown field", True),
    ("bad tenant in payload", {"tenant_id": "acme corp!"}, {}, "tenant id 'acme corp!' is not valid", False),
    ("bad tenant option", {}, {"tenant": "-x"}, "tenant id '-x' is not valid", False),
    ("tenant not a str", {}, {"tenant": 5}, "tenant id 5 is not valid", False),
    ("tenant mismatch", {}, {"tenant": "globex"}, "tenant 'globex' differs from the payload's tenant_id 'acme'", False),
    ("bad traceparent", {}, {"traceparent": "00-xyz"}, "traceparent '00-xyz' is not W3C", False),
    ("upper-case traceparent", {}, {"traceparent": f"00-{'A' * 32}-{'b' * 16}-01"}, "is not W3C", False),
    ("key of a wrong type", {}, {"key": 5}, "key must be str or bytes, got int", False),
    ("event id of a wrong type", {}, {"event_id": 5}, "event_id must be str, got int", False),
    ("naive event time", {}, {"time_": datetime(2026, 1, 1)}, "has no timezone", False),  # noqa: DTZ001
    ("oversize", {"lines": invoice(1)["lines"] * 20_000}, {}, "over the topic's max.message.bytes 1048576", False),
]


@pytest.mark.parametrize(("case", "change", "options", "message", "encoding"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_precise_publish_error(
    encoder: EventEncoder, case: str, change: dict[str, Any], options: dict[str, Any], message: str, encoding: bool
) -> None:
    event = {**invoice(5, tenant="acme"), **change}
    with pytest.raises(PublishError, match=re.escape(message)) as caught:
        encoder.encode(TOPIC, event, **options)
    assert str(caught.value).startswith(f"topic '{TOPIC}': "), case
    if encoding:
        assert isinstance(caught.value.__cause__, EncodeError)
        assert isinstance(caught.value.__cause__.__cause__, (TypeError, ValueError))
        assert "payload does not match schema InvoiceCreated" in str(caught.value)
    elif "time" not in case:
        assert isinstance(caught.value.__cause__, EnvelopeError)


def test_missing_key_field_is_named() -> None:
    schema = '{"type": "record", "name": "R", "fields": [{"name": "id", "type": ["null", "string"]}]}'
    writer = EventWriter(Encoder(schema), b"", b"src", b"t", ["id"], 1000)
    with pytest.raises(EnvelopeError, match="key field 'id' is missing from the payload"):
        writer.build({"id": None})


def test_payload_must_be_a_mapping(encoder: EventEncoder) -> None:
    with pytest.raises(PublishError, match="payload must be a mapping or a model, got list"):
        encoder.encode(TOPIC, cast("Any", [1, 2]))


@pytest.mark.parametrize(
    "tenant", ["acme", "a", "A.b_c-9", "x" * 64, "", "x" * 65, "-acme", ".a", "a b", "é", "acme\n", "a/b"]
)
def test_tenant_rule_matches_the_documented_pattern(encoder: EventEncoder, tenant: str) -> None:
    event = invoice(6, tenant=tenant)
    if TENANT.fullmatch(tenant):
        assert dict(encoder.encode(TOPIC, event).headers)["ce_tenantid"] == tenant.encode()
    else:
        with pytest.raises(PublishError, match="is not valid"):
            encoder.encode(TOPIC, event)


@pytest.mark.parametrize(
    "trace",
    [
        f"00-{'a' * 32}-{'b' * 16}-01",
        f"00-{'0' * 32}-{'f' * 16}-ff",
        f"01-{'a' * 32}-{'b' * 16}-01",
        f"00-{'a' * 31}-{'b' * 16}-01",
        f"00-{'a' * 32}-{'b' * 16}-01\n",
        f"00-{'a' * 32}_{'b' * 16}-01",
        "",
    ],
)
def test_traceparent_rule_matches_the_documented_pattern(encoder: EventEncoder, trace: str) -> None:
    expected = TRACEPARENT.fullmatch(trace) is not None
    event = invoice(7)
    if expected:
        assert dict(encoder.encode(TOPIC, event, traceparent=trace).headers)["ce_traceparent"] == trace.encode()
    else:
        with pytest.raises(PublishError, match="is not W3C"):
            encoder.encode(TOPIC, event, traceparent=trace)
