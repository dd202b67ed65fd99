"""The ZATCA rule table (zatca_rules.json) loaded, checked, and evaluated on decoded invoices in Python.

The native fast path (streams._avro_native.InvoiceJudge) is handed the same table; docs/decisions/0023.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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


Scope = dict[str, Any]
# A compiled rule: None when the rule holds on (scope, invoice) at `now`, else the message's values.
Test = Callable[[Scope, Scope, datetime], dict[str, Any] | None]


@dataclass(frozen=True)
class Term:
    """One term of a `sum` predicate: the product of its factors (paths), negated or not, summed over the
    lines when its paths start with `lines[]`."""

    factors: tuple[str, ...]
    negative: bool
    over: str | None


@dataclass(frozen=True)
class Rule:
    """One table entry (see zatca_rules.json), with its predicate compiled into `test`."""

    code: str
    severity: str
    field: str
    kind: str
    params: Mapping[str, Any]
    message: str
    each: str | None = None
    when: tuple[str, str] | None = None
    terms: tuple[Term, ...] = ()
    test: Test | None = dataclasses.field(default=None, compare=False, repr=False)

    def path(self, index: int | None) -> str:
        return self.field if self.each is None else f"{self.each}[{index}].{self.field}"

    def violation(self, index: int | None = None, **context: Any) -> Violation:
        return Violation(self.code, self.message.format(**context), self.path(index), self.severity)


@dataclass(frozen=True)
class RuleTable:
    """The loaded table: the rules in order, and the JSON text the native judge is given."""

    rules: tuple[Rule, ...]
    text: str = dataclasses.field(repr=False)
    # Consecutive stateless rules with the same `each` (line rules run line by line), each with its compiled
    # test; and the chain's rules by predicate.
    blocks: tuple[tuple[str | None, tuple[tuple[Rule, Test], ...]], ...] = dataclasses.field(default=(), repr=False)
    chains: Mapping[str, Rule] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, rules: tuple[Rule, ...], text: str) -> RuleTable:
        blocks: list[tuple[str | None, tuple[tuple[Rule, Test], ...]]] = []
        for rule in rules:
            if rule.test is None:  # a chain rule
                continue
            if blocks and blocks[-1][0] == rule.each:
                blocks[-1] = (rule.each, (*blocks[-1][1], (rule, rule.test)))
            else:
                blocks.append((rule.each, ((rule, rule.test),)))
        return cls(rules, text, tuple(blocks), {rule.kind: rule for rule in rules if rule.kind in CHAIN})

    @property
    def stateless(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.kind in STATELESS)

    def chain(self, kind: str) -> Rule | None:
        """The table's rule for a chain predicate, if it has one."""
        return self.chains.get(kind)


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
    return RuleTable.of(rules, text)


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
        raise RuleTableError(
            f"{where}: the message names {sorted(names - PLACEHOLDERS)}; it may use {sorted(PLACEHOLDERS)}"
        )
    if each is not None and each != "lines":
        raise RuleTableError(f"{where}: each must be 'lines', got {each!r}")
    rule = Rule(
        code,
        severity,
        path,
        kind,
        predicate,
        message,
        each,
        (str(when["field"]), str(when["equals"])) if when else None,
    )
    try:
        return _compiled(rule)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise RuleTableError(f"{where}: bad parameters for {kind} ({exc!r})") from exc


def _compiled(rule: Rule) -> Rule:
    """The rule with its parameters checked and its predicate compiled into `test`."""
    params = rule.params
    if rule.kind == "digits":
        length, first, last = int(params["length"]), str(params["first"]), str(params["last"])
        if length < 2 or len(first) != 1 or len(last) != 1:
            raise ValueError("length >= 2, first and last one character each")
        pattern = re.compile(rf"^{re.escape(first)}\d{{{length - 2}}}{re.escape(last)}$")
        rule = replace(rule, params={"length": length, "first": first, "last": last, "pattern": pattern})
        test = _digits(getter(rule.field), pattern.match)
    elif rule.kind == "lookup":
        table = {str(key): Decimal(str(value)) for key, value in params["table"].items()}
        rule = replace(rule, params={"key": str(params["key"]), "table": table})
        test = _lookup(getter(rule.field), getter(str(params["key"])), table)
    elif rule.kind == "sum":
        terms = tuple(_term(raw) for raw in params["terms"])
        if not terms:
            raise ValueError("no terms")
        quantize = params.get("quantize")
        tolerance, divide = Decimal(str(params["tolerance"])), int(params.get("divide", 1))
        quantum = None if quantize is None else Decimal(1).scaleb(-int(quantize))
        expected = _sum(terms, divide, quantum)
        rule = replace(
            rule,
            terms=terms,
            params={"tolerance": tolerance, "divide": divide, "quantize": quantum, "expected": expected},
        )
        test = _within(getter(rule.field), expected, tolerance)
    elif rule.kind == "one_of":
        values = frozenset(str(v) for v in params["values"])
        rule = replace(rule, params={"values": values})
        test = _one_of(getter(rule.field), values)
    elif rule.kind == "not_after_now":
        skew = timedelta(seconds=int(params["skew_seconds"]))
        rule = replace(rule, params={"skew": skew})
        test = _not_after(getter(rule.field), skew)
    else:
        return rule  # a chain predicate: ValidationAgent.judge and zatca.chain_violations check it
    if rule.when is not None:
        test = _when(getter(rule.when[0]), rule.when[1], test)
    return replace(rule, test=test)


