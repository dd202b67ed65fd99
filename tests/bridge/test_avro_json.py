"""Tests for streams.bridge.avro_json: the same JSON as fastavro's objects through kombu's encoder."""

from __future__ import annotations

import io
import json
import random
import string
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streams.bridge.avro_json import FieldReader
from streams.bridge.celery_wire import kombu_json_default
from streams.errors import SchemaError

SCHEMAS = sorted((Path(__file__).resolve().parents[2] / "schemas").glob("*.avsc"))
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")

# Every type and logical type fastavro reads, with unions, nesting, blocks and a recursive record.
EVERYTHING = {
    "type": "record", "name": "Everything", "namespace": "t",
    "fields": [
        *({"name": f"p_{kind}", "type": kind} for kind in PRIMITIVES),
        {"name": "money", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}},
        {"name": "tiny", "type": {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 12}},
        {"name": "whole", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5}},
        {"name": "fixed_money", "type": {"type": "fixed", "name": "F8", "size": 8, "logicalType": "decimal",
                                         "precision": 18, "scale": 2}},
        {"name": "raw_fixed", "type": {"type": "fixed", "name": "F3", "size": 3}},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "t_ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "t_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "odd_logical", "type": {"type": "string", "logicalType": "something-else"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "maybe", "type": ["null", "string", "Color", "long"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "totals", "type": {"type": "map", "values": ["null", {"type": "bytes", "logicalType": "decimal",
                                                                       "precision": 10, "scale": 2}]}},
        {"name": "node", "type": {"type": "record", "name": "Node", "fields": [
            {"name": "label", "type": "string"}, {"name": "next", "type": ["null", "Node"]}]}},
        {"name": "again", "type": "Node"},
        {"name": "colors", "type": {"type": "array", "items": "Color"}},
    ],
}


class Values:
    """Seeded random values for a parsed schema, the kinds fastavro writes."""

    def __init__(self, named: dict[str, Any], seed: int) -> None:
        self.named = named
        self.rng = random.Random(seed)

    def text(self) -> str:
        alphabet = string.ascii_letters + ' "\\\n\t/é€😀'
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.choice((0, 1, 5, 70, 200))))

    def decimal(self, precision: int, scale: int) -> Decimal:
        digits = self.rng.randint(1, precision)
        unscaled = self.rng.choice((0, self.rng.randint(-(10**digits) + 1, 10**digits - 1)))
        return Decimal(unscaled).scaleb(-scale)

    def value(self, schema: Any, depth: int = 0) -> Any:  # noqa: PLR0912 - one case per type
        rng = self.rng
        if isinstance(schema, list):
            branches = [b for b in schema if depth < 3 or b == "null"] or schema
            return self.value(rng.choice(branches), depth + 1)
        if isinstance(schema, str) and schema in self.named:
            return self.value(self.named[schema], depth)
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if logical == "decimal":
            return self.decimal(schema["precision"], schema.get("scale", 0))
        if logical in ("timestamp-millis", "timestamp-micros"):
            step = timedelta(milliseconds=1) if logical == "timestamp-millis" else timedelta(microseconds=1)
            return datetime(2026, 1, 1, tzinfo=UTC) + rng.randint(-10**12, 10**12) * step
        if logical == "local-timestamp-millis":
            return datetime(2026, 1, 1) + timedelta(milliseconds=rng.randint(-10**11, 10**11))  # noqa: DTZ001
        if logical == "date":
            return date(2026, 1, 1) + timedelta(days=rng.randint(-40_000, 40_000))
        if logical in ("time-millis", "time-micros"):
            micros = rng.randint(0, 86_399_999) * 1000 if logical == "time-millis" else rng.randint(0, 86_399_999_999)
            return (datetime(2026, 1, 1) + timedelta(microseconds=micros)).time()  # noqa: DTZ001
        if logical == "uuid":
            return uuid.UUID(int=rng.getrandbits(128))
        simple = {
            "null": lambda: None, "boolean": lambda: rng.random() < 0.5,
            "int": lambda: rng.randint(-(2**31), 2**31 - 1), "long": lambda: rng.randint(-(2**63), 2**63 - 1),
            "float": lambda: rng.uniform(-1e6, 1e6), "double": lambda: rng.uniform(-1e300, 1e300),
            "bytes": lambda: rng.choice((b"", b"plain text", bytes(rng.getrandbits(8) for _ in range(9)))),
            "string": self.text,
        }
        if kind in simple:
            return simple[kind]()
        if kind in ("record", "error"):
            return {f["name"]: self.value(f["type"], depth + 1) for f in schema["fields"]}
        if kind == "enum":
            return rng.choice(schema["symbols"])
        if kind == "fixed":
            return bytes(rng.getrandbits(8) for _ in range(schema["size"]))
        if kind == "array":
            return [self.value(schema["items"], depth + 1) for _ in range(rng.choice((0, 1, 3, 70)))]
        if kind == "map":
            return {self.text() + str(i): self.value(schema["values"], depth + 1) for i in range(rng.choice((0, 2)))}
        return self.value(kind, depth)


