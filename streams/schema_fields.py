"""A catalog topic's schema file read as an Avro record, and dotted field paths resolved in it.

The one resolver of field paths: catalog keys and PII fields, bridge and webhook route fields.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from fastavro import parse_schema

from streams.located_yaml import FieldError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["key_problem", "read_record_schema", "resolve_field"]

_KEY_TYPES = {"string", "int", "long", "bytes", "enum", "fixed"}


def read_record_schema(file: Path, shown: str) -> tuple[dict[str, Any] | None, str]:
    """(the parsed record schema, "") or (None, why not), `shown` naming the file as the catalog does."""
    try:
        schema = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"schema file {shown!r} not found (looked for {file}; paths are relative to the catalog)"
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        what = "is not valid JSON" if isinstance(exc, ValueError) else "cannot be read"
        detail = str(exc)
        if isinstance(exc, json.JSONDecodeError):
            detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        return None, f"schema file {shown!r} {what}: {detail}"
    if not isinstance(schema, dict) or schema.get("type") != "record":
        got = schema.get("type") if isinstance(schema, dict) else type(schema).__name__
        return None, f'schema file {shown!r} must be an Avro record ({{"type": "record", ...}}), got {got!r}'
    try:
        parsed = parse_schema(schema, expand=True, _write_hint=False)
    except Exception as exc:  # noqa: BLE001 - fastavro raises several unrelated types for bad schemas
        return None, f"schema file {shown!r} is not a valid Avro schema: {exc}"
    return cast("dict[str, Any]", parsed), ""


def key_problem(schema: dict[str, Any], key: str, shown: str) -> str | None:
    """Why `key` cannot be the record key of `schema` (missing, nullable, not a scalar), or None."""
    try:
        leaf, nullable = resolve_field(schema, key, shown)
    except FieldError as exc:
        return str(exc)
    if nullable:
        return (
            f"{key!r} is nullable in {shown}; a null key loses per-key ordering, so make the field "
            "(and its parents) non-null"
        )
    if _type_name(leaf) not in _KEY_TYPES:
        return f"{key!r} is a {_type_name(leaf)} in {shown}; a key must be {' or '.join(sorted(_KEY_TYPES))}"
    return None


def resolve_field(schema: dict[str, Any], dotted: str, shown: str) -> tuple[Any, bool]:
    """The Avro type at `dotted` inside record `schema` (null stripped from a [null, T] union), and whether any
    step on the way is nullable; FieldError naming `shown` (e.g. "the schema of 'x'") when there is none."""
    current: Any = schema
    nullable = False
    parts = dotted.split(".")
    for index, part in [*enumerate(parts), (len(parts), "")]:
        branches = [b for b in current if b != "null"] if isinstance(current, list) else [current]
        nullable = nullable or len(branches) < len(current if isinstance(current, list) else [current])
        current = branches[0] if len(branches) == 1 else current
        if not part:
            return current, nullable
        if _type_name(current) != "record":
            raise FieldError(
                f"'{'.'.join(parts[:index])}' in {shown} is a {_type_name(current)}, "
                f"not a record, so {dotted!r} does not exist"
            )
        fields = {field["name"]: field["type"] for field in current["fields"]}
        if part not in fields:
            record = str(current["name"]).rsplit(".", 1)[-1]
            raise FieldError(
                f"{dotted!r} is not in {shown}: record {record} has no field {part!r}; its fields: {', '.join(fields)}"
            )
        current = fields[part]
    raise AssertionError("unreachable")  # the sentinel part above always returns


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "union"
    return str(avro_type.get("type")) if isinstance(avro_type, dict) else str(avro_type)
