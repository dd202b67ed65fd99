"""The schema-evolution matrix: one source for the offline checker test and the registry endpoint test.

Each case gives existing schemas (oldest first), a new schema and the verdict for every level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def record(*fields: dict[str, Any], name: str = "Invoice", **extra: Any) -> str:
    """An Avro record schema as JSON text, in namespace `t.compat`."""
    return json.dumps({"type": "record", "name": name, "namespace": "t.compat", "fields": list(fields), **extra})


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def decimal(precision: int, scale: int) -> dict[str, Any]:
    return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Status", "symbols": list(symbols), **extra}


def party(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Party", "fields": list(fields)}


ID = field("id", "string")


@dataclass(frozen=True)
class CompatCase:
    """`backward`/`forward`/`full` are the verdicts; the transitive ones default to the same."""

    name: str
    existing: tuple[str, ...]
    new: str
    backward: bool
    forward: bool
    full: bool
    backward_transitive: bool | None = None
    forward_transitive: bool | None = None
    full_transitive: bool | None = None

    def expected(self, level: str) -> bool:
        if level == "NONE":
            return True
        value = getattr(self, level.lower())
        if value is None:
            value = getattr(self, level.lower().removesuffix("_transitive"))
        return bool(value)


def _one(name: str, old: str, new: str, compatible: str) -> CompatCase:
    """One existing schema; `compatible` lists the levels that accept the change ("" for none)."""
    levels = set(compatible.split())
    return CompatCase(name, (old,), new, "BACKWARD" in levels, "FORWARD" in levels, "FULL" in levels)


CASES: tuple[CompatCase, ...] = (
    _one(
        "add field with default",
        record(ID),
        record(ID, field("note", "string", default="")),
        "BACKWARD FORWARD FULL",
    ),
    _one("add field without default", record(ID), record(ID, field("note", "string")), "FORWARD"),
    _one(
        "remove field with default",
        record(ID, field("note", "string", default="")),
        record(ID),
        "BACKWARD FORWARD FULL",
    ),
    _one("remove field without default", record(ID, field("note", "string")), record(ID), "BACKWARD"),
    _one(
        "rename field with alias",
        record(ID, field("amount", "double")),
        record(ID, field("total", "double", aliases=["amount"])),
        "BACKWARD",
    ),
    _one(
        "rename field without alias",
        record(ID, field("amount", "double")),
        record(ID, field("total", "double")),
        "",
    ),
    _one("int to long", record(field("n", "int")), record(field("n", "long")), "BACKWARD"),
    _one("long to int", record(field("n", "long")), record(field("n", "int")), "FORWARD"),
    _one("float to double", record(field("x", "float")), record(field("x", "double")), "BACKWARD"),
    _one("string to bytes", record(field("s", "string")), record(field("s", "bytes")), "BACKWARD FORWARD FULL"),
    _one("type change string to int", record(field("s", "string")), record(field("s", "int")), ""),
    _one(
        "enum symbol added",
        record(field("status", enum("OPEN", "PAID"))),
        record(field("status", enum("OPEN", "PAID", "VOID"))),
        "BACKWARD",
    ),
    _one(
        "enum symbol added, old enum has a default",
        record(field("status", enum("OPEN", "PAID", default="OPEN"))),
        record(field("status", enum("OPEN", "PAID", "VOID", default="OPEN"))),
        "BACKWARD FORWARD FULL",
    ),
    _one(
        "enum symbol removed",
        record(field("status", enum("OPEN", "PAID", "VOID"))),
        record(field("status", enum("OPEN", "PAID"))),
        "FORWARD",
    ),
    _one(
        "union widened",
        record(field("ref", ["null", "string"], default=None)),
        record(field("ref", ["null", "string", "long"], default=None)),
        "BACKWARD",
    ),
    _one(
        "union narrowed",
        record(field("ref", ["null", "string", "long"], default=None)),
        record(field("ref", ["null", "string"], default=None)),
        "FORWARD",
    ),
    _one(
        "field made optional",
        record(field("ref", "string")),
        record(field("ref", ["null", "string"], default=None)),
        "BACKWARD",
    ),
    _one(
        "optional field added",
        record(ID),
        record(ID, field("ref", ["null", "string"], default=None)),
        "BACKWARD FORWARD FULL",
    ),
    # The Avro spec says decimals resolve only when scale and precision match; we allow a reader whose
    # precision is at least the writer's (every value still fits) and never a scale change (values shift).
    _one(
        "decimal precision widened",
        record(field("amount", decimal(10, 2))),
        record(field("amount", decimal(12, 2))),
        "BACKWARD",
    ),
    _one(
        "decimal scale changed",
        record(field("amount", decimal(10, 2))),
        record(field("amount", decimal(10, 3))),
        "",
    ),
    _one(
        "nested record field added without default",
        record(ID, field("buyer", party(field("vat", "string")))),
        record(ID, field("buyer", party(field("vat", "string"), field("name", "string")))),
        "FORWARD",
    ),
    _one(
        "nested record field added with default",
        record(ID, field("buyer", party(field("vat", "string")))),
        record(ID, field("buyer", party(field("vat", "string"), field("name", "string", default="")))),
        "BACKWARD FORWARD FULL",
    ),
    _one(
        "array items int to long",
        record(field("xs", {"type": "array", "items": "int"})),
        record(field("xs", {"type": "array", "items": "long"})),
        "BACKWARD",
    ),
    _one(
        "map values string to int",
        record(field("m", {"type": "map", "values": "string"})),
        record(field("m", {"type": "map", "values": "int"})),
        "",
    ),
    _one(
        "fixed size changed",
        record(field("h", {"type": "fixed", "name": "Hash", "size": 16})),
        record(field("h", {"type": "fixed", "name": "Hash", "size": 32})),
        "",
    ),
    _one("record renamed without alias", record(ID), record(ID, name="Bill"), ""),
    _one(
        "record renamed with alias",
        record(ID),
        record(ID, name="Bill", aliases=["t.compat.Invoice"]),
        "BACKWARD",
    ),
    CompatCase(
        "field without default added after an optional one (transitive backward differs)",
        (record(ID), record(ID, field("note", "string", default=""))),
        record(ID, field("note", "string")),
        backward=True,
        forward=True,
        full=True,
        backward_transitive=False,
        forward_transitive=True,
        full_transitive=False,
    ),
    CompatCase(
        "field removed after gaining a default (transitive forward differs)",
        (record(ID, field("note", "string")), record(ID, field("note", "string", default=""))),
        record(ID),
        backward=True,
        forward=True,
        full=True,
        backward_transitive=True,
        forward_transitive=False,
        full_transitive=False,
    ),
    CompatCase(
        "type narrowed back after widening (transitive both differ)",
        (record(field("n", "int")), record(field("n", "long"))),
        record(field("n", "long"), field("m", "int", default=0)),
        backward=True,
        forward=True,
        full=True,
        backward_transitive=True,
        forward_transitive=False,
        full_transitive=False,
    ),
)
