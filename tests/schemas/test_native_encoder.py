"""streams._avro_native.Encoder: byte-identical to fastavro.schemaless_writer, and stricter.

Every encoding here is compared with fastavro's on the same schema and read back with fastavro;
the error cases check the field path each message starts with.
"""

from __future__ import annotations

import enum
import io
import json
import random
import re
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streams._avro_native import Encoder
from streams.demo.samples import invoice
from tests.schemas.avro_builders import SCHEMAS, decimal_type, field, fixed_decimal_type, load_schema, record

SEED = 20_261_101
ROUNDS = 200


def fastavro_encode(schema: Any, datum: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), datum)
    return buffer.getvalue()


def fastavro_decode(schema: Any, data: bytes) -> Any:
    return schemaless_reader(io.BytesIO(data), parse_schema(schema), None)


def same_as_fastavro(schema: Any, datum: Any, encoder: Encoder | None = None) -> bytes:
    """Encode natively, assert fastavro writes the same bytes, return them."""
    native = (encoder or Encoder(json.dumps(schema))).encode(datum)
    expected = fastavro_encode(schema, datum)
    assert native == expected, f"{datum!r}: native {native.hex()} != fastavro {expected.hex()}"
    return native


def raises(kind: type[Exception], message: str) -> Any:
    """pytest.raises for exactly this message."""
    return pytest.raises(kind, match=f"^{re.escape(message)}$")


# ---------------------------------------------------------------------------------------------------
# The real schemas


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.avsc")), ids=lambda p: p.stem)
def test_every_catalog_schema_compiles(path: Path) -> None:
    Encoder(path.read_text())


@pytest.mark.parametrize("lines", [0, 1, 3, 7])
def test_invoice_created_samples_match_fastavro_and_read_back(lines: int) -> None:
    schema = load_schema("invoice.created")
    encoder = Encoder(json.dumps(schema))
    for seq in range(25):
        datum = invoice(seq, lines=lines, tenant=f"tenant{seq % 3}")
        data = same_as_fastavro(schema, datum, encoder)
        assert fastavro_decode(schema, data) == datum


def test_invoice_created_optional_parts_and_defaults() -> None:
    schema = load_schema("invoice.created")
    encoder = Encoder(json.dumps(schema))
    datum = invoice(3, lines=2)
    datum["buyer"] = None
    datum["seller"]["address"] = None
    same_as_fastavro(schema, datum, encoder)
    del datum["buyer"]  # default null
    del datum["seller"]["cr_number"]
    data = same_as_fastavro(schema, datum, encoder)
    decoded = fastavro_decode(schema, data)
    assert decoded["buyer"] is None
    assert decoded["seller"]["cr_number"] is None


def test_encode_into_prepends_the_prefix() -> None:
    schema_json = (SCHEMAS / "invoice.created.avsc").read_text()
    encoder = Encoder(schema_json)
    datum = invoice(1, lines=3)
    header = struct.pack(">bI", 0, 42)
    assert encoder.encode_into(datum, header) == header + encoder.encode(datum)
    assert encoder.encode_into(datum, b"") == encoder.encode(datum)


def test_invoice_cleared() -> None:
    schema = load_schema("invoice.cleared")
    rng = random.Random(SEED)
    encoder = Encoder(json.dumps(schema))
    for _ in range(50):
        total = Decimal(rng.randrange(-(10**17), 10**17)).scaleb(-2)
        datum = {
            "invoice_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "tenant_id": "acme",
            "invoice_number": f"INV-{rng.randrange(10**8):08d}",
            "seller_vat_number": "300000000000003",
            "invoice_hash": "q" * 44,
            "qr_payload": "AQ" * rng.randrange(0, 300),
            "tax_inclusive_total": total,
            "vat_total": (total * Decimal("0.15")).quantize(Decimal("0.01")),
            "currency": "SAR",
            "cleared_at": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(milliseconds=rng.randrange(10**10)),
            "source_event_id": str(uuid.uuid4()),
        }
        assert fastavro_decode(schema, same_as_fastavro(schema, datum, encoder)) == datum


