"""streams._avro_native.Decoder: returns what fastavro.schemaless_reader returns, refuses malformed data.

Random valid datums of every schema in schemas/ and of synthetic schemas covering every type and
logical type are encoded, then decoded natively and by fastavro; the two results must agree in value
and type, down to Decimal exponents, datetime tzinfo and float bits. The values come from hypothesis
(shrinking a failure to a small datum); a seeded generator gives the fixed datums some tests start from.
Malformed data of every kind must raise ValueError naming the field path, and AvroCodec SchemaError.
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import struct
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import pytest
from fastavro import parse_schema, schemaless_reader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams._avro_native import Decoder, Encoder
from streams.demo.samples import invoice, invoice_chain, user_action, workflow_completed
from streams.errors import SchemaError
from streams.schemas.codec import HEADER, AvroCodec
from tests.schemas.avro_builders import SCHEMAS, decimal_type, field, fixed_decimal_type, load_schema, record

SEED = 20_261_124
EXAMPLES = 150  # per schema, hypothesis or seeded
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# Comparing with fastavro


def fastavro_decode(schema: Any, data: bytes) -> Any:
    return schemaless_reader(io.BytesIO(data), parse_schema(schema), None)


def assert_same(native: Any, expected: Any, path: str = "datum") -> None:
    """Equal values of the same types: dict key order, Decimal exponents, tzinfo and float bits too."""
    assert type(native) is type(expected), f"{path}: {type(native).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert list(native) == list(expected), f"{path}: keys {list(native)} != {list(expected)}"
        for key, value in expected.items():
            assert_same(native[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(native) == len(expected), f"{path}: {len(native)} items != {len(expected)}"
        for i, (a, b) in enumerate(zip(native, expected, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert struct.pack("<d", native) == struct.pack("<d", expected), f"{path}: {native!r} != {expected!r}"
    elif isinstance(expected, Decimal):
        assert native.as_tuple() == expected.as_tuple(), f"{path}: {native!r} != {expected!r}"
    elif isinstance(expected, datetime):
        assert native == expected, f"{path}: {native!r} != {expected!r}"
        assert native.tzinfo is expected.tzinfo, f"{path}: tzinfo {native.tzinfo!r} != {expected.tzinfo!r}"
        assert native.fold == expected.fold, path
    else:
        assert native == expected, f"{path}: {native!r} != {expected!r}"


def decodes_like_fastavro(schema: Any, data: bytes, decoder: Decoder | None = None) -> Any:
    native = (decoder or Decoder(json.dumps(schema))).decode(data)
    assert_same(native, fastavro_decode(schema, data))
    return native


def zigzag(n: int) -> bytes:
    """The Avro varint of n (any int that fits 64 bits)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def avro_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return zigzag(len(raw)) + raw


def raises(message: str) -> Any:
    """pytest.raises(ValueError) for exactly this message."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


# ---------------------------------------------------------------------------------------------------
# Random valid values of any schema


class Source(Protocol):
    """Where random choices come from: hypothesis (shrinks) or a seeded generator."""

    def integer(self, lo: int, hi: int) -> int: ...

    def pick(self, options: Sequence[T]) -> T: ...

    def binary(self, size: int | None = None) -> bytes: ...

    def text(self) -> str: ...


class HypothesisSource:
    def __init__(self, data: Any) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        value: int = self.data.draw(st.integers(lo, hi))
        return value

    def pick(self, options: Sequence[T]) -> T:
        value: T = self.data.draw(st.sampled_from(options))
        return value

    def binary(self, size: int | None = None) -> bytes:
        value: bytes = self.data.draw(st.binary(min_size=size or 0, max_size=40 if size is None else size))
        return value

    def text(self) -> str:
        value: str = self.data.draw(st.text(max_size=30))  # no lone surrogates: they are not UTF-8
        return value


class RandomSource:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        if self.rng.random() < 0.25:
            return self.rng.choice([v for v in (lo, hi, 0, 1, -1, lo + 1, hi - 1) if lo <= v <= hi])
        return self.rng.randint(lo, hi)

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def binary(self, size: int | None = None) -> bytes:
        return self.rng.randbytes(self.rng.randrange(40) if size is None else size)

    def text(self) -> str:
        # ASCII, Latin-1, Arabic, CJK and astral-plane characters; no lone surrogates.
        ranges = [(0x0, 0x7F), (0xA0, 0xFF), (0x600, 0x6FF), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F)]
        return "".join(chr(self.rng.randint(*self.rng.choice(ranges))) for _ in range(self.rng.randrange(0, 30)))


def run_property(check: Callable[[Source], None]) -> None:
    """`check` on EXAMPLES hypothesis sources."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def property_(data: Any) -> None:
        check(HypothesisSource(data))

    property_()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MICROS = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MAX_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MAX_GEN_DEPTH = 4


