"""Skipping Avro datums lands exactly where fastavro's encoding of them ends, for every kind of type."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from streams.demo.samples import invoice
from streams.replay.skipping import read_long, skipper
from tests.replay.fakes import INVOICE_SCHEMA

KINDS: dict[str, Any] = {
    "type": "record",
    "name": "Node",
    "namespace": "t",
    "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "raw", "type": "bytes"},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "x", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "again", "type": "Four"},
        {"name": "children", "type": {"type": "array", "items": "Node"}},  # recursive
    ],
}


def encode(schema: Any, datum: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), datum)
    return buffer.getvalue()


def node(depth: int) -> dict[str, Any]:
    return {
        "b": True,
        "i": -5,
        "f": 1.5,
        "d": 2.25,
        "s": "ünï",
        "raw": b"\x00\x01",
        "e": "GREEN",
        "x": b"abcd",
        "m": {"k": None, "l": 2**40},
        "again": b"wxyz",
        "children": [node(depth - 1)] * 2 if depth else [],
    }


@pytest.mark.parametrize(
    ("schema", "datum"),
    [
        (KINDS, node(3)),
        (INVOICE_SCHEMA, invoice(3, lines=5)),
        ("long", -(2**63)),
        (["null", "string"], "x" * 300),
    ],
)
def test_skipping_ends_where_the_datum_ends(schema: Any, datum: Any) -> None:
    data = encode(schema, datum) + b"trailing"
    assert skipper(schema)(data, 0) == len(data) - len(b"trailing")


def test_blocks_with_a_byte_size_are_jumped_over() -> None:
    items = encode("long", 7) + encode("long", 300)
    data = encode("long", -2) + encode("long", len(items)) + items + b"\x00"  # count -2, then the block's size
    assert skipper({"type": "array", "items": "long"})(data, 0) == len(data)


def test_a_truncated_datum_raises() -> None:
    data = encode(INVOICE_SCHEMA, invoice(1))
    with pytest.raises(IndexError):
        skipper(INVOICE_SCHEMA)(data[:-7], 0)


def test_read_long() -> None:
    for n in (0, -1, 63, -64, 64, 2**40, -(2**63)):
        assert read_long(encode("long", n) + b"\x01", 0) == (n, len(encode("long", n)))