def test_audit_trail_and_compliance_violation() -> None:
    audit = load_schema("audit.trail")
    entry = {
        "tenant_id": "acme",
        "sequence": 2**40 + 3,
        "source": {"topic": "invoice.created", "partition": 5, "offset": 123_456_789_012},
        "event_id": "e-1",
        "event_type": "invoice.created",
        "actor": None,
        "occurred_at": datetime(2026, 11, 1, 8, 0, 0, 123_000, tzinfo=UTC),
        "payload_sha256": "ab" * 32,
        "previous_entry_hash": "0" * 64,
        "entry_hash": "cd" * 32,
        "checkpoint": None,
    }
    assert fastavro_decode(audit, same_as_fastavro(audit, entry)) == entry
    same_as_fastavro(audit, {**entry, "actor": "user:\u00e9l\u00e8ve \U0001f600"})
    carrying = {**entry, "checkpoint": '{"format":"streams-audit-checkpoint/1","sequence":3}'}
    assert fastavro_decode(audit, same_as_fastavro(audit, carrying)) == carrying

    violation = load_schema("compliance.violation")
    for severity in ("ERROR", "WARNING"):
        datum = {
            "violation_id": "v-1",
            "invoice_id": "i-1",
            "tenant_id": "acme",
            "rule_code": "BR-KSA-39",
            "severity": severity,
            "message": "seller VAT number must have 15 digits",
            "field_path": "seller.vat_number" if severity == "ERROR" else None,
            "source_event": {"event_id": "e", "topic": "invoice.created", "partition": 0, "offset": 0},
            "detected_at": datetime(2026, 11, 1, 12, tzinfo=timezone(timedelta(hours=3))),
        }
        same_as_fastavro(violation, datum)


def test_user_action_and_workflow_completed() -> None:
    action = load_schema("user.action")
    datum: dict[str, Any] = {
        "user_id": "u-1",
        "tenant_id": "acme",
        "action": "invoice.approve",
        "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    }
    same_as_fastavro(action, datum)  # resource, ip_address, user_agent: default null
    same_as_fastavro(action, {**datum, "resource": "inv/1", "ip_address": "10.0.0.1", "user_agent": "curl/8"})

    workflow = load_schema("workflow.completed")
    done: dict[str, Any] = {
        "workflow_id": "w-1",
        "tenant_id": "acme",
        "workflow_type": "invoice-approval",
        "status": "FAILED",
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "completed_at": 1_767_225_600_000,
        "actor": None,
        "summary": "rejected: totals do not add up",
    }
    same_as_fastavro(workflow, done)  # attributes: default {}
    same_as_fastavro(workflow, {**done, "attributes": {}})
    same_as_fastavro(workflow, {**done, "attributes": {"approver": "ops", "reason": "\u062e\u0637\u0623"}})


# ---------------------------------------------------------------------------------------------------
# Every type, with seeded random values


class Colour(enum.StrEnum):
    RED = "RED"
    GREEN = "GREEN"


def rand_text(rng: random.Random) -> str:
    # ASCII, Latin-1, Arabic, CJK and astral-plane characters; no lone surrogates.
    ranges = [(0x20, 0x7E), (0xA0, 0xFF), (0x600, 0x6FF), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F)]
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randrange(0, 40)))


def rand_long(rng: random.Random) -> int:
    edges = [0, 1, -1, 63, -64, 64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
    return rng.choice(edges) if rng.random() < 0.3 else rng.randint(-(2**63), 2**63 - 1)


def rand_int(rng: random.Random) -> int:
    return rng.choice([0, -1, 2**31 - 1, -(2**31)]) if rng.random() < 0.2 else rng.randint(-(2**31), 2**31 - 1)


def rand_double(rng: random.Random) -> float | int:
    roll = rng.random()
    if roll < 0.2:
        return rng.choice([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324, 1.7976931348623157e308])
    if roll < 0.4:
        bits: float = struct.unpack("<d", rng.randbytes(8))[0]  # any bit pattern, NaN payloads included
        return bits
    if roll < 0.5:
        return rng.randint(-(2**70), 2**70)  # ints are taken and rounded like float(int)
    return rng.uniform(-1e12, 1e12)


def rand_decimal(rng: random.Random, precision: int, scale: int) -> Decimal:
    """A Decimal fastavro accepts: at most `scale` places and at most `precision` digits once scaled."""
    places = rng.randint(max(0, scale - precision + 1), scale)
    room = precision - (scale - places)  # digits left for the value itself, at least 1
    specials = [n for n in (0, 1, -1, 127, -128, 128, -129, 255, -256) if len(str(abs(n))) <= room]
    if rng.random() < 0.1:
        unscaled = rng.choice(specials)
    else:
        digits = rng.randint(1, room)
        unscaled = rng.randint(-(10**digits - 1), 10**digits - 1)
    value = Decimal(unscaled).scaleb(-places)
    # normalize() drops trailing zeros and gives exponent notation, e.g. 1E+2 for 100.
    return value.normalize() if rng.random() < 0.2 else value


def rand_aware(rng: random.Random) -> datetime:
    offset = timezone(timedelta(minutes=rng.randint(-23 * 60, 23 * 60)))
    moment = datetime(
        rng.randint(1, 9998),
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
        rng.randint(0, 999_999),
        tzinfo=offset,
    )
    return moment if rng.random() < 0.7 else moment.astimezone(UTC)


def rand_naive(rng: random.Random) -> datetime:
    return rand_aware(rng).replace(tzinfo=None)


def rand_date(rng: random.Random) -> date | datetime | int | str:
    day = date(1, 1, 1) + timedelta(days=rng.randrange(3_652_058))
    forms: list[date | datetime | int | str] = [day, day.isoformat(), day.toordinal() - 719_163, rand_aware(rng)]
    return rng.choice(forms)


def rand_time(rng: random.Random) -> time:
    return time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999))


