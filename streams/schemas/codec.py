"""Avro codec for one writer schema in the Confluent wire format (magic 0, 4-byte schema id, datum).

Encoding converts logical types (decimal, timestamp-millis, ...) in our own compiled pass, then hands
fastavro a schema stripped of them: the bytes are identical and fastavro's slow logical path is skipped.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import validate

from streams.errors import SchemaError

MAGIC = 0
HEADER = struct.Struct(">bI")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
ONE_US = timedelta(microseconds=1)

Converter = Callable[[Any], Any]


class EncodeError(SchemaError):
    """A datum does not fit the schema; the message names the field path."""


class AvroCodec:
    """Encode and decode one schema; safe to share, holds no per-call state."""

    def __init__(self, schema: Mapping[str, Any] | str, schema_id: int) -> None:
        raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
        self.schema_id = schema_id
        self.schema: dict[str, Any] = raw
        self._named: dict[str, Any] = {}
        self._full = parse_schema(raw, _write_hint=False)
        converter = _compile(raw, "", self._named, raw.get("namespace", ""))
        self._convert: Converter | None = converter
        self._physical = parse_schema(_strip_logical(raw), _write_hint=False)
        self._header = HEADER.pack(MAGIC, schema_id)
        self._fields = frozenset(f["name"] for f in raw.get("fields", ()))

    def encode(self, datum: Mapping[str, Any]) -> bytes:
        """The wire-format bytes of `datum`; raises EncodeError naming the field that is wrong."""
        extra = datum.keys() - self._fields
        if extra:
            raise EncodeError(f"unknown field(s) {sorted(extra)}; the schema has {sorted(self._fields)}")
        buffer = io.BytesIO()
        buffer.write(self._header)
        try:
            prepared = self._convert(datum) if self._convert is not None else datum
            schemaless_writer(buffer, self._physical, prepared)
        except EncodeError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise EncodeError(self._explain(datum, exc)) from exc
        return buffer.getvalue()

    def encode_datum(self, datum: Mapping[str, Any]) -> bytes:
        """The Avro datum alone (no wire header)."""
        return self.encode(datum)[HEADER.size:]

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode wire-format bytes written with this codec's schema id."""
        _, schema_id = split_header(data)
        if schema_id != self.schema_id:
            raise SchemaError(f"record has schema id {schema_id}, this codec reads id {self.schema_id}")
        return self.decode_datum(data[HEADER.size:])

    def decode_datum(self, datum: bytes) -> dict[str, Any]:
        try:
            result = schemaless_reader(io.BytesIO(datum), self._full, None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError, TypeError) as exc:
            raise SchemaError(f"cannot decode Avro datum ({len(datum)} bytes): {exc}") from exc
        if not isinstance(result, dict):
            raise SchemaError(f"schema {self.schema.get('name')} is not a record schema")
        return result

    def _explain(self, datum: Mapping[str, Any], exc: Exception) -> str:
        # Only on failure: fastavro's validator names the field path, the fast writer does not.
        try:
            validate(datum, self._full, raise_errors=True)
        except Exception as detail:  # noqa: BLE001 - any validator complaint is the explanation
            return f"payload does not match schema {self.schema.get('name')}: {detail}"
        return f"payload does not match schema {self.schema.get('name')}: {exc}"


def split_header(data: bytes) -> tuple[int, int]:
    """(magic, schema id) of a Confluent wire-format record; SchemaError when it is not one."""
    if len(data) < HEADER.size:
        raise SchemaError(f"record of {len(data)} bytes is shorter than the 5-byte Confluent header")
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SchemaError(f"unknown magic byte {magic}; Confluent wire format starts with 0")
    return magic, schema_id