def random_float32(src: Source) -> float:
    bits = src.integer(0, 2**32 - 1)
    special = src.pick([None, None, None, 0.0, -0.0, math.inf, -math.inf, math.nan, 1.5])
    value: float = struct.unpack("<f", bits.to_bytes(4, "little"))[0]
    return value if special is None else special


def random_float64(src: Source) -> float:
    bits = src.integer(0, 2**64 - 1)
    special = src.pick([None, None, None, 0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 0.1])
    value: float = struct.unpack("<d", bits.to_bytes(8, "little"))[0]  # any bit pattern, NaN payloads too
    return value if special is None else special


def random_decimal(src: Source, precision: int, scale: int) -> Decimal:
    digits = src.integer(1, precision)
    unscaled = src.integer(-(10**digits - 1), 10**digits - 1)
    return Decimal(f"{unscaled}E-{scale}")  # exact; scaleb() would round to the context's 28 digits


def random_moment(src: Source) -> datetime:
    micros = src.pick([src.integer(MIN_MICROS, MAX_MICROS), src.integer(-(10**15), 10**15)])
    moment = EPOCH + timedelta(microseconds=micros)
    offset = timezone(timedelta(minutes=src.integer(-23 * 60, 23 * 60)))
    # Another zone is the same instant unless it leaves Python's range.
    shifted = (
        moment.astimezone(offset)
        if datetime(2, 1, 1, tzinfo=UTC) < moment < datetime(9998, 1, 1, tzinfo=UTC)
        else moment
    )
    return src.pick([moment, shifted])


def random_time(src: Source) -> time:
    return time(src.integer(0, 23), src.integer(0, 59), src.integer(0, 59), src.integer(0, 999_999))


PRIMITIVES: dict[str, Callable[[Source], Any]] = {
    "null": lambda _: None,
    "boolean": lambda src: src.pick([False, True]),
    "int": lambda src: src.integer(-(2**31), 2**31 - 1),
    "long": lambda src: src.integer(-(2**63), 2**63 - 1),
    "float": random_float32,
    "double": random_float64,
    "bytes": lambda src: src.binary(),
    "string": lambda src: src.text(),
}

LOGICAL: dict[tuple[str, str], Callable[[Source, dict[str, Any]], Any]] = {
    ("bytes", "decimal"): lambda src, s: random_decimal(src, s["precision"], s.get("scale", 0)),
    ("fixed", "decimal"): lambda src, s: random_decimal(src, s["precision"], s.get("scale", 0)),
    ("long", "timestamp-millis"): lambda src, _: random_moment(src),
    ("long", "timestamp-micros"): lambda src, _: random_moment(src),
    ("long", "local-timestamp-millis"): lambda src, _: random_moment(src).replace(tzinfo=None),
    ("long", "local-timestamp-micros"): lambda src, _: random_moment(src).replace(tzinfo=None),
    ("int", "date"): lambda src, _: date.fromordinal(src.integer(1, date.max.toordinal())),
    ("int", "time-millis"): lambda src, _: random_time(src),
    ("long", "time-micros"): lambda src, _: random_time(src),
    ("string", "uuid"): lambda src, _: src.pick(
        [uuid.UUID(int=src.integer(0, 2**128 - 1)), str(uuid.UUID(int=src.integer(0, 2**128 - 1)))]
    ),
}


