"""Avro schema parsing and Confluent-style compatibility checks (BACKWARD/FORWARD/FULL, transitive).

Built on the `avro` package's reader/writer checker, plus the decimal and default-value rules it skips.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import avro.errors
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    lookup_writer_field,
)

from streams.errors import SchemaError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class CompatibilityResult:
    """The verdict of one check; `messages` says what breaks, and where, when incompatible."""

    compatible: bool
    messages: tuple[str, ...] = ()


def normalize_level(level: str) -> str:
    """`level` upper-cased if it is a Confluent compatibility level, else SchemaError listing them."""
    upper = level.strip().upper()
    if upper not in LEVELS:
        raise SchemaError(f"unknown compatibility level {level!r}; expected one of {', '.join(LEVELS)}")
    return upper


def parse_schema(text: str) -> avro.schema.Schema:
    """Parse Avro schema JSON; SchemaError saying what is wrong (JSON position, type, bad default)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"invalid Avro schema: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    return _parse_cached(json.dumps(document, sort_keys=True))


@functools.lru_cache(maxsize=2048)
def _parse_cached(canonical: str) -> avro.schema.Schema:
    # Parsed schemas are never mutated by the checker, so sharing them between checks is safe.
    with warnings.catch_warnings():
        # An invalid logical type degrades to its underlying type (Avro spec); not an error.
        warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
        try:
            parsed = avro.schema.parse(canonical)
        except (avro.errors.AvroException, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"invalid Avro schema: {exc}") from exc
    _check_defaults(parsed, "")
    return parsed


def check_compatibility(new_schema: str, existing: Sequence[str], level: str) -> CompatibilityResult:
    """Whether `new_schema` may follow `existing` (oldest first) under `level`, the way Confluent decides.

    BACKWARD: the new schema reads data written with the latest one; FORWARD: the latest reads data
    written with the new one; FULL: both. The *_TRANSITIVE forms check every existing schema.
    """
    level = normalize_level(level)
    if level == "NONE" or not existing:
        return CompatibilityResult(True)
    new = parse_schema(new_schema)
    count = len(existing)
    targets = range(count) if level.endswith("_TRANSITIVE") else range(count - 1, count)
    messages: list[str] = []
    for index in targets:
        old = parse_schema(existing[index])
        label = f"existing schema #{index + 1} of {count}"
        if level.startswith(("BACKWARD", "FULL")):
            what = f"new schema cannot read data written with {label}"
            messages.extend(_problems(reader=new, writer=old, what=what))
        if level.startswith(("FORWARD", "FULL")):
            what = f"{label} cannot read data written with new schema"
            messages.extend(_problems(reader=old, writer=new, what=what))
    return CompatibilityResult(not messages, tuple(messages))


def _problems(*, reader: avro.schema.Schema, writer: avro.schema.Schema, what: str) -> list[str]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro leaves __init__ bare
    result = checker.get_compatibility(reader, writer)
    found: list[str] = []
    if result.compatibility is SchemaCompatibilityType.incompatible:
        kinds = ", ".join(sorted({kind.name.upper() for kind in result.incompatibilities}))
        at = ", ".join(sorted(result.locations))
        detail = "; ".join(sorted(result.messages))
        found.append(f"{what}: {kinds} at {at}: {detail}")
    found.extend(f"{what}: DECIMAL_MISMATCH at {problem}" for problem in _decimal_mismatches(reader, writer))
    return found