def decimal_to_bytes(value: Any, precision: int, scale: int, path: str) -> bytes:
    """Avro decimal bytes: big-endian two's complement of the unscaled value, as fastavro writes it."""
    if not isinstance(value, Decimal):
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        else:
            raise EncodeError(f"field '{path}': expected a Decimal, got {type(value).__name__} {value!r}")
    try:
        scaled = value.scaleb(scale)
        unscaled = int(scaled)
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise EncodeError(f"field '{path}': {value!r} is not a finite decimal") from exc
    if unscaled != scaled:
        raise EncodeError(f"field '{path}': {value} has more than {scale} decimal places (scale {scale})")
    if abs(unscaled) >= 10**precision:
        raise EncodeError(f"field '{path}': {value} has more than {precision} digits (precision {precision})")
    return unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)


def _timestamp(unit: timedelta, path: str) -> Converter:
    def convert(value: Any) -> int:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise EncodeError(f"field '{path}': datetime {value} has no timezone; use an aware datetime")
            return (value - EPOCH) // unit
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise EncodeError(f"field '{path}': expected a datetime, got {type(value).__name__} {value!r}")

    return convert


def _compile(schema: Any, path: str, named: dict[str, Any], namespace: str) -> Converter | None:
    """A function that rewrites logical-type values to their physical form; None when nothing to do."""
    if isinstance(schema, str):
        return _compile(named[schema], path, named, namespace) if schema in named else None
    if isinstance(schema, list):
        return _compile_union(schema, path, named, namespace)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
        return lambda value: decimal_to_bytes(value, precision, scale, path)
    if logical in ("timestamp-millis", "local-timestamp-millis") and kind == "long":
        return _timestamp(ONE_MS, path)
    if logical in ("timestamp-micros", "local-timestamp-micros") and kind == "long":
        return _timestamp(ONE_US, path)
    if kind == "record":
        return _compile_record(schema, path, named, namespace)
    if kind == "array":
        item = _compile(schema["items"], f"{path}[]", named, namespace)
        if item is None:
            return None
        return lambda values: [item(value) for value in values]
    if kind == "map":
        value_converter = _compile(schema["values"], f"{path}{{}}", named, namespace)
        if value_converter is None:
            return None
        return lambda values: {k: value_converter(v) for k, v in values.items()}
    if kind in ("enum", "fixed"):
        _register(schema, named, namespace)
    return None


def _compile_record(schema: dict[str, Any], path: str, named: dict[str, Any], namespace: str) -> Converter | None:
    namespace = _register(schema, named, namespace)
    converters: list[tuple[str, Converter]] = []
    for field in schema["fields"]:
        child = f"{path}.{field['name']}" if path else field["name"]
        converter = _compile(field["type"], child, named, namespace)
        if converter is not None:
            converters.append((field["name"], converter))
    if not converters:
        return None

    def convert(record: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(record)
        for name, field_converter in converters:
            value = out.get(name)
            if value is not None:
                out[name] = field_converter(value)
        return out

    return convert


def _compile_union(branches: list[Any], path: str, named: dict[str, Any], namespace: str) -> Converter | None:
    converters = [c for c in (_compile(b, path, named, namespace) for b in branches if b != "null") if c]
    non_null = [b for b in branches if b != "null"]
    if not converters:
        return None
    if len(non_null) == 1 and len(converters) == 1:
        return converters[0]  # the common optional-field union: None is skipped by the record converter
    raise SchemaError(f"field '{path}': unions of several logical or record types are not supported yet")


def _register(schema: dict[str, Any], named: dict[str, Any], namespace: str) -> str:
    """Record a named type under its short and full names; returns the namespace children inherit."""
    name = schema["name"]
    own = schema.get("namespace", namespace if "." not in name else name.rsplit(".", 1)[0])
    named[name.rsplit(".", 1)[-1]] = schema
    named[name if "." in name else f"{own}.{name}" if own else name] = schema
    return str(own)


def _strip_logical(schema: Any) -> Any:
    """The same schema with logical-type annotations removed (the physical types stay)."""
    if isinstance(schema, list):
        return [_strip_logical(branch) for branch in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and schema.get("type") in ("bytes", "long", "int", "string", "fixed"):
            stripped = {k: v for k, v in schema.items() if k not in ("logicalType", "precision", "scale")}
            return stripped if schema["type"] == "fixed" else schema["type"]
        return {key: _strip_logical(value) for key, value in schema.items()}
    return schema