ENUM = {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}
POINT = record("Point", field("x", "long"), field("y", "long"))

CASES: list[tuple[str, Any, Callable[[random.Random], Any]]] = [
    ("null", "null", lambda _: None),
    ("boolean", "boolean", lambda rng: rng.random() < 0.5),
    ("int", "int", rand_int),
    ("long", "long", rand_long),
    ("float", "float", lambda rng: rng.choice([rng.uniform(-3e38, 3e38), rng.randint(-(2**40), 2**40), 1e300, 0.1])),
    ("double", "double", rand_double),
    ("string", "string", rand_text),
    ("bytes", "bytes", lambda rng: rng.randbytes(rng.randrange(0, 300))),
    ("fixed", {"type": "fixed", "name": "F8", "size": 8}, lambda rng: rng.randbytes(8)),
    ("fixed0", {"type": "fixed", "name": "F0", "size": 0}, lambda _: b""),
    ("enum", ENUM, lambda rng: rng.choice(["RED", "GREEN", "BLUE", Colour.RED, Colour.GREEN])),
    (
        "uuid",
        {"type": "string", "logicalType": "uuid"},
        lambda rng: rng.choice([uuid.UUID(int=rng.getrandbits(128)), str(uuid.UUID(int=rng.getrandbits(128)))]),
    ),
    ("decimal(18,2)", decimal_type(18, 2), lambda rng: rand_decimal(rng, 18, 2)),
    ("decimal(5,2)", decimal_type(5, 2), lambda rng: rand_decimal(rng, 5, 2)),
    ("decimal(38,0)", decimal_type(38, 0), lambda rng: rand_decimal(rng, 38, 0)),
    ("decimal(38,38)", decimal_type(38, 38), lambda rng: rand_decimal(rng, 38, 38)),
    ("decimal(60,10) beyond i128", decimal_type(60, 10), lambda rng: rand_decimal(rng, 60, 10)),
    ("fixed decimal(1 byte)", fixed_decimal_type("D1", 1, 2, 1), lambda rng: rand_decimal(rng, 2, 1)),
    ("fixed decimal(8 bytes)", fixed_decimal_type("D8", 8, 18, 4), lambda rng: rand_decimal(rng, 18, 4)),
    ("fixed decimal(20 bytes)", fixed_decimal_type("D20", 20, 47, 6), lambda rng: rand_decimal(rng, 47, 6)),
    (
        "timestamp-millis",
        {"type": "long", "logicalType": "timestamp-millis"},
        lambda rng: rand_aware(rng) if rng.random() < 0.8 else rand_long(rng),
    ),
    (
        "timestamp-micros",
        {"type": "long", "logicalType": "timestamp-micros"},
        lambda rng: rand_aware(rng) if rng.random() < 0.8 else rand_long(rng),
    ),
    (
        "local-timestamp-millis",
        {"type": "long", "logicalType": "local-timestamp-millis"},
        lambda rng: rng.choice([rand_naive(rng), rand_aware(rng), rand_long(rng)]),
    ),
    (
        "local-timestamp-micros",
        {"type": "long", "logicalType": "local-timestamp-micros"},
        lambda rng: rng.choice([rand_naive(rng), rand_aware(rng), rand_long(rng)]),
    ),
    ("date", {"type": "int", "logicalType": "date"}, rand_date),
    (
        "time-millis",
        {"type": "int", "logicalType": "time-millis"},
        lambda rng: rand_time(rng) if rng.random() < 0.8 else rng.randrange(86_400_000),
    ),
    (
        "time-micros",
        {"type": "long", "logicalType": "time-micros"},
        lambda rng: rand_time(rng) if rng.random() < 0.8 else rng.randrange(86_400_000_000),
    ),
    (
        "array of long",
        {"type": "array", "items": "long"},
        lambda rng: [rand_long(rng) for _ in range(rng.choice([0, 1, 5, 70]))],
    ),
    ("array as tuple", {"type": "array", "items": "string"}, lambda rng: tuple(rand_text(rng) for _ in range(3))),
    (
        "array of records",
        {"type": "array", "items": POINT},
        lambda rng: [{"x": rand_long(rng), "y": rand_long(rng)} for _ in range(rng.randrange(0, 4))],
    ),
    (
        "map of decimal",
        {"type": "map", "values": decimal_type(9, 3)},
        lambda rng: {rand_text(rng): rand_decimal(rng, 9, 3) for _ in range(rng.choice([0, 1, 4]))},
    ),
    ("nullable string", ["null", "string"], lambda rng: rng.choice([None, rand_text(rng)])),
    ("string then null", ["string", "null"], lambda rng: rng.choice([None, rand_text(rng)])),
    ("nullable record", ["null", POINT], lambda rng: rng.choice([None, {"x": 1, "y": rand_long(rng)}])),
    (
        "wide union",
        ["null", "boolean", "int", "long", "double", "string", "bytes"],
        lambda rng: rng.choice([None, True, rand_int(rng), rand_long(rng), rand_double(rng), rand_text(rng), b"\x00"]),
    ),
    ("int before double", ["double", "long"], lambda rng: rng.choice([rand_long(rng), rand_double(rng)])),
    ("float gives way to double", ["float", "string", "double"], lambda rng: rng.choice([1.5, 7, "x"])),
    ("enum before string", [ENUM, "string"], lambda rng: rng.choice(["RED", "PURPLE", Colour.GREEN])),
    ("string before enum", ["string", ENUM], lambda rng: rng.choice(["RED", "PURPLE"])),
    (
        "logical types in a union",
        ["null", decimal_type(10, 2), {"type": "long", "logicalType": "timestamp-millis"}, "string"],
        lambda rng: rng.choice([None, rand_decimal(rng, 10, 2), rand_aware(rng), rand_text(rng), rand_long(rng)]),
    ),
    (
        "array of unions",
        {"type": "array", "items": ["null", "long", POINT]},
        lambda rng: [rng.choice([None, rand_long(rng), {"x": 0, "y": 1}]) for _ in range(rng.randrange(0, 6))],
    ),
    (
        "map of nullable arrays",
        {"type": "map", "values": ["null", {"type": "array", "items": "int"}]},
        lambda rng: {"a": None, "b": [rand_int(rng)], "c": []},
    ),
]


