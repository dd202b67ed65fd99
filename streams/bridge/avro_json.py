"""Reading only the fields a route needs from an Avro datum, straight into kombu's JSON values.

A task message carries its arguments as JSON (kombu's typed form for Decimal, datetime, bytes, ...), so
the bridge never needs Python objects for them: this reader skips the fields no route reads, turns a
decimal's unscaled bytes into its text and a timestamp into its ISO text, and gives the same JSON that
`orjson.dumps(fastavro_value, default=kombu_json_default)` gives (the tests compare both on every schema).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context
from typing import Any

from fastavro import parse_schema

from streams.bridge.celery_wire import kombu_json_default
from streams.errors import SchemaError

__all__ = ["FieldReader"]

# A reader returns (value, position after it); a skipper only the position.
Reader = Callable[[bytes, int], tuple[Any, int]]
Skipper = Callable[[bytes, int], int]

_EPOCH_NAIVE = datetime(1970, 1, 1, tzinfo=UTC).replace(tzinfo=None)
_DAYS_SHIFT = date(1970, 1, 1).toordinal()
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})
# What a malformed datum raises on its way through these readers.
DECODE_ERRORS = (IndexError, ValueError, UnicodeDecodeError, OverflowError, struct.error, KeyError)


class _TruncatedError(ValueError):
    pass


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint (Avro int and long)."""
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n, shift = b & 0x7F, 7
    pos += 1
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _span(data: bytes, pos: int) -> tuple[int, int]:
    """Start and end of a length-prefixed value (bytes, string)."""
    size, pos = read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise _TruncatedError(f"a value of {size} bytes at byte {pos} runs past the end ({len(data)} bytes)")
    return pos, end


def _skip_span(data: bytes, pos: int) -> int:
    return _span(data, pos)[1]


