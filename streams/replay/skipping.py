"""Walking Avro binary data without decoding it: where a datum ends, and the fields of an evidence record.

Verification needs record boundaries inside container blocks, not Python values; skipping is ~10x cheaper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EnvelopeFields", "Skip", "read_envelope", "read_long", "skipper"]

Skip = Callable[[bytes, int], int]  # (data, position) -> position after the datum


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint at `pos`: (value, position after it); IndexError past the end of `data`."""
    byte = data[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos + 1
        shift += 7


def _skip_varint(data: bytes, pos: int) -> int:
    while data[pos] >= 0x80:
        pos += 1
    return pos + 1


def _skip_bytes(data: bytes, pos: int) -> int:
    size, pos = read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise IndexError("a length runs past the end of the block")
    return end


def skipper(schema: Any, named: dict[str, Skip] | None = None, namespace: str = "") -> Skip:
    """A function that steps over one datum of `schema` (a parsed-JSON Avro schema)."""
    named = {} if named is None else named
    if isinstance(schema, str):
        fixed = _PRIMITIVES.get(schema)
        if fixed is not None:
            return fixed
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"

        def skip_named(data: bytes, pos: int) -> int:  # looked up when called: a type may contain itself
            return named[full if full in named else schema](data, pos)

        return skip_named
    if isinstance(schema, list):
        branches = [skipper(branch, named, namespace) for branch in schema]

        def skip_union(data: bytes, pos: int) -> int:
            index, pos = read_long(data, pos)
            return branches[index](data, pos)

        return skip_union
    kind = schema["type"]
    if kind in ("record", "error", "enum", "fixed"):
        name = schema["name"]
        space = schema.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
        full = name if "." in name else f"{space}.{name}" if space else name
        skip = _named_skipper(schema, named, space)
        named[full] = named[name.rsplit(".", 1)[-1]] = skip
        return skip
    if kind in ("array", "map"):
        item = skipper(schema["items"] if kind == "array" else schema["values"], named, namespace)
        return _blocks(item, keyed=kind == "map")
    return skipper(kind, named, namespace)  # {"type": "long", "logicalType": ...} and the like


def _named_skipper(schema: dict[str, Any], named: dict[str, Skip], space: str) -> Skip:
    kind = schema["type"]
    if kind == "enum":
        return _skip_varint
    if kind == "fixed":
        size = int(schema["size"])
        return lambda _data, pos: pos + size
    fields = [skipper(field["type"], named, space) for field in schema["fields"]]

    def skip_record(data: bytes, pos: int) -> int:
        for field in fields:
            pos = field(data, pos)
        return pos

    return skip_record


def _blocks(item: Skip, *, keyed: bool) -> Skip:
    def skip_blocks(data: bytes, pos: int) -> int:
        while True:
            count, pos = read_long(data, pos)
            if count == 0:
                return pos
            if count < 0:  # a block that states its size can be jumped over
                size, pos = read_long(data, pos)
                pos += size
                continue
            for _ in range(count):
                if keyed:
                    pos = _skip_bytes(data, pos)
                pos = item(data, pos)

    return skip_blocks


_PRIMITIVES: dict[str, Skip] = {
    "null": lambda _data, pos: pos,
    "boolean": lambda _data, pos: pos + 1,
    "int": _skip_varint,
    "long": _skip_varint,
    "float": lambda _data, pos: pos + 4,
    "double": lambda _data, pos: pos + 8,
    "bytes": _skip_bytes,
    "string": _skip_bytes,
}


@dataclass(frozen=True)
class EnvelopeFields:
    """Where the parts of one evidence record lie in its block: the canonical prefix, then the value."""

    topic: str
    partition: int
    offset: int
    prefix_end: int  # the canonical prefix is data[start:prefix_end]
    schema_id: int | None  # None in records-raw.avro, whose records are the canonical encoding itself
    value_start: int | None  # None: the value is null
    end: int


def read_envelope(data: bytes, pos: int, value: Skip | None) -> EnvelopeFields:
    """The evidence record at `pos`; `value` skips the writer-schema datum (None: a raw-file record)."""
    size, at = read_long(data, pos)
    topic = data[at : at + size].decode()
    partition, at = read_long(data, at + size)
    offset, at = read_long(data, at)
    at = _skip_varint(data, at)  # timestamp
    branch, at = read_long(data, at)
    if branch:
        at = _skip_bytes(data, at)
    while True:  # headers
        count, at = read_long(data, at)
        if count == 0:
            break
        if count < 0:
            size, at = read_long(data, at)
            at += size
            continue
        for _ in range(count):
            at = _skip_bytes(data, at)
            branch, at = read_long(data, at)
            if branch:
                at = _skip_bytes(data, at)
    prefix_end = at
    schema_id = None
    if value is not None:
        schema_id, at = read_long(data, at)
    branch, at = read_long(data, at)
    if branch == 0:
        return EnvelopeFields(topic, partition, offset, prefix_end, schema_id, None, at)
    start = at
    end = _skip_bytes(data, at) if value is None else value(data, at)
    if end > len(data):
        raise IndexError("a record runs past the end of its block")
    return EnvelopeFields(topic, partition, offset, prefix_end, schema_id, start, end)