@pytest.mark.parametrize(("avro_type", "make"), [(t, m) for _, t, m in CASES], ids=[name for name, _, _ in CASES])
def test_random_values_match_fastavro(avro_type: Any, make: Callable[[random.Random], Any]) -> None:
    rng = random.Random(SEED)
    schema = record("Holder", field("value", avro_type))
    root_encoder = Encoder(json.dumps(avro_type))
    record_encoder = Encoder(json.dumps(schema))
    for _ in range(ROUNDS):
        value = make(rng)
        same_as_fastavro(avro_type, value, root_encoder)
        same_as_fastavro(schema, {"value": value}, record_encoder)


def test_decimals_read_back_exactly() -> None:
    rng = random.Random(SEED)
    for precision, scale in [(18, 2), (38, 10), (60, 20)]:
        schema = decimal_type(precision, scale)
        encoder = Encoder(json.dumps(schema))
        for _ in range(ROUNDS):
            value = rand_decimal(rng, precision, scale)
            assert fastavro_decode(schema, encoder.encode(value)) == value


def test_decimal_bytes_are_fastavros_width() -> None:
    # fastavro writes (bit_length(|unscaled|) + 8) // 8 bytes: -128 takes two, 0 takes one.
    encoder = Encoder(json.dumps(decimal_type(4, 2)))
    assert encoder.encode(Decimal("-1.28")) == b"\x04\xff\x80"
    assert encoder.encode(Decimal("0.00")) == b"\x02\x00"
    assert encoder.encode(Decimal("-0")) == b"\x02\x00"
    assert encoder.encode(Decimal("1.27")) == b"\x02\x7f"


def test_negative_zero_in_a_fixed_decimal_is_zero() -> None:
    # fastavro writes Decimal("-0") to a fixed as ...fe (reads back as -0.02); the encoder writes zero.
    schema = fixed_decimal_type("D3", 3, 6, 2)
    data = Encoder(json.dumps(schema)).encode(Decimal("-0.00"))
    assert data == b"\x00\x00\x00"
    assert fastavro_decode(schema, data) == 0


def test_timestamps_are_exact_and_floor_before_1970() -> None:
    millis = Encoder(json.dumps({"type": "long", "logicalType": "timestamp-millis"}))
    micros = Encoder(json.dumps({"type": "long", "logicalType": "timestamp-micros"}))
    before = datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=1500)
    assert fastavro_decode("long", millis.encode(before)) == -2
    assert fastavro_decode("long", micros.encode(before)) == -1500
    late = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert fastavro_decode("long", micros.encode(late)) == 253_402_300_799_999_999
    riyadh = datetime(2026, 11, 1, 11, 0, tzinfo=timezone(timedelta(hours=3)))
    assert millis.encode(riyadh) == millis.encode(datetime(2026, 11, 1, 8, 0, tzinfo=UTC))


