"""The ZATCA rule table (zatca_rules.json) loaded, checked, and evaluated on decoded invoices in Python.

The native fast path (streams._avro_native.InvoiceJudge) is handed the same table; docs/decisions/0023.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from streams.errors import StreamsError

TABLE = Path(__file__).with_name("zatca_rules.json")
# The closed vocabulary: each predicate is implemented once here and once in the native crate (rules.rs).
STATELESS = frozenset({"digits", "lookup", "sum", "one_of", "not_after_now"})
# Checked against the seller's chain in the partition state (zatca.chain_violations, ValidationAgent.judge).
CHAIN = frozenset({"first_submission", "counter_increases", "links_previous_hash"})
SEVERITIES = frozenset({"ERROR", "WARNING"})
# What a message template may name.
PLACEHOLDERS = frozenset({"value", "expected", "key", "line_id"})
_ZERO = Decimal("0.00")


class RuleTableError(StreamsError):
    """The rule table is malformed: a rule names an unknown predicate, misses a parameter, or a bad template."""


@dataclass(frozen=True)
class Violation:
    """One failed rule: its code, a message naming the values, and the field path."""

    rule_code: str
    message: str
    field_path: str | None
    severity: str = "ERROR"


@dataclass(frozen=True)
class Term:
    """One term of a `sum` predicate: the product of its factors (paths), negated or not, summed over the
    lines when its paths start with `lines[]`."""

    factors: tuple[str, ...]
    negative: bool
    over: str | None


@dataclass(frozen=True)
class Rule:
    """One table entry (see zatca_rules.json)."""

    code: str
    severity: str
    field: str
    kind: str
    params: Mapping[str, Any]
    message: str
    each: str | None = None
    when: tuple[str, str] | None = None
    terms: tuple[Term, ...] = ()
    pattern: re.Pattern[str] | None = None

    def path(self, index: int | None) -> str:
        return self.field if self.each is None else f"{self.each}[{index}].{self.field}"

    def violation(self, index: int | None = None, **context: Any) -> Violation:
        return Violation(self.code, self.message.format(**context), self.path(index), self.severity)


@dataclass(frozen=True)
class RuleTable:
    """The loaded table: the rules in order, and the JSON text the native judge is given."""

    rules: tuple[Rule, ...]
    text: str = field(repr=False)

    @property
    def stateless(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.kind in STATELESS)

    def chain(self, kind: str) -> Rule | None:
        """The table's rule for a chain predicate, if it has one."""
        return next((rule for rule in self.rules if rule.kind == kind), None)

    def blocks(self) -> Iterator[tuple[str | None, list[Rule]]]:
        """Consecutive stateless rules with the same `each`, so line rules run line by line."""
        block: list[Rule] = []
        for rule in self.stateless:
            if block and block[0].each != rule.each:
                yield block[0].each, block
                block = []
            block.append(rule)
        if block:
            yield block[0].each, block


def load_rules(path: Path = TABLE) -> RuleTable:
    """Read and check a rule table; RuleTableError names the rule and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
        entries = json.loads(text)["rules"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuleTableError(f"{path}: not a rule table ({exc})") from exc
    rules = tuple(_rule(entry, f"{path}: rule {n + 1}") for n, entry in enumerate(entries))
    # The seller chain is one mechanism (ValidationAgent.judge): each of its checks is declared exactly once.
    for kind in sorted(CHAIN):
        if sum(rule.kind == kind for rule in rules) != 1:
            raise RuleTableError(f"{path}: needs exactly one {kind} rule (the seller chain's checks)")
    return RuleTable(rules, text)


@cache
def default_rules() -> RuleTable:
    """The package's table, loaded once."""
    return load_rules()


def _rule(entry: Mapping[str, Any], where: str) -> Rule:
    try:
        code, predicate = str(entry["code"]), dict(entry["predicate"])
        where = f"{where} ({code})"
        kind, message, path = str(predicate.pop("kind")), str(entry["message"]), str(entry["field"])
        severity = str(entry.get("severity", "ERROR"))
        each = entry.get("each")
        when = entry.get("when")
    except (KeyError, TypeError, ValueError) as exc:
        raise RuleTableError(f"{where}: needs code, field, predicate.kind and message ({exc})") from exc
    if kind not in STATELESS | CHAIN:
        raise RuleTableError(f"{where}: unknown predicate {kind!r}; known: {', '.join(sorted(STATELESS | CHAIN))}")
    if severity not in SEVERITIES:
        raise RuleTableError(f"{where}: severity {severity!r} is not one of {sorted(SEVERITIES)}")
    names = {name for _, name, _, _ in string.Formatter().parse(message) if name is not None}
    if not names <= PLACEHOLDERS:
        raise RuleTableError(f"{where}: the message names {sorted(names - PLACEHOLDERS)}; it may use "
                             f"{sorted(PLACEHOLDERS)}")
    if each is not None and each != "lines":
        raise RuleTableError(f"{where}: each must be 'lines', got {each!r}")
    rule = Rule(code, severity, path, kind, predicate, message, each,
                (str(when["field"]), str(when["equals"])) if when else None)
    try:
        return _compiled(rule)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise RuleTableError(f"{where}: bad parameters for {kind} ({exc!r})") from exc