def expected_json(parsed: dict[str, Any], datum: bytes, wanted: set[str] | None) -> bytes:
    """What the bridge used to put in a message: fastavro's objects through kombu's typed JSON."""
    full = schemaless_reader(io.BytesIO(datum), parsed, None)
    assert isinstance(full, dict)
    chosen = {k: v for k, v in full.items() if wanted is None or k in wanted}
    return orjson.dumps(chosen, default=kombu_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def samples(schema: dict[str, Any], count: int, seed: int) -> tuple[dict[str, Any], list[bytes]]:
    named: dict[str, Any] = {}
    parsed = parse_schema(schema, named_schemas=named)
    values = Values(named, seed)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed, values.value(parsed))
        out.append(buffer.getvalue())
    return parsed, out


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_every_catalog_schema_reads_as_fastavro_then_kombu_json(path: Path) -> None:
    schema = json.loads(path.read_text())
    parsed, data = samples(schema, 300, seed=len(path.name))
    names = [f["name"] for f in schema["fields"]]
    reader, some = FieldReader(schema), set(names[1::2])
    partial = FieldReader(path.read_text(), some)
    for datum in data:
        assert orjson.dumps(reader.read(datum)) == expected_json(parsed, datum, None)
        assert orjson.dumps(partial.read(b"\x00junk" + datum, 5)) == expected_json(parsed, datum, some)


@pytest.mark.parametrize("seed", range(4))
def test_every_avro_type_reads_as_fastavro_then_kombu_json(seed: int) -> None:
    parsed, data = samples(EVERYTHING, 300, seed)
    names = [f["name"] for f in EVERYTHING["fields"]]
    for wanted in (None, set(names[seed::3])):
        reader = FieldReader(EVERYTHING, wanted)
        for datum in data:
            assert orjson.dumps(reader.read(datum)) == expected_json(parsed, datum, wanted)


def test_decimal_text_matches_str_of_decimal_at_the_edges() -> None:
    schema = {"type": "record", "name": "D", "fields": [
        {"name": "a", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}},
        {"name": "b", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 9}}]}
    reader = FieldReader(schema)
    for a in ("0.00", "0.05", "-0.05", "99.99", "-99.99", "1.00", "-1.5"):
        for b in ("0E-9", "0.000000001", "-0.000000100", "123.000000000", "0.000012345"):
            buffer = io.BytesIO()
            parsed = parse_schema(schema)
            schemaless_writer(buffer, parsed, {"a": Decimal(a), "b": Decimal(b)})
            assert orjson.dumps(reader.read(buffer.getvalue())) == expected_json(parsed, buffer.getvalue(), None)
    # 5 digits in a precision-4 field (a writer that did not check): fastavro's context rounds it
    datum = b"\x04" + (12345).to_bytes(2, "big", signed=True) + b"\x00"
    assert reader.read(datum)["a"] == {"__type__": "decimal", "__value__": "123.4"}
    assert orjson.dumps(reader.read(datum)) == expected_json(parse_schema(schema), datum, None)


@pytest.mark.parametrize(("datum", "problem"), [
    (b"", "IndexError"),
    (b"\x0aab", "runs past the end"),  # a 5-byte string with 2 bytes left
    (b"\x03", "runs past the end"),  # a negative length
    (b"\x02\xff", "UnicodeDecodeError"),
    (b"\xff" * 11, "varint longer than 10 bytes"),
])
def test_malformed_datums_are_schema_errors(datum: bytes, problem: str) -> None:
    reader = FieldReader({"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]})
    with pytest.raises(SchemaError, match=problem):
        reader.read(datum)


def test_bad_enum_and_union_indexes_and_non_records_are_schema_errors() -> None:
    reader = FieldReader({"type": "record", "name": "E", "fields": [
        {"name": "e", "type": {"type": "enum", "name": "X", "symbols": ["A"]}}]})
    with pytest.raises(SchemaError, match="enum index 1 is not one of the 1 symbols"):
        reader.read(b"\x02")
    union = FieldReader({"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null", "long"]}]})
    with pytest.raises(SchemaError, match="union index -1"):
        union.read(b"\x01")
    with pytest.raises(SchemaError, match="is not a record schema"):
        FieldReader('"string"')