def test_missing_fields_take_their_defaults() -> None:
    inner = record("Inner", field("n", "int", default=7), field("s", ["null", "string"], default=None))
    schema = record(
        "WithDefaults",
        field("id", "string"),
        field("count", "long", default=-3),
        field("ratio", "double", default=0.5),
        field("label", "string", default="none"),
        field("colour", ENUM, default="BLUE"),
        field("tags", {"type": "array", "items": "string"}, default=["a", "b"]),
        field("attrs", {"type": "map", "values": "long"}, default={"x": 1}),
        field("inner", inner, default={"n": 1}),
        field("maybe", ["null", "long"], default=None),
        field("first", ["long", "null"], default=4),
    )
    encoder = Encoder(json.dumps(schema))
    data = same_as_fastavro(schema, {"id": "only"}, encoder)
    assert fastavro_decode(schema, data)["inner"] == {"n": 1, "s": None}
    same_as_fastavro(schema, {"id": "given", "count": 9, "inner": {"n": 2, "s": "x"}, "maybe": 5}, encoder)


def test_bytes_defaults_are_code_points() -> None:
    # Avro JSON defaults for bytes are strings of code points 0-255 (fastavro cannot write these).
    schema = record("B", field("raw", "bytes", default="\u00ff\u0000a"))
    assert Encoder(json.dumps(schema)).encode({}) == b"\x06\xff\x00a"


def test_recursive_records() -> None:
    node = record("Node", field("value", "long"), field("next", ["null", "Node"]))
    chain: dict[str, Any] = {"value": 0, "next": None}
    for n in range(1, 50):
        chain = {"value": n, "next": chain}
    same_as_fastavro(node, chain)


def test_named_types_resolve_by_short_and_full_name() -> None:
    money = {"type": "fixed", "name": "Money", "namespace": "a.b", "size": 2}
    schema = {
        "type": "record",
        "name": "Outer",
        "namespace": "a.b",
        "fields": [
            field("m1", money),
            field("m2", "Money"),
            field("m3", "a.b.Money"),
            field(
                "inner",
                {
                    "type": "record",
                    "name": "c.Inner",
                    "fields": [field("m", "a.b.Money"), field("same_ns", ENUM | {"name": "E"})],
                },
            ),
            field("again", "c.E"),
            field("elsewhere", "c.Inner"),
        ],
    }
    datum = {
        "m1": b"ab",
        "m2": b"cd",
        "m3": b"ef",
        "inner": {"m": b"gh", "same_ns": "RED"},
        "again": "BLUE",
        "elsewhere": {"m": b"ij", "same_ns": "GREEN"},
    }
    same_as_fastavro(schema, datum)


def test_union_picks_the_record_sharing_most_keys() -> None:
    small = record("Small", field("a", "long", default=0))
    large = record("Large", field("a", "long", default=0), field("b", "long", default=0))
    union = [small, large]
    assert Encoder(json.dumps(union)).encode({"a": 1, "b": 2})[:1] == b"\x02"
    same_as_fastavro(union, {"a": 1, "b": 2})
    same_as_fastavro(union, {"a": 1})


def test_union_of_record_and_map_follows_fastavro() -> None:
    # fastavro keeps scanning after a record and takes a later map that also validates.
    union = [record("Pair", field("k", "string", default="")), {"type": "map", "values": "string"}]
    same_as_fastavro(union, {"k": "v"})


def test_values_beyond_fastavro_are_encoded_as_their_equivalents() -> None:
    dec = decimal_type(10, 2)
    encoder = Encoder(json.dumps(dec))
    assert encoder.encode(Decimal("1.500")) == fastavro_encode(dec, Decimal("1.50"))
    assert encoder.encode(12) == fastavro_encode(dec, Decimal("12.00"))
    nullable = Encoder(json.dumps(["null", dec]))
    assert nullable.encode(12) == fastavro_encode(["null", dec], Decimal("12.00"))


def test_encoders_are_reusable_and_independent() -> None:
    a = Encoder(json.dumps(record("A", field("x", "long"))))
    b = Encoder(json.dumps(record("A", field("x", "string"))))
    for n in range(100):
        assert a.encode({"x": n}) == fastavro_encode(record("A", field("x", "long")), {"x": n})
        assert b.encode({"x": str(n)}) == fastavro_encode(record("A", field("x", "string")), {"x": str(n)})


# ---------------------------------------------------------------------------------------------------
# Errors name the field path


@pytest.fixture(scope="module")
def invoice_encoder() -> Encoder:
    return Encoder((SCHEMAS / "invoice.created.avsc").read_text())