def _read_null(_: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _skip_null(_: bytes, pos: int) -> int:
    return pos


def _read_boolean(data: bytes, pos: int) -> tuple[bool, int]:
    return data[pos] != 0, pos + 1


def _skip_one(data: bytes, pos: int) -> int:
    if pos >= len(data):
        raise _TruncatedError(f"a boolean at byte {pos} runs past the end")
    return pos + 1


def _skip_long(data: bytes, pos: int) -> int:
    return read_long(data, pos)[1]


def _fixed_width(unpack: Callable[[bytes, int], tuple[Any, ...]], size: int) -> tuple[Reader, Skipper]:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return unpack(data, pos)[0], pos + size

    def skip(data: bytes, pos: int) -> int:
        if pos + size > len(data):
            raise _TruncatedError(f"a {size}-byte value at byte {pos} runs past the end")
        return pos + size

    return read, skip


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    b = data[pos]
    if b < 0x80:  # short strings (the usual case): inline the one-byte length
        size = (b >> 1) ^ -(b & 1)
        pos += 1
        end = pos + size
        if size < 0 or end > len(data):
            raise _TruncatedError(f"a string of {size} bytes at byte {pos} runs past the end")
        return data[pos:end].decode(), end
    start, end = _span(data, pos)
    return data[start:end].decode(), end


def _bytes_json(raw: bytes) -> Any:
    return kombu_json_default(raw)


def _read_bytes(data: bytes, pos: int) -> tuple[Any, int]:
    start, end = _span(data, pos)
    return _bytes_json(data[start:end]), end


def _decimal_text(unscaled: int, precision: int, scale: int, context: Context) -> str:
    """str() of the Decimal fastavro reads (create_decimal then scaleb in a context of `precision`)."""
    digits = str(-unscaled if unscaled < 0 else unscaled)
    # Plain notation without rounding: what str(Decimal) prints when the exponent is -scale <= 0 and the
    # adjusted exponent is at least -6; anything else goes the way fastavro goes.
    if scale >= 0 and len(digits) <= precision and len(digits) - 1 - scale >= -6:
        sign = "-" if unscaled < 0 else ""
        if scale == 0:
            return sign + digits
        if len(digits) > scale:
            return f"{sign}{digits[:-scale]}.{digits[-scale:]}"
        return f"{sign}0.{digits.rjust(scale, '0')}"
    return str(context.create_decimal(unscaled).scaleb(-scale, context))


def _decimal(schema: Mapping[str, Any], size: int | None) -> Reader:
    precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
    context = Context(prec=precision)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        if size is None:
            b = data[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                length, pos = read_long(data, pos)
        else:
            length = size
        end = pos + length
        if length < 0 or end > len(data):
            raise _TruncatedError(f"a decimal of {length} bytes at byte {pos} runs past the end")
        unscaled = int.from_bytes(data[pos:end], "big", signed=True)
        return {"__type__": "decimal", "__value__": _decimal_text(unscaled, precision, scale, context)}, end

    return read


def _timestamp(unit_us: int, *, aware: bool) -> Reader:
    # An aware UTC datetime prints as the naive one plus "+00:00"; the naive one prints faster.
    suffix = "+00:00" if aware else ""

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value, pos = read_long(data, pos)
        moment = _EPOCH_NAIVE + timedelta(microseconds=value * unit_us)
        return {"__type__": "datetime", "__value__": moment.isoformat() + suffix}, pos

    return read


def _read_date(data: bytes, pos: int) -> tuple[Any, int]:
    value, pos = read_long(data, pos)
    return {"__type__": "date", "__value__": date.fromordinal(value + _DAYS_SHIFT).isoformat()}, pos


def _time_of_day(per_second: int) -> Reader:
    # fastavro's arithmetic, float divisions included, so odd values read the same
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value, pos = read_long(data, pos)
        hours = int(value / (3600 * per_second))
        minutes = int(value / (60 * per_second)) % 60
        seconds = int(value / per_second) % 60
        micros = int(value % per_second) * (1_000_000 // per_second)
        return {"__type__": "time", "__value__": time(hours, minutes, seconds, micros).isoformat()}, pos

    return read


class _Compiler:
    """Turns a parsed writer schema (named types by full name) into readers and skippers."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self._readers: dict[str, Reader] = {}
        self._skippers: dict[str, Skipper] = {}

    def reader(self, schema: Any) -> Reader:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _primitive(schema)[0]
            return self._named_reader(schema)
        if isinstance(schema, list):
            return _union([self.reader(branch) for branch in schema])
        kind = schema["type"]
        logical = schema.get("logicalType")
        special = None if logical is None else _logical(kind, logical, schema)
        if special is not None:
            return special
        if kind in _PRIMITIVES:
            return _primitive(kind)[0]
        if kind in _NAMED_KINDS:
            return self._named_reader(schema["name"], schema)
        if kind == "array":
            return _array(self.reader(schema["items"]))
        if kind == "map":
            return _map(self.reader(schema["values"]))
        if isinstance(kind, (str, list, dict)):  # {"type": "string"}, {"type": "Name"}, {"type": [...]}
            return self.reader(kind)
        raise SchemaError(f"cannot read Avro type {kind!r}")

    def skipper(self, schema: Any) -> Skipper:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _primitive(schema)[1]
            return self._named_skipper(schema)
        if isinstance(schema, list):
            skippers = [self.skipper(branch) for branch in schema]
            return lambda data, pos: _union_skip(skippers, data, pos)
        kind = schema["type"]
        if kind in _PRIMITIVES:
            return _primitive(kind)[1]
        if kind in _NAMED_KINDS:
            return self._named_skipper(schema["name"], schema)
        if kind == "array":
            items = self.skipper(schema["items"])
            return lambda data, pos: _blocks_skip(data, pos, items, None)
        if kind == "map":
            values = self.skipper(schema["values"])
            return lambda data, pos: _blocks_skip(data, pos, values, _skip_span)
        if isinstance(kind, (str, list, dict)):
            return self.skipper(kind)
        raise SchemaError(f"cannot read Avro type {kind!r}")

    def _named_reader(self, name: str, schema: Mapping[str, Any] | None = None) -> Reader:
        if name not in self._readers:
            definition = self._definition(name, schema)
            # A forwarding placeholder first, so a recursive type's fields can refer to the type itself.
            self._readers[name] = _forward(self._readers, name)
            kind = definition["type"]
            if kind == "enum":
                self._readers[name] = _enum(definition)
            elif kind == "fixed":
                self._readers[name] = self._fixed_reader(definition)
            else:
                self._readers[name] = _record([(f["name"], self.reader(f["type"])) for f in definition["fields"]])
        return self._readers[name]

    def _named_skipper(self, name: str, schema: Mapping[str, Any] | None = None) -> Skipper:
        if name not in self._skippers:
            definition = self._definition(name, schema)
            self._skippers[name] = _forward(self._skippers, name)
            kind = definition["type"]
            if kind == "enum":
                self._skippers[name] = _skip_long
            elif kind == "fixed":
                self._skippers[name] = _fixed_skipper(int(definition["size"]))
            else:
                fields = [self.skipper(f["type"]) for f in definition["fields"]]
                self._skippers[name] = lambda data, pos: _record_skip(fields, data, pos)
        return self._skippers[name]

    def _definition(self, name: str, schema: Mapping[str, Any] | None) -> Mapping[str, Any]:
        definition: Mapping[str, Any] | None = self.named.get(name, schema)
        if definition is None:
            raise SchemaError(f"unknown Avro type {name!r}")
        return definition

    def _fixed_reader(self, schema: Mapping[str, Any]) -> Reader:
        logical = schema.get("logicalType")
        special = None if logical is None else _logical("fixed", logical, schema)
        if special is not None:
            return special
        skip = _fixed_skipper(int(schema["size"]))

        def read(data: bytes, pos: int) -> tuple[Any, int]:
            end = skip(data, pos)
            return _bytes_json(data[pos:end]), end

        return read


def _forward(table: dict[str, Any], name: str) -> Any:
    """Calls whatever `table[name]` is when called (a recursive type is compiled after its references)."""

    def call(*args: Any) -> Any:
        return table[name](*args)

    return call


def _primitive(kind: str) -> tuple[Reader, Skipper]:
    if kind == "null":
        return _read_null, _skip_null
    if kind == "boolean":
        return _read_boolean, _skip_one
    if kind in ("int", "long"):
        return read_long, _skip_long
    if kind == "float":
        return _fixed_width(_FLOAT.unpack_from, 4)
    if kind == "double":
        return _fixed_width(_DOUBLE.unpack_from, 8)
    if kind == "bytes":
        return _read_bytes, _skip_span
    return _read_string, _skip_span


def _fixed_skipper(size: int) -> Skipper:
    def skip(data: bytes, pos: int) -> int:
        if pos + size > len(data):
            raise _TruncatedError(f"a fixed of {size} bytes at byte {pos} runs past the end")
        return pos + size

    return skip


def _logical(kind: str, logical: str, schema: Mapping[str, Any]) -> Reader | None:
    """The logical types fastavro reads; others (uuid included, and malformed ones) read as their base type."""
    if logical == "decimal" and kind in ("bytes", "fixed") and "precision" in schema:
        return _decimal(schema, int(schema["size"]) if kind == "fixed" else None)
    if kind == "long" and logical in ("timestamp-millis", "local-timestamp-millis"):
        return _timestamp(1000, aware=logical == "timestamp-millis")
    if kind == "long" and logical in ("timestamp-micros", "local-timestamp-micros"):
        return _timestamp(1, aware=logical == "timestamp-micros")
    if kind == "int" and logical == "date":
        return _read_date
    if kind == "int" and logical == "time-millis":
        return _time_of_day(1000)
    if kind == "long" and logical == "time-micros":
        return _time_of_day(1_000_000)
    return None


def _record(fields: list[tuple[str, Reader]]) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        out: dict[str, Any] = {}
        for name, field_reader in fields:
            out[name], pos = field_reader(data, pos)
        return out, pos

    return read


def _enum(schema: Mapping[str, Any]) -> Reader:
    symbols = tuple(schema["symbols"])

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = read_long(data, pos)
        if not 0 <= index < len(symbols):
            raise ValueError(f"enum index {index} is not one of the {len(symbols)} symbols")
        return symbols[index], pos

    return read


def _union(branches: list[Reader]) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = read_long(data, pos)
        if not 0 <= index < len(branches):
            raise ValueError(f"union index {index} is not one of the {len(branches)} branches")
        return branches[index](data, pos)

    return read


def _array(items: Reader) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        out: list[Any] = []
        while True:
            count, pos = read_long(data, pos)
            if count == 0:
                return out, pos
            if count < 0:  # a block that also gives its size in bytes
                count = -count
                pos = _skip_long(data, pos)
            for _ in range(count):
                item, pos = items(data, pos)
                out.append(item)

    return read


def _map(values: Reader) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        out: dict[str, Any] = {}
        while True:
            count, pos = read_long(data, pos)
            if count == 0:
                return out, pos
            if count < 0:
                count = -count
                pos = _skip_long(data, pos)
            for _ in range(count):
                key, pos = _read_string(data, pos)
                out[key], pos = values(data, pos)

    return read


def _union_skip(skippers: list[Skipper], data: bytes, pos: int) -> int:
    index, pos = read_long(data, pos)
    if not 0 <= index < len(skippers):
        raise ValueError(f"union index {index} is not one of the {len(skippers)} branches")
    return skippers[index](data, pos)


def _record_skip(fields: list[Skipper], data: bytes, pos: int) -> int:
    for skip in fields:
        pos = skip(data, pos)
    return pos


def _blocks_skip(data: bytes, pos: int, items: Skipper, keys: Skipper | None) -> int:
    while True:
        count, pos = read_long(data, pos)
        if count == 0:
            return pos
        if count < 0:  # a block with its size: jump over it
            size, pos = read_long(data, pos)
            if size < 0 or pos + size > len(data):
                raise _TruncatedError(f"a block of {size} bytes at byte {pos} runs past the end")
            pos += size
            continue
        for _ in range(count):
            if keys is not None:
                pos = keys(data, pos)
            pos = items(data, pos)


# How the top-level loop handles a field: strings and varints inline (most fields of most events), the rest
# through its compiled reader or skipper.
_SPAN, _LONG, _CALL = 0, 1, 2
Plan = tuple[tuple[int, str | None, Any], ...]


def _plan_step(compiler: _Compiler, schema: Any, name: str | None) -> tuple[int, str | None, Any]:
    """(how, the name to store under or None to skip, the reader or skipper for _CALL)."""
    kind = schema if isinstance(schema, str) else None
    if isinstance(schema, dict) and "logicalType" not in schema and isinstance(schema.get("type"), str):
        kind = schema["type"]
    if kind == "string" or (kind == "bytes" and name is None):
        return _SPAN, name, None
    if kind in ("int", "long"):
        return _LONG, name, None
    return _CALL, name, compiler.reader(schema) if name is not None else compiler.skipper(schema)


class FieldReader:
    """Reads the top-level fields `wanted` (None: all) of one writer schema's records as kombu JSON values."""

    def __init__(self, schema: Mapping[str, Any] | str, wanted: Collection[str] | None = None) -> None:
        raw: Any = json.loads(schema) if isinstance(schema, str) else dict(schema)
        named: dict[str, Any] = {}
        try:
            parsed = parse_schema(raw, named_schemas=named, _write_hint=False)
        except Exception as exc:  # fastavro raises bare SchemaParseException, ValueError, KeyError, ...
            raise SchemaError(f"cannot parse the writer schema: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("type") not in ("record", "error"):
            raise SchemaError(f"schema {parsed.get('name') if isinstance(parsed, dict) else parsed!r} "
                              "is not a record schema")
        compiler = _Compiler(named)
        self.fields = tuple(f["name"] for f in parsed["fields"])
        self._plan: Plan = tuple(
            _plan_step(compiler, f["type"], f["name"] if wanted is None or f["name"] in wanted else None)
            for f in parsed["fields"])

    def read(self, data: bytes, pos: int = 0) -> dict[str, Any]:  # noqa: PLR0912 - inlined: calls cost more
        """The wanted fields of the record that starts at `pos`; SchemaError when it does not decode."""
        out: dict[str, Any] = {}
        size = len(data)
        try:
            for how, name, call in self._plan:
                if how == _SPAN:
                    b = data[pos]
                    if b < 0x80:
                        length, pos = (b >> 1) ^ -(b & 1), pos + 1
                    else:
                        length, pos = read_long(data, pos)
                    end = pos + length
                    if length < 0 or end > size:
                        raise _TruncatedError(f"a value of {length} bytes at byte {pos} runs past the end")
                    if name is not None:
                        out[name] = data[pos:end].decode()
                    pos = end
                elif how == _LONG:
                    b = data[pos]
                    if b < 0x80:
                        value, pos = (b >> 1) ^ -(b & 1), pos + 1
                    else:
                        value, pos = read_long(data, pos)
                    if name is not None:
                        out[name] = value
                elif name is None:
                    pos = call(data, pos)
                else:
                    out[name], pos = call(data, pos)
        except DECODE_ERRORS as exc:
            raise SchemaError(f"cannot decode Avro datum ({len(data) - pos} bytes left at byte {pos}): "
                              f"{type(exc).__name__}: {exc}") from None
        return out