def _compiled(rule: Rule) -> Rule:
    params = rule.params
    if rule.kind == "digits":
        length, first, last = int(params["length"]), str(params["first"]), str(params["last"])
        if length < 2 or len(first) != 1 or len(last) != 1:
            raise ValueError("length >= 2, first and last one character each")
        pattern = re.compile(rf"^{re.escape(first)}\d{{{length - 2}}}{re.escape(last)}$")
        return replace(rule, pattern=pattern)
    if rule.kind == "lookup":
        table = {str(key): Decimal(str(value)) for key, value in params["table"].items()}
        return replace(rule, params={"key": str(params["key"]), "table": table})
    if rule.kind == "sum":
        terms = tuple(_term(raw) for raw in params["terms"])
        if not terms:
            raise ValueError("no terms")
        quantize = params.get("quantize")
        checked = {"tolerance": Decimal(str(params["tolerance"])), "divide": int(params.get("divide", 1)),
                   "quantize": None if quantize is None else Decimal(1).scaleb(-int(quantize))}
        return replace(rule, params=checked, terms=terms)
    if rule.kind == "one_of":
        return replace(rule, params={"values": frozenset(str(v) for v in params["values"])})
    if rule.kind == "not_after_now":
        return replace(rule, params={"skew": timedelta(seconds=int(params["skew_seconds"]))})
    return rule  # a chain predicate: no parameters


def _term(raw: str | Sequence[str]) -> Term:
    factors = [raw] if isinstance(raw, str) else [str(f) for f in raw]
    negative = factors[0].startswith("-")
    factors[0] = factors[0].removeprefix("-")
    aggregate = {f.startswith("lines[].") for f in factors}
    if len(aggregate) != 1:
        raise ValueError(f"term {raw!r} mixes per-line and invoice fields")
    over = "lines" if aggregate == {True} else None
    return Term(tuple(f.removeprefix("lines[].") for f in factors), negative, over)


def stateless_violations(invoice: dict[str, Any], *, now: datetime, rules: RuleTable | None = None) -> list[Violation]:
    """Every table rule that needs nothing but the invoice itself, in table order (line rules line by line)."""
    found: list[Violation] = []
    for each, block in (rules or default_rules()).blocks():
        if each is None:
            found.extend(v for rule in block if (v := check(rule, invoice, None, None, now)) is not None)
            continue
        for index, item in enumerate(invoice[each]):
            found.extend(v for rule in block if (v := check(rule, invoice, item, index, now)) is not None)
    return found


def check(rule: Rule, invoice: dict[str, Any], item: dict[str, Any] | None, index: int | None,
          now: datetime) -> Violation | None:
    """One stateless rule on the invoice (and the line `item` for an `each` rule): its violation, or None."""
    scope = invoice if item is None else item
    if rule.when is not None and value_text(resolve(invoice, rule.when[0])) != rule.when[1]:
        return None
    value = resolve(scope, rule.field)
    context: dict[str, Any] = {"value": value}
    if item is not None:
        context["line_id"] = item["line_id"]
    params = rule.params
    if rule.kind == "digits":
        assert rule.pattern is not None  # noqa: S101 - _compiled sets it for every digits rule
        ok = bool(value) and rule.pattern.match(value) is not None
    elif rule.kind == "lookup":
        key = value_text(resolve(scope, params["key"]))
        context["key"] = key
        context["expected"] = expected = params["table"][key]
        ok = value == expected
    elif rule.kind == "sum":
        context["expected"] = expected = sum_of(rule, invoice, item)
        ok = abs(value - expected) <= params["tolerance"]
    elif rule.kind == "one_of":
        ok = value_text(value) in params["values"]
    elif rule.kind == "not_after_now":
        context["value"] = value.isoformat()
        ok = value <= now + params["skew"]
    else:
        raise RuleTableError(f"rule {rule.code}: {rule.kind} is not a stateless predicate")
    return None if ok else rule.violation(index, **context)


def sum_of(rule: Rule, invoice: dict[str, Any], item: dict[str, Any] | None) -> Decimal:
    """What a `sum` rule's field must equal (within its tolerance): its terms added, then quantized."""
    divide = rule.params["divide"]
    total: Decimal | None = None
    for term in rule.terms:
        if term.over is None:
            value = _product(invoice if item is None else item, term.factors, divide)
        else:
            value = sum((_product(line, term.factors, divide) for line in invoice[term.over]), _ZERO)
        total = (-value if total is None else total - value) if term.negative else \
            (value if total is None else total + value)
    assert total is not None  # noqa: S101 - _compiled refuses a sum without terms
    quantum = rule.params["quantize"]
    return total if quantum is None else total.quantize(quantum)


def _product(scope: dict[str, Any], factors: tuple[str, ...], divide: int) -> Decimal:
    value: Decimal = resolve(scope, factors[0])
    for name in factors[1:]:
        value = value * resolve(scope, name)
    return value if divide == 1 else value / divide


def resolve(scope: dict[str, Any] | None, path: str) -> Any:
    """The value at a dotted path; None once a step is None (an absent optional record)."""
    value: Any = scope
    for step in path.split("."):
        if value is None:
            return None
        value = value[step]
    return value


def value_text(member: Any) -> str:
    """An enum symbol or string as text (the decoder gives enum symbols as str, a caller may give Enum members)."""
    return str(member.value if isinstance(member, Enum) else member)