def broken_invoice(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    datum = invoice(1, lines=3)
    change(datum)
    return datum


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [
        (
            lambda d: d["lines"][2].update(quantity="1.5"),
            TypeError,
            "field 'lines[2].quantity': expected a Decimal, got str '1.5'",
        ),
        (lambda d: d["seller"].pop("name"), ValueError, "field 'seller.name': required field is missing"),
        (
            lambda d: d["buyer"]["address"].pop("city"),
            ValueError,
            "field 'buyer.address.city': required field is missing",
        ),
        (
            lambda d: d.update(vat_total=Decimal("1.005")),
            ValueError,
            "field 'vat_total': 1.005 has more than 2 decimal places (scale 2)",
        ),
        (
            lambda d: d.update(vat_total=Decimal("12345678901234567.00")),
            ValueError,
            "field 'vat_total': 12345678901234567.00 has more than 18 digits (precision 18)",
        ),
        (
            lambda d: d.update(vat_total=Decimal("NaN")),
            ValueError,
            "field 'vat_total': Decimal('NaN') is not a finite decimal",
        ),
        (
            lambda d: d.update(vat_total=Decimal("-Infinity")),
            ValueError,
            "field 'vat_total': Decimal('-Infinity') is not a finite decimal",
        ),
        (lambda d: d.update(vat_total=1.5), TypeError, "field 'vat_total': expected a Decimal, got float 1.5"),
        (
            lambda d: d.update(issued_at=datetime(2026, 1, 1)),  # noqa: DTZ001 - naive on purpose
            ValueError,
            "field 'issued_at': datetime 2026-01-01 00:00:00 has no timezone; use an aware datetime",
        ),
        (
            lambda d: d.update(issued_at="2026-01-01"),
            TypeError,
            "field 'issued_at': expected a datetime, got str '2026-01-01'",
        ),
        (lambda d: d.update(icv=True), TypeError, "field 'icv': expected an int, got bool True"),
        (
            lambda d: d.update(icv=2**63),
            ValueError,
            "field 'icv': 9223372036854775808 is out of range for Avro long (64-bit)",
        ),
        (
            lambda d: d.update(type_code="INVOICE_999"),
            ValueError,
            (
                "field 'type_code': 'INVOICE_999' is not a symbol of enum streams.events.InvoiceTypeCode; "
                "expected one of ['INVOICE_388', 'DEBIT_NOTE_383', 'CREDIT_NOTE_381']"
            ),
        ),
        (
            lambda d: d.update(type_code=388),
            TypeError,
            "field 'type_code': expected a str (enum streams.events.InvoiceTypeCode), got int 388",
        ),
        (
            lambda d: d.update(buyer="Gulf Retail"),
            TypeError,
            "field 'buyer': expected None or a dict (record streams.events.Party), got str 'Gulf Retail'",
        ),
        (lambda d: d.update(lines={}), TypeError, "field 'lines': expected a list or tuple, got dict {}"),
        (
            lambda d: d["lines"].append(None),
            TypeError,
            "field 'lines[3]': expected a dict (record streams.events.InvoiceLine), got NoneType None",
        ),
        (lambda d: d.update(currency=None), TypeError, "field 'currency': expected a str, got NoneType None"),
        (
            lambda d: d.update(tenant_id="bad \ud800"),
            ValueError,
            (
                "field 'tenant_id': UnicodeEncodeError: "
                "'utf-8' codec can't encode character '\\ud800' in position 4: surrogates not allowed"
            ),
        ),
    ],
)
def test_errors_start_with_the_field_path(
    invoice_encoder: Encoder, change: Callable[[dict[str, Any]], object], kind: type[Exception], message: str
) -> None:
    with raises(kind, message):
        invoice_encoder.encode(broken_invoice(change))


def test_unknown_fields_are_refused_at_every_level(invoice_encoder: Encoder) -> None:
    root = r"^unknown field\(s\) \['seller_name'\]; record streams\.events\.InvoiceCreated has fields \['invoice_id', "
    with pytest.raises(ValueError, match=root):
        invoice_encoder.encode(broken_invoice(lambda d: d.update(seller_name="x")))
    with raises(
        ValueError,
        "field 'lines[0]': unknown field(s) ['vat']; record streams.events.InvoiceLine has fields "
        "['line_id', 'description', 'quantity', 'unit_price', 'discount', 'vat_category', 'vat_rate', "
        "'net_amount']",
    ):
        invoice_encoder.encode(broken_invoice(lambda d: d["lines"][0].update(vat=1)))


def test_missing_nullable_field_without_default_is_an_error() -> None:
    # fastavro writes null here; a missing key is more likely a typo than an intended null.
    encoder = Encoder(json.dumps(record("R", field("note", ["null", "string"]))))
    with raises(ValueError, "field 'note': required field is missing"):
        encoder.encode({})
    assert encoder.encode({"note": None}) == b"\x00"