class Generator:
    """Random valid values of one schema (named types resolved like Avro does)."""

    def __init__(self, schema: Any) -> None:
        self.named: dict[str, dict[str, Any]] = {}
        self.schema = schema
        self._register(schema, "")

    def _register(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._register(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema["type"]
            if kind in ("record", "error", "enum", "fixed"):
                full, namespace = self._fullname(schema, namespace)
                self.named[full] = schema | {"__namespace": namespace}
            if kind in ("record", "error"):
                for f in schema["fields"]:
                    self._register(f["type"], namespace)
            elif kind == "array":
                self._register(schema["items"], namespace)
            elif kind == "map":
                self._register(schema["values"], namespace)
            elif isinstance(kind, dict | list):
                self._register(kind, namespace)

    @staticmethod
    def _fullname(schema: dict[str, Any], namespace: str) -> tuple[str, str]:
        name: str = schema["name"]
        if "." in name:
            return name, name.rsplit(".", 1)[0]
        ns = schema.get("namespace") or namespace
        return (f"{ns}.{name}" if ns else name), ns

    def _resolve(self, name: str, namespace: str) -> dict[str, Any]:
        return self.named.get(f"{namespace}.{name}") or self.named[name]

    def value(self, src: Source) -> Any:
        return self._value(self.schema, src, "", 0)

    def _value(self, schema: Any, src: Source, namespace: str, depth: int) -> Any:
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return PRIMITIVES[schema](src)
            schema = self._resolve(schema, namespace)
        if isinstance(schema, list):
            return self._union(schema, src, namespace, depth)
        kind = schema["type"]
        if isinstance(kind, dict | list):
            return self._value(kind, src, namespace, depth)
        logical = LOGICAL.get((kind, schema.get("logicalType", "")))
        if logical is not None:
            return logical(src, schema)
        if kind in ("record", "error", "enum", "fixed"):
            # A reference resolves to the definition, which knows its namespace; a definition works it out.
            namespace = schema.get("__namespace") or self._fullname(schema, namespace)[1]
        return self._complex(kind, schema, src, namespace, depth)

    def _complex(self, kind: str, schema: dict[str, Any], src: Source, namespace: str, depth: int) -> Any:
        if kind in PRIMITIVES:
            return PRIMITIVES[kind](src)
        if kind in ("record", "error"):
            return {f["name"]: self._value(f["type"], src, namespace, depth + 1) for f in schema["fields"]}
        if kind == "enum":
            return src.pick(schema["symbols"])
        if kind == "fixed":
            return src.binary(schema["size"])
        size = 0 if depth >= MAX_GEN_DEPTH else src.integer(0, 4)
        if kind == "array":
            return [self._value(schema["items"], src, namespace, depth + 1) for _ in range(size)]
        if kind == "map":
            return {src.text(): self._value(schema["values"], src, namespace, depth + 1) for _ in range(size)}
        return self._value(kind, src, namespace, depth)  # a named type's name

    def _union(self, branches: list[Any], src: Source, namespace: str, depth: int) -> Any:
        # Deep in a recursive schema, end the recursion with null (or the first branch).
        branch = ("null" if "null" in branches else branches[0]) if depth >= MAX_GEN_DEPTH else src.pick(branches)
        return self._value(branch, src, namespace, depth)


# ---------------------------------------------------------------------------------------------------
# Synthetic schemas: every type and logical type, in records, unions, arrays and maps

POINT = record("Point", field("x", "long"), field("y", "long"))
COLOUR = {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}
TS_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}

EVERYTHING = record(
    "Everything",
    field("n", "null"),
    field("b", "boolean"),
    field("i", "int"),
    field("l", "long"),
    field("f", "float"),
    field("d", "double"),
    field("s", "string"),
    field("raw", "bytes"),
    field("fx", {"type": "fixed", "name": "F4", "size": 4}),
    field("fx0", {"type": "fixed", "name": "F0", "size": 0}),
    field("colour", COLOUR),
    field("id", {"type": "string", "logicalType": "uuid"}),
    field("dec", decimal_type(18, 2)),
    field("dec0", decimal_type(5, 0)),
    field("dec38", decimal_type(38, 38)),
    field("dec_big", decimal_type(60, 10)),
    field("fdec1", fixed_decimal_type("D1", 1, 2, 1)),
    field("fdec8", fixed_decimal_type("D8", 8, 18, 4)),
    field("fdec20", fixed_decimal_type("D20", 20, 47, 6)),
    field("ts_ms", TS_MILLIS),
    field("ts_us", {"type": "long", "logicalType": "timestamp-micros"}),
    field("lts_ms", {"type": "long", "logicalType": "local-timestamp-millis"}),
    field("lts_us", {"type": "long", "logicalType": "local-timestamp-micros"}),
    field("day", {"type": "int", "logicalType": "date"}),
    field("t_ms", {"type": "int", "logicalType": "time-millis"}),
    field("t_us", {"type": "long", "logicalType": "time-micros"}),
    field("country", {"type": "string", "logicalType": "iso-country"}),  # unknown: the physical type
    field("misplaced", {"type": "int", "logicalType": "timestamp-millis"}),  # wrong base type: an int
    field("longs", {"type": "array", "items": "long"}),
    field("points", {"type": "array", "items": POINT}),
    field("amounts", {"type": "map", "values": decimal_type(9, 3)}),
    field("maybe", ["null", "string"]),
    field("string_first", ["string", "null"]),
    field("wide", ["null", "boolean", "int", "long", "float", "double", "string", "bytes"]),
    field("logical", ["null", decimal_type(10, 2), TS_MILLIS, "string", {"type": "int", "logicalType": "date"}]),
    field("shape", ["null", "Point", {"type": "map", "values": "long"}, {"type": "array", "items": "Colour"}]),
    field("mixed", {"type": "array", "items": ["null", "long", "Point", "F4"]}),
    field("nested", {"type": "map", "values": ["null", {"type": "array", "items": ["int", "D8"]}]}),
    field("again", "D1"),
    field(
        "inner",
        record(
            "Inner",
            field("label", "string"),
            field("next", ["null", "Inner"]),
            field("kids", {"type": "array", "items": "Inner"}),
            namespace="t.deeper",
        ),
    ),
    field("inner_by_name", "t.deeper.Inner"),
)

ROOTS: dict[str, Any] = {
    "string": "string",
    "decimal": decimal_type(18, 2),
    "fixed decimal": fixed_decimal_type("D16", 16, 38, 5),
    "union": ["null", decimal_type(4, 2), "string", POINT],
    "array": {"type": "array", "items": ["null", "double"]},
    "map": {"type": "map", "values": {"type": "array", "items": TS_MILLIS}},
    "enum": COLOUR,
    "timestamp-micros": {"type": "long", "logicalType": "timestamp-micros"},
}

CATALOG = sorted(path.stem for path in SCHEMAS.glob("*.avsc"))
SCHEMA_CASES: dict[str, Any] = {f"catalog {name}": load_schema(name) for name in CATALOG}
SCHEMA_CASES["everything"] = EVERYTHING
SCHEMA_CASES.update({f"root {name}": schema for name, schema in ROOTS.items()})


@pytest.mark.parametrize("name", list(SCHEMA_CASES))
def test_random_datums_decode_like_fastavro(name: str) -> None:
    schema = SCHEMA_CASES[name]
    text = json.dumps(schema)
    encoder, decoder, generator = Encoder(text), Decoder(text), Generator(schema)
    parsed = parse_schema(schema)

    def check(src: Source) -> None:
        data = encoder.encode(generator.value(src))
        assert_same(decoder.decode(data), schemaless_reader(io.BytesIO(data), parsed, None))

    run_property(check)


def test_the_catalog_is_covered() -> None:
    assert len(CATALOG) >= 7
    for name in CATALOG:
        Decoder((SCHEMAS / f"{name}.avsc").read_text())


@pytest.mark.parametrize("lines", [0, 1, 2, 3, 7])
def test_invoice_samples(lines: int) -> None:
    schema = load_schema("invoice.created")
    text = json.dumps(schema)
    encoder, decoder = Encoder(text), Decoder(text)
    for seq in range(20):
        datum = invoice(seq, lines=lines, tenant=f"tenant{seq % 3}")
        decoded = decodes_like_fastavro(schema, encoder.encode(datum), decoder)
        assert decoded == datum


def test_invoice_chain_and_the_other_samples() -> None:
    codec = AvroCodec(load_schema("invoice.created"), 1)
    for event in invoice_chain(50):
        data = codec.encode_datum(event)
        assert_same(codec.decode_datum(data), fastavro_decode(codec.schema, data))
    for schema, make in [("user.action", user_action), ("workflow.completed", workflow_completed)]:
        other = AvroCodec(load_schema(schema), 2)
        for seq in range(20):
            data = other.encode(make(seq))
            assert_same(other.decode(data), fastavro_decode(other.schema, data[HEADER.size :]))


def test_values_carry_fastavros_types() -> None:
    decoded = Decoder(json.dumps(EVERYTHING)).decode(
        Encoder(json.dumps(EVERYTHING)).encode(
            {
                **Generator(EVERYTHING).value(RandomSource(SEED)),
                "dec": Decimal(871),
                "dec0": Decimal(0),
                "id": "12345678-1234-5678-1234-567812345678",
                "ts_ms": datetime(2026, 11, 1, 8, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=3))),
                "lts_ms": datetime(2026, 11, 1, 8, 0),  # noqa: DTZ001 - local timestamps are naive
                "t_ms": time(23, 59, 59, 999_999),
            }
        )
    )
    assert isinstance(decoded, dict)
    assert repr(decoded["dec"]) == "Decimal('871.00')"
    assert repr(decoded["dec0"]) == "Decimal('0')"
    assert decoded["id"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert decoded["ts_ms"] == datetime(2026, 11, 1, 5, 0, 0, 123_000, tzinfo=UTC)
    assert decoded["ts_ms"].tzinfo is UTC  # datetime.UTC is timezone.utc, fastavro's epoch's zone
    assert decoded["lts_ms"] == datetime(2026, 11, 1, 8, 0)  # noqa: DTZ001
    assert decoded["t_ms"] == time(23, 59, 59, 999_000)


def test_decimal_edges_match_fastavro() -> None:
    for precision, scale in [(1, 0), (2, 1), (4, 2), (18, 2), (38, 0), (38, 38), (39, 3), (60, 10), (100, 50)]:
        schema = decimal_type(precision, scale)
        decoder = Decoder(json.dumps(schema))
        biggest = 10**precision - 1
        for unscaled in {
            0,
            1,
            -1,
            127,
            -128,
            128,
            -129,
            255,
            -256,
            2**63,
            -(2**63),
            2**64,
            2**127 - 1,
            -(2**127),
            2**127,
            -(2**127) - 1,
            biggest,
            -biggest,
        }:
            if abs(unscaled) > biggest:
                continue
            width = (abs(unscaled).bit_length() + 8) // 8
            data = avro_string(unscaled.to_bytes(width, "big", signed=True))
            decodes_like_fastavro(schema, data, decoder)
            # Longer sign extension than needed reads the same.
            decodes_like_fastavro(schema, avro_string(unscaled.to_bytes(width + 3, "big", signed=True)), decoder)
        decodes_like_fastavro(schema, b"\x00", decoder)  # empty bytes: zero, as fastavro reads them


def test_timestamps_at_the_edges_of_pythons_range() -> None:
    for logical, unit in [
        ("timestamp-millis", 1000),
        ("timestamp-micros", 1),
        ("local-timestamp-millis", 1000),
        ("local-timestamp-micros", 1),
    ]:
        schema = {"type": "long", "logicalType": logical}
        decoder = Decoder(json.dumps(schema))
        for micros in [MIN_MICROS, MIN_MICROS + 1000, -1000, -1, 0, 1, 999, 1000, MAX_MICROS - 999, MAX_MICROS]:
            decodes_like_fastavro(schema, zigzag(micros // unit), decoder)
        with raises(f"{logical} {MAX_MICROS // unit + 1} at offset 0 is out of range for a datetime (years 1 to 9999)"):
            decoder.decode(zigzag(MAX_MICROS // unit + 1))
        with raises(f"{logical} {-(2**63)} at offset 0 is out of range for a datetime (years 1 to 9999)"):
            decoder.decode(zigzag(-(2**63)))


def test_dates_and_times_at_their_edges() -> None:
    day = {"type": "int", "logicalType": "date"}
    for days in [1 - 719_163, -1, 0, 1, date.max.toordinal() - 719_163]:
        decodes_like_fastavro(day, zigzag(days))
    with raises(f"date {date.max.toordinal() - 719_162} at offset 0 is out of range for a date (years 1 to 9999)"):
        Decoder(json.dumps(day)).decode(zigzag(date.max.toordinal() - 719_162))
    for logical, day_length in [("time-millis", 86_400_000), ("time-micros", 86_400_000_000)]:
        schema = {"type": "int" if logical == "time-millis" else "long", "logicalType": logical}
        for n in [0, 1, 999, 1000, 59_999, 3_600_000, day_length - 1]:
            decodes_like_fastavro(schema, zigzag(n))
        for n in [-1, day_length]:
            with raises(f"{logical} {n} at offset 0 is not a time of day (0 to {day_length - 1})"):
                Decoder(json.dumps(schema)).decode(zigzag(n))


def test_blocks_with_byte_sizes_and_duplicate_map_keys() -> None:
    # A negative count is followed by the block's size in bytes (writers that support skipping).
    longs = {"type": "array", "items": "long"}
    data = zigzag(-2) + zigzag(2) + zigzag(1) + zigzag(-1) + zigzag(1) + zigzag(7) + zigzag(0)
    assert decodes_like_fastavro(longs, data) == [1, -1, 7]
    with raises("array block at offset 2 declares 3 bytes but its items take 2"):
        Decoder(json.dumps(longs)).decode(zigzag(-2) + zigzag(3) + zigzag(1) + zigzag(-1) + b"\x00" + zigzag(0))
    strings = {"type": "map", "values": "long"}
    entries = [("a", 1), ("b", 2), ("a", 3)]
    data = zigzag(3) + b"".join(avro_string(key) + zigzag(value) for key, value in entries) + b"\x00"
    assert list(decodes_like_fastavro(strings, data).items()) == [("a", 3), ("b", 2)]


def test_block_counts_are_checked_against_each_items_fewest_bytes() -> None:
    doubles = Decoder(json.dumps({"type": "array", "items": "double"}))
    assert doubles.decode(zigzag(2) + struct.pack("<dd", 1.5, -2.0) + b"\x00") == [1.5, -2.0]
    with raises("array block of 2 items at offset 0 cannot fit in the 15 bytes left"):
        doubles.decode(zigzag(2) + bytes(15))
    # A recursive record takes at least its long and its union's index: 2 bytes.
    node = record("Node", field("value", "long"), field("next", ["null", "Node"]))
    nodes = Decoder(json.dumps({"type": "array", "items": node}))
    assert nodes.decode(zigzag(2) + b"\x02\x00\x04\x00" + b"\x00") == [
        {"value": 1, "next": None},
        {"value": 2, "next": None},
    ]
    with raises("array block of 3 items at offset 0 cannot fit in the 5 bytes left"):
        nodes.decode(zigzag(3) + bytes(5))


def test_many_items_that_take_no_bytes_are_read_up_to_a_limit() -> None:
    nulls = Decoder(json.dumps({"type": "array", "items": "null"}))
    assert nulls.decode(zigzag(65_536) + b"\x00") == [None] * 65_536
    with raises(
        "array block of 65537 items at offset 0 is more than the 65536 items that take no bytes one datum may hold"
    ):
        nulls.decode(zigzag(65_537) + b"\x00")
    with raises("array block of 1 item at offset 3 is more than the 65536 items that take no bytes one datum may hold"):
        nulls.decode(zigzag(65_536) + zigzag(1) + b"\x00")


def test_recursion_is_limited_like_the_encoder() -> None:
    node = record("Node", field("next", ["null", "Node"]))
    encoder, decoder = Encoder(json.dumps(node)), Decoder(json.dumps(node))
    chain: dict[str, Any] = {"next": None}
    for _ in range(256):
        chain = {"next": chain}
    decodes_like_fastavro(node, encoder.encode(chain), decoder)  # as deep as the encoder writes
    with pytest.raises(ValueError, match=r"^field 'next\.next(\.next)*': value is nested more than 256 levels deep$"):
        decoder.decode(b"\x02" * 1000 + b"\x00")


def test_a_decoder_is_shared_across_threads() -> None:
    schema = load_schema("invoice.created")
    decoder = Decoder(json.dumps(schema))
    events = invoice_chain(40)
    encoded = [Encoder(json.dumps(schema)).encode(event) for event in events]

    def work() -> None:
        for _ in range(20):
            for data, event in zip(encoded, events, strict=True):
                assert decoder.decode(data) == event

    assert in_threads(work) == []


def in_threads(work: Callable[[], None], count: int = 4) -> list[BaseException]:
    """Run `work` in `count` threads at once; what each raised (nothing, when it is thread-safe)."""
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failures.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


# ---------------------------------------------------------------------------------------------------
# Malformed data: ValueError naming the field path


FLAT = record(
    "Flat",
    field("s", "string"),
    field("n", "int"),
    field("l", "long"),
    field("ok", "boolean"),
    field("maybe", ["null", "string"]),
    field("colour", COLOUR),
    field("raw", {"type": "fixed", "name": "F2", "size": 2}),
    field("price", decimal_type(4, 2)),
    field("at", TS_MILLIS),
    field("day", {"type": "int", "logicalType": "date"}),
    field("id", {"type": "string", "logicalType": "uuid"}),
    field(
        "lines",
        {
            "type": "array",
            "items": record("Line", field("qty", decimal_type(5, 2)), field("tags", {"type": "map", "values": "long"})),
        },
    ),
)
GOOD_FLAT = {
    "s": "ab",
    "n": 1,
    "l": 2,
    "ok": True,
    "maybe": "x",
    "colour": "BLUE",
    "raw": b"zz",
    "price": Decimal("1.50"),
    "at": datetime(2026, 1, 1, tzinfo=UTC),
    "day": date(2026, 1, 1),
    "id": "12345678-1234-5678-1234-567812345678",
    "lines": [{"qty": Decimal("1.00"), "tags": {}}, {"qty": Decimal("2.00"), "tags": {"k": 5}}],
}


FLAT_FIELDS = {
    f["name"]: Encoder(json.dumps(record("One", field(f["name"], f["type"])))).encode({f["name"]: GOOD_FLAT[f["name"]]})
    for f in FLAT["fields"]
}
LINE0 = b"\x02\x64\x00"  # qty 1.00 (unscaled 100 in one byte), tags {}


def flat(**parts: bytes) -> bytes:
    """GOOD_FLAT's encoding with the encodings of some fields replaced by raw bytes."""
    return b"".join(parts.get(name, encoded) for name, encoded in FLAT_FIELDS.items())


def line1(tags: bytes) -> bytes:
    return b"\x04\x00\xc8" + tags  # qty 2.00 (unscaled 200 in two bytes), then the tags given


CORRUPT: list[tuple[str, bytes, str]] = [
    (
        "string cut short",
        b"\x06ab",
        "field 's': string length 3 at offset 0 runs past the end of the datum (2 bytes left)",
    ),
    ("negative length", flat(s=b"\x03ab"), "field 's': negative string length -2 at offset 0"),
    (
        "absurd length",
        flat(s=zigzag(2**62) + b"ab"),
        "field 's': string length 4611686018427387904 at offset 0 runs past the end of the datum (73 bytes left)",
    ),
    (
        "invalid UTF-8",
        flat(s=b"\x04a\xff"),
        (
            "field 's': invalid UTF-8 in the string at offset 1: 'utf-8' codec can't decode byte 0xff in position 1: "
            "invalid start byte"
        ),
    ),
    (
        "UTF-8 of a surrogate",
        flat(s=b"\x06\xed\xa0\x80"),
        (
            "field 's': invalid UTF-8 in the string at offset 1: 'utf-8' codec can't decode byte 0xed in position 0: "
            "invalid continuation byte"
        ),
    ),
    (
        "int beyond 32 bits",
        flat(n=zigzag(2**31)),
        "field 'n': 2147483648 at offset 3 is out of range for Avro int (32-bit)",
    ),
    (
        "varint beyond 64 bits",
        flat(l=b"\xff" * 10 + b"\x01"),
        "field 'l': the varint at offset 4 does not fit in 64 bits",
    ),
    ("varint of 11 bytes", flat(l=b"\x80" * 11), "field 'l': the varint at offset 4 does not fit in 64 bits"),
    ("boolean 2", flat(ok=b"\x02"), "field 'ok': boolean byte 0x02 at offset 5 is neither 0 nor 1"),
    (
        "union index too big",
        flat(maybe=b"\x04"),
        "field 'maybe': union branch index 2 at offset 6 is out of range: the union has 2 branches",
    ),
    (
        "negative union index",
        flat(maybe=b"\x01\x02x"),
        "field 'maybe': union branch index -1 at offset 6 is out of range: the union has 2 branches",
    ),
    (
        "enum index too big",
        flat(colour=b"\x06"),
        "field 'colour': enum index 3 at offset 9 is out of range: enum t.Colour has 3 symbols",
    ),
    (
        "negative enum index",
        flat(colour=b"\x01"),
        "field 'colour': enum index -1 at offset 9 is out of range: enum t.Colour has 3 symbols",
    ),
    (
        "decimal beyond its precision",
        flat(price=b"\x04\x27\x10"),
        "field 'price': decimal at offset 12 has more than 4 digits (precision 4)",
    ),
    (
        "timestamp beyond year 9999",
        flat(at=zigzag(2**62)),
        (
            "field 'at': timestamp-millis 4611686018427387904 at offset 15 is out of range for a datetime "
            "(years 1 to 9999)"
        ),
    ),
    (
        "date before year 1",
        flat(day=zigzag(-(2**31))),
        "field 'day': date -2147483648 at offset 21 is out of range for a date (years 1 to 9999)",
    ),
    (
        "not a UUID",
        flat(id=avro_string("not-a-uuid")),
        "field 'id': 'not-a-uuid' is not a UUID: badly formed hexadecimal UUID string",
    ),
    (
        "array count beyond the input",
        flat(lines=zigzag(2**40) + LINE0),
        "field 'lines': array block of 1099511627776 items at offset 61 cannot fit in the 3 bytes left",
    ),
    (
        "negative block size",
        flat(lines=zigzag(-1) + zigzag(-4) + LINE0 + b"\x00"),
        "field 'lines': negative array block size -4 at offset 62",
    ),
    (
        "block size beyond the input",
        flat(lines=zigzag(-1) + zigzag(100) + LINE0 + b"\x00"),
        "field 'lines': array block size 100 at offset 62 runs past the end of the datum (4 bytes left)",
    ),
    (
        "array item cut short",
        flat(lines=b"\x04" + LINE0 + b"\x04\x00"),
        "field 'lines[1].qty': decimal length 2 at offset 65 runs past the end of the datum (1 byte left)",
    ),
    ("fixed cut short", flat()[:10] + b"z", "field 'raw': truncated datum: needs 2 bytes at offset 10, 1 left"),
    (
        "map value cut short",
        flat(lines=b"\x04" + LINE0 + line1(b"\x02\x02k\x80")),
        "field 'lines[1].tags{k}': truncated datum: the varint at offset 71 is cut off at offset 72",
    ),
    (
        "map key invalid",
        flat(lines=b"\x04" + LINE0 + line1(b"\x02\x02\xc0\x02\x00") + b"\x00"),
        (
            "field 'lines[1].tags': invalid UTF-8 in the map key at offset 70: 'utf-8' codec can't decode byte 0xc0 in "
            "position 0: invalid start byte"
        ),
    ),
    (
        "map count beyond the input",
        flat(lines=b"\x04" + LINE0 + line1(zigzag(2**20) + b"\x02k\x02\x00") + b"\x00"),
        "field 'lines[1].tags': map block of 1048576 items at offset 68 cannot fit in the 5 bytes left",
    ),
    (
        "missing end of array",
        flat(lines=b"\x02" + LINE0),
        "field 'lines': truncated datum: the varint at offset 65 is cut off at offset 65",
    ),
    ("trailing bytes", flat() + b"\x00\x00", "2 bytes left over after the datum, which ends at offset 74"),
    ("empty datum", b"", "field 's': truncated datum: the varint at offset 0 is cut off at offset 0"),
]


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, d, m in CORRUPT], ids=[name for name, _, _ in CORRUPT])
def test_malformed_data_is_a_value_error_naming_the_field(data: bytes, message: str) -> None:
    decoder = Decoder(json.dumps(FLAT))
    assert_same(decoder.decode(flat()), fastavro_decode(FLAT, flat()))
    with raises(message):
        decoder.decode(data)
    codec = AvroCodec(FLAT, 9)
    with pytest.raises(SchemaError, match=f"^{re.escape(f'cannot decode Avro datum ({len(data)} bytes): {message}')}$"):
        codec.decode_datum(data)
    with pytest.raises(SchemaError, match=re.escape(message)):
        codec.decode(codec.wire_header + data)


def test_fastavro_reads_some_of_these_as_something() -> None:
    # Why the decoder is stricter: fastavro ignores trailing bytes, wraps negative indexes, rounds decimals.
    assert fastavro_decode(FLAT, flat() + b"\x00\x00") == fastavro_decode(FLAT, flat())
    assert fastavro_decode(FLAT, flat(maybe=b"\x01\x02x"))["maybe"] == "x"
    assert fastavro_decode(FLAT, flat(colour=b"\x01"))["colour"] == "BLUE"
    assert fastavro_decode(FLAT, flat(price=b"\x04\x27\x10"))["price"] == Decimal("100.0")


def test_truncating_a_valid_datum_anywhere_is_an_error() -> None:
    schemas = [load_schema("invoice.created"), EVERYTHING, FLAT]
    for schema in schemas:
        text = json.dumps(schema)
        encoder, decoder, generator = Encoder(text), Decoder(text), Generator(schema)
        datums = [generator.value(RandomSource(SEED + n)) for n in range(3)]
        if schema is FLAT:
            datums.append(GOOD_FLAT)
        if schema["name"] == "InvoiceCreated":
            datums.extend(invoice_chain(3))
        for datum in datums:
            data = encoder.encode(datum)
            assert_same(decoder.decode(data), fastavro_decode(schema, data))
            for cut in range(len(data)):
                with pytest.raises(ValueError, match=r"truncated datum|runs past the end|cannot fit"):
                    decoder.decode(data[:cut])
            with pytest.raises(ValueError, match=r"^1 byte left over after the datum"):
                decoder.decode(data + b"\x00")


def test_random_corruption_never_crashes() -> None:
    # Any byte string either decodes to what fastavro reads or raises ValueError; nothing else.
    schema = load_schema("invoice.created")
    decoder = Decoder(json.dumps(schema))
    data = Encoder(json.dumps(schema)).encode(invoice(5, lines=3))

    def check(src: Source) -> None:
        corrupt = bytearray(data)
        for _ in range(src.integer(1, 4)):
            corrupt[src.integer(0, len(corrupt) - 1)] = src.integer(0, 255)
        try:
            value = decoder.decode(bytes(corrupt))
        except ValueError:
            return
        assert_same(value, fastavro_decode(schema, bytes(corrupt)))

    run_property(check)


def test_invalid_schemas_are_value_errors() -> None:
    with raises("invalid Avro schema: not valid JSON: EOF while parsing an object at line 1 column 1"):
        Decoder("{")
    with pytest.raises(SchemaError, match=r"^invalid Avro schema: top level: unknown type 'strng' \(not a primitive"):
        AvroCodec('"strng"', 1)


def test_a_codec_of_a_non_record_schema_refuses_to_decode() -> None:
    codec = AvroCodec({"type": "array", "items": "long"}, 1)
    with pytest.raises(SchemaError, match="is not a record schema"):
        codec.decode_datum(b"\x00")