def _decimal_mismatches(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """Decimal precision/scale changes that alter or overflow values; the avro checker ignores them."""
    problems: list[str] = []
    seen: set[tuple[int, int]] = set()

    def walk(r: avro.schema.Schema, w: avro.schema.Schema, path: str) -> None:
        if (id(r), id(w)) in seen:
            return
        seen.add((id(r), id(w)))
        if isinstance(r, avro.schema.UnionSchema) or isinstance(w, avro.schema.UnionSchema):
            readers = r.schemas if isinstance(r, avro.schema.UnionSchema) else [r]
            writers = w.schemas if isinstance(w, avro.schema.UnionSchema) else [w]
            for index, wb in enumerate(writers):
                match = next((rb for rb in readers if _same_kind(rb, wb)), None)
                if match is not None:
                    walk(match, wb, f"{path}/{index}" if len(writers) > 1 else path)
            return
        if not _same_kind(r, w):
            return
        r_dec, w_dec = _decimal(r), _decimal(w)
        # A scale change silently rescales every value; a narrower reader precision can overflow.
        if r_dec and w_dec and (r_dec[1] != w_dec[1] or r_dec[0] < w_dec[0]):
            problems.append(
                f"{path or '/'}: reader decimal(precision={r_dec[0]}, scale={r_dec[1]}) cannot read "
                f"writer decimal(precision={w_dec[0]}, scale={w_dec[1]}) (scale must match, "
                "reader precision must be at least the writer's)"
            )
        if isinstance(r, avro.schema.RecordSchema) and isinstance(w, avro.schema.RecordSchema):
            for index, field in enumerate(r.fields):
                other = lookup_writer_field(writer_schema=w, reader_field=field)
                if other is not None:
                    walk(field.type, other.type, f"{path}/fields/{index}")
        elif isinstance(r, avro.schema.ArraySchema) and isinstance(w, avro.schema.ArraySchema):
            walk(r.items, w.items, f"{path}/items")
        elif isinstance(r, avro.schema.MapSchema) and isinstance(w, avro.schema.MapSchema):
            walk(r.values, w.values, f"{path}/values")

    walk(reader, writer, "")
    return problems


def _same_kind(a: avro.schema.Schema, b: avro.schema.Schema) -> bool:
    if a.type != b.type:
        return False
    if isinstance(a, avro.schema.NamedSchema) and isinstance(b, avro.schema.NamedSchema):
        aliases = a.props.get("aliases")
        return bool(a.name == b.name or (isinstance(aliases, list) and b.fullname in aliases))
    return True


def _decimal(schema: avro.schema.Schema) -> tuple[int, int] | None:
    if isinstance(schema, avro.schema.BytesDecimalSchema | avro.schema.FixedDecimalSchema):
        return (int(schema.precision), int(schema.scale))
    return None


def _check_defaults(schema: avro.schema.Schema, path: str) -> None:
    """Field defaults must match their type (first branch for unions), as Confluent validates them."""
    seen: set[int] = set()

    def walk(node: avro.schema.Schema, where: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, avro.schema.RecordSchema):
            for index, field in enumerate(node.fields):
                field_path = f"{where}/fields/{index}"
                if field.has_default and not _default_fits(field.type, field.default):
                    raise SchemaError(
                        f"invalid Avro schema: default {json.dumps(field.default)} of field '{field.name}' "
                        f"(at {field_path}) does not match its type {_type_name(field.type)}"
                        " (a union's default must match its first branch)"
                    )
                walk(field.type, field_path)
        elif isinstance(node, avro.schema.ArraySchema):
            walk(node.items, f"{where}/items")
        elif isinstance(node, avro.schema.MapSchema):
            walk(node.values, f"{where}/values")
        elif isinstance(node, avro.schema.UnionSchema):
            for index, branch in enumerate(node.schemas):
                walk(branch, f"{where}/{index}")

    walk(schema, path)


def _type_name(schema: avro.schema.Schema) -> str:
    if isinstance(schema, avro.schema.UnionSchema):
        return "[" + ", ".join(_type_name(branch) for branch in schema.schemas) + "]"
    if isinstance(schema, avro.schema.NamedSchema):
        return f"{schema.type} {schema.fullname}"
    return str(schema.type)


def _default_fits(schema: avro.schema.Schema, value: Any) -> bool:
    kind = schema.type
    if isinstance(schema, avro.schema.UnionSchema):
        return bool(schema.schemas) and _default_fits(schema.schemas[0], value)
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if kind in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in ("string", "bytes"):
        return isinstance(value, str)
    if isinstance(schema, avro.schema.FixedSchema):
        return isinstance(value, str) and len(value) == schema.size
    if isinstance(schema, avro.schema.EnumSchema):
        return isinstance(value, str) and value in schema.symbols
    if isinstance(schema, avro.schema.ArraySchema):
        return isinstance(value, list) and all(_default_fits(schema.items, item) for item in value)
    if isinstance(schema, avro.schema.MapSchema):
        return isinstance(value, dict) and all(_default_fits(schema.values, item) for item in value.values())
    if isinstance(schema, avro.schema.RecordSchema):
        return isinstance(value, dict) and _record_default_fits(schema.fields, value)
    return True


def _record_default_fits(fields: Iterable[Any], value: dict[str, Any]) -> bool:
    for field in fields:
        if field.name in value:
            if not _default_fits(field.type, value[field.name]):
                return False
        elif not field.has_default:
            return False
    return True