def test_map_values_and_nested_arrays_in_paths() -> None:
    schema = record(
        "R",
        field("attributes", {"type": "map", "values": "string"}),
        field("grid", {"type": "array", "items": {"type": "array", "items": "int"}}),
    )
    encoder = Encoder(json.dumps(schema))
    with raises(TypeError, "field 'attributes{colour}': expected a str, got int 7"):
        encoder.encode({"attributes": {"size": "L", "colour": 7}, "grid": []})
    with raises(ValueError, "field 'grid[1][0]': 2147483648 is out of range for Avro int (32-bit)"):
        encoder.encode({"attributes": {}, "grid": [[1], [2**31]]})
    with raises(TypeError, "field 'attributes': map keys must be str, got int 1"):
        encoder.encode({"attributes": {1: "x"}, "grid": []})


def test_stricter_than_fastavro_on_types() -> None:
    encoder = Encoder(json.dumps(record("R", field("n", "long"), field("f", "double"), field("b", "boolean"))))
    with raises(TypeError, "field 'f': expected a float, got bool False"):
        encoder.encode({"n": 1, "f": False, "b": True})
    with raises(TypeError, "field 'b': expected a bool, got int 1"):
        encoder.encode({"n": 1, "f": 1.0, "b": 1})
    with raises(TypeError, "field 'f': expected a float, got str 'NaN'"):
        encoder.encode({"n": 1, "f": "NaN", "b": True})
    with raises(TypeError, "expected a dict (record t.R), got list []"):
        encoder.encode([])


def test_other_logical_type_errors() -> None:
    schema = record(
        "R",
        field("day", {"type": "int", "logicalType": "date"}),
        field("at", {"type": "long", "logicalType": "time-micros"}),
        field("id", {"type": "string", "logicalType": "uuid"}),
        field("f", {"type": "fixed", "name": "F", "size": 4}),
        field("d", fixed_decimal_type("D", 2, 4, 2)),
    )
    encoder = Encoder(json.dumps(schema))
    good = {"day": date(2026, 1, 1), "at": time(1, 2), "id": uuid.UUID(int=1), "f": b"abcd", "d": Decimal("99.99")}
    same_as_fastavro(schema, good, encoder)
    with raises(ValueError, "field 'day': '2026-13-01' is not an ISO date (YYYY-MM-DD)"):
        encoder.encode({**good, "day": "2026-13-01"})
    with raises(TypeError, "field 'at': expected a time, got float 1.5"):
        encoder.encode({**good, "at": 1.5})
    with raises(TypeError, "field 'id': expected a str or UUID, got int 1"):
        encoder.encode({**good, "id": 1})
    with raises(ValueError, "field 'f': fixed t.F takes exactly 4 bytes, got 3"):
        encoder.encode({**good, "f": b"abc"})
    with raises(ValueError, "field 'd': 100.00 has more than 4 digits (precision 4)"):
        encoder.encode({**good, "d": Decimal("100.00")})


def test_union_error_when_no_branch_fits() -> None:
    encoder = Encoder(json.dumps(["null", "long", decimal_type(4, 2)]))
    with raises(TypeError, "expected None or an int or a Decimal, got str 'x'"):
        encoder.encode("x")
    with raises(ValueError, "1.234 has more than 2 decimal places (scale 2)"):
        encoder.encode(Decimal("1.234"))


def test_too_deep_nesting_is_an_error_not_a_crash() -> None:
    encoder = Encoder(json.dumps(record("Node", field("next", ["null", "Node"]))))
    chain: dict[str, Any] = {"next": None}
    for _ in range(1000):
        chain = {"next": chain}
    with pytest.raises(ValueError, match=r"nested more than 256 levels deep$"):
        encoder.encode(chain)


# ---------------------------------------------------------------------------------------------------
# Invalid schemas