def _term(raw: str | Sequence[str]) -> Term:
    factors = [raw] if isinstance(raw, str) else [str(f) for f in raw]
    negative = factors[0].startswith("-")
    factors[0] = factors[0].removeprefix("-")
    aggregate = {f.startswith("lines[].") for f in factors}
    if len(aggregate) != 1:
        raise ValueError(f"term {raw!r} mixes per-line and invoice fields")
    over = "lines" if aggregate == {True} else None
    return Term(tuple(f.removeprefix("lines[].") for f in factors), negative, over)


# ---- the predicates, each once (rules.rs is the native side's) ----------------------------------------


def _digits(get: Callable[[Scope], Any], match: Callable[[str], Any]) -> Test:
    def test(scope: Scope, _invoice: Scope, _now: datetime) -> dict[str, Any] | None:
        value = get(scope)
        return None if value and match(value) is not None else {"value": value}

    return test


def _lookup(get: Callable[[Scope], Any], key_of: Callable[[Scope], Any], table: Mapping[str, Decimal]) -> Test:
    def test(scope: Scope, _invoice: Scope, _now: datetime) -> dict[str, Any] | None:
        value, key = get(scope), value_text(key_of(scope))
        expected = table[key]
        return None if value == expected else {"value": value, "key": key, "expected": expected}

    return test


def _within(get: Callable[[Scope], Any], expected_of: Callable[[Scope, Scope], Decimal], tolerance: Decimal) -> Test:
    def test(scope: Scope, invoice: Scope, _now: datetime) -> dict[str, Any] | None:
        value, expected = get(scope), expected_of(scope, invoice)
        return None if abs(value - expected) <= tolerance else {"value": value, "expected": expected}

    return test


def _one_of(get: Callable[[Scope], Any], values: frozenset[str]) -> Test:
    def test(scope: Scope, _invoice: Scope, _now: datetime) -> dict[str, Any] | None:
        value = get(scope)
        return None if value_text(value) in values else {"value": value}

    return test


def _not_after(get: Callable[[Scope], Any], skew: timedelta) -> Test:
    def test(scope: Scope, _invoice: Scope, now: datetime) -> dict[str, Any] | None:
        value = get(scope)
        return None if value <= now + skew else {"value": value.isoformat()}

    return test


def _when(get: Callable[[Scope], Any], equals: str, then: Test) -> Test:
    def test(scope: Scope, invoice: Scope, now: datetime) -> dict[str, Any] | None:
        return then(scope, invoice, now) if value_text(get(invoice)) == equals else None

    return test


def _sum(terms: tuple[Term, ...], divide: int, quantum: Decimal | None) -> Callable[[Scope, Scope], Decimal]:
    """What a `sum` rule's field must equal: its terms added in order, then quantized (as the rules were written
    by hand: `(quantity * unit_price - discount).quantize(CENT)`, `sum(..., Decimal("0.00"))`). Built from
    closures once, since it runs for every invoice."""
    compiled = [(term.negative, _term_value(term, divide)) for term in terms]
    (first_negative, first), rest = compiled[0], compiled[1:]

    if not rest and not first_negative and quantum is None:
        return first  # one term as it is (the totals that must equal one field)

    def expected(scope: Scope, invoice: Scope) -> Decimal:
        total = first(scope, invoice)
        if first_negative:
            total = -total
        for negative, value in rest:
            total = total - value(scope, invoice) if negative else total + value(scope, invoice)
        return total if quantum is None else total.quantize(quantum)

    return expected


def _term_value(term: Term, divide: int) -> Callable[[Scope, Scope], Decimal]:
    getters = [getter(name) for name in term.factors]

    def any_product(scope: Scope) -> Decimal:
        value: Decimal = getters[0](scope)
        for get in getters[1:]:
            value = value * get(scope)
        return value if divide == 1 else value / divide

    product: Callable[[Scope], Decimal] = any_product
    if len(getters) == 1 and divide == 1:
        product = getters[0]
    elif len(getters) == 2:
        first, second = getters
        product = (lambda s: first(s) * second(s)) if divide == 1 else (lambda s: first(s) * second(s) / divide)
    over = term.over
    if over is None:
        return lambda scope, _invoice: product(scope)
    return lambda _scope, invoice: sum(map(product, invoice[over]), _ZERO)


def getter(path: str) -> Callable[[Any], Any]:
    """The value at a dotted path; None once a step is None (an absent optional record)."""
    steps = path.split(".")
    if len(steps) == 1:
        return operator.itemgetter(path)

    def get(scope: Any) -> Any:
        for step in steps:
            if scope is None:
                return None
            scope = scope[step]
        return scope

    return get


def stateless_violations(invoice: Scope, *, now: datetime, rules: RuleTable | None = None) -> list[Violation]:
    """Every table rule that needs nothing but the invoice itself, in table order (line rules line by line)."""
    found: list[Violation] = []
    for each, block in (rules or default_rules()).blocks:
        if each is None:
            for rule, test in block:
                broken = test(invoice, invoice, now)
                if broken is not None:
                    found.append(rule.violation(None, **broken))
            continue
        for index, item in enumerate(invoice[each]):
            for rule, test in block:
                broken = test(item, invoice, now)
                if broken is not None:
                    found.append(rule.violation(index, line_id=item["line_id"], **broken))
    return found


def sum_of(rule: Rule, invoice: Scope, item: Scope | None) -> Decimal:
    """What a `sum` rule's field must equal (within its tolerance) on the invoice, or on its line `item`."""
    expected: Callable[[Scope, Scope], Decimal] = rule.params["expected"]
    return expected(invoice if item is None else item, invoice)


def value_text(member: Any) -> str:
    """An enum symbol or string as text (the decoder gives enum symbols as str, a caller may give Enum members)."""
    return str(member.value if isinstance(member, Enum) else member)