@pytest.mark.parametrize(
    ("schema_json", "message"),
    [
        ("{", "invalid Avro schema: not valid JSON: EOF while parsing an object at line 1 column 1"),
        (
            '"strng"',
            (
                "invalid Avro schema: top level: unknown type 'strng' "
                "(not a primitive and not a named type defined before it)"
            ),
        ),
        (
            '{"type": "record", "name": "R", "fields": [{"name": "x", "type": "Party"}]}',
            (
                "invalid Avro schema: record R, field 'x': unknown type 'Party' "
                "(not a primitive and not a named type defined before it)"
            ),
        ),
        ('{"type": "record", "name": "R"}', 'invalid Avro schema: record R: "fields" is missing'),
        (
            '{"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}, {"name": "x", "type": "int"}]}',
            "invalid Avro schema: record R: field 'x' is declared twice",
        ),
        (
            '["null", "null"]',
            "invalid Avro schema: top level, union branch 1: the union already has a branch of type 'null'",
        ),
        (
            '["null", ["int"]]',
            "invalid Avro schema: top level, union branch 1: a union cannot directly contain another union",
        ),
        (
            '{"type": "enum", "name": "E", "symbols": ["A", "A"]}',
            "invalid Avro schema: enum E: symbol 'A' is listed twice",
        ),
        (
            '{"type": "bytes", "logicalType": "decimal", "scale": 2}',
            'invalid Avro schema: top level (decimal): "precision" is missing',
        ),
        (
            '{"type": "bytes", "logicalType": "decimal", "precision": 2, "scale": 3}',
            "invalid Avro schema: top level (decimal): scale 3 is larger than precision 2",
        ),
        (
            '{"type": "fixed", "name": "D", "size": 2, "logicalType": "decimal", "precision": 5}',
            "invalid Avro schema: fixed D (decimal): precision 5 does not fit in 2 bytes (at most 4 digits)",
        ),
        (
            '{"type": "record", "name": "R", "fields": [{"name": "x", "type": "int", "default": "a"}]}',
            (
                "invalid Avro schema: record R, field 'x': default \"a\" does not fit the field's type: "
                "expected an int (Avro int), got str 'a'"
            ),
        ),
        (
            '[{"type": "fixed", "name": "F", "size": 1}, {"type": "fixed", "name": "F", "size": 2}]',
            "invalid Avro schema: top level, union branch 1: fixed F: type 'F' is defined twice",
        ),
    ],
)
def test_invalid_schemas_are_value_errors(schema_json: str, message: str) -> None:
    with raises(ValueError, message):
        Encoder(schema_json)


def test_unknown_logical_types_fall_back_to_the_physical_type() -> None:
    schema = {"type": "string", "logicalType": "iso-country"}
    same_as_fastavro(schema, "SA")
    misplaced = {"type": "int", "logicalType": "timestamp-millis"}
    same_as_fastavro(misplaced, 5)


def test_strenum_members_encode_as_their_value() -> None:
    encoder = Encoder(json.dumps(ENUM))
    assert encoder.encode(Colour.GREEN) == encoder.encode("GREEN") == b"\x02"


class _TextDecimal(Decimal):
    """A Decimal subclass: the encoder takes it through str(), not the in-place read of a plain Decimal."""

    __slots__ = ()


@pytest.mark.parametrize(("precision", "scale"), [(4, 2), (18, 2), (18, 0), (38, 10), (38, 38), (60, 20)])
def test_decimals_read_in_place_encode_like_their_text(precision: int, scale: int) -> None:
    rng = random.Random(SEED)
    encoders = [Encoder(json.dumps(decimal_type(precision, scale)))]
    size = (precision * 10 + 23) // 24 + 1  # bytes enough for the precision (log2(10) < 10/3)
    encoders.append(Encoder(json.dumps(fixed_decimal_type("F", size, precision, scale))))
    for _ in range(ROUNDS):
        value = rand_decimal(rng, precision, scale)
        for encoder in encoders:
            assert encoder.encode(value) == encoder.encode(_TextDecimal(value)), value
    # Values the in-place read declines or refuses fail exactly as through the text.
    for text in [
        "1E-40",
        "-0E+50",
        "NaN",
        "sNaN",
        "-Infinity",
        "1" * 39,
        "0.1" + "0" * 60,
        "1" * 50 + ".5",
        "9" * precision,
        f"1E+{precision}",
        "12345.6789",
    ]:
        value = Decimal(text)
        for encoder in encoders:
            try:
                expected = encoder.encode(_TextDecimal(value))
            except ValueError as error:
                message = str(error).replace("_TextDecimal", "Decimal")
                with raises(ValueError, message):
                    encoder.encode(value)
            else:
                assert encoder.encode(value) == expected, text


def test_record_keys_in_any_order_encode_alike(invoice_encoder: Encoder) -> None:
    event = invoice(3, lines=2)
    expected = invoice_encoder.encode(event)
    names = list(event)
    for order in [names[::-1], names[1:] + names[:1], names[:5] + names[6:] + names[5:6]]:
        assert invoice_encoder.encode({name: event[name] for name in order}) == expected
    without_default = {name: event[name] for name in names if name != "currency"}
    with raises(ValueError, "field 'currency': required field is missing"):
        invoice_encoder.encode(without_default)
    for extra in [{**event, "zzz": 1}, {"zzz": 1, **event}, {**dict(list(event.items())[:3]), "zzz": 1, **event}]:
        with pytest.raises(ValueError, match=r"^unknown field\(s\) \['zzz'\]"):
            invoice_encoder.encode(extra)
