"""The ZATCA rule table (streams/agents/zatca_rules.json) holds both judges: every rule, broken alone, is
flagged by the Python path and not cleared by the native fast path; a rule added to a copy of the table is
enforced by both; a table the native side does not fully implement is refused when the judge is made.

The breakers below are per predicate kind, not per rule: a new table entry with a known predicate is
covered here without a line of test code; a new predicate kind fails test_every_predicate_has_a_breaker
until it has one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from streams._avro_native import InvoiceJudge
from streams.agents.rules import CHAIN, STATELESS, TABLE, Rule, RuleTable, RuleTableError, load_rules, sum_of
from streams.agents.zatca import FIRST_PIH, outcome_id
from streams.demo.samples import invoice
from streams.records import SourceRecord
from streams.runtime.state import PartitionState
from tests.agents.test_native_judge import (
    NOW,
    RULES,
    SOURCE,
    WireHeaders,
    World,
    copy_state,
    make_world,
    message,
    native_clear,
    python_judge,
)

Invoice = dict[str, Any]


def assign(event: Invoice, path: str, value: Any, index: int | None = None) -> Invoice:
    """`event` with the value at a dotted path (in line `index` for a line field) replaced; a copy."""
    if index is not None:
        lines = [dict(line) for line in event["lines"]]
        lines[index] = assign(lines[index], path, value)
        return {**event, "lines": lines}
    head, _, rest = path.partition(".")
    return {**event, head: assign(event[head], rest, value) if rest else value}


def repaired(rules: RuleTable, event: Invoice, broken: tuple[Rule, int | None]) -> Invoice:
    """Every `sum` rule but the broken one made to hold again, in table order (later sums read earlier ones),
    so the break shows in one rule only."""
    for rule in rules.stateless:
        if rule.kind != "sum":
            continue
        for index in range(len(event["lines"])) if rule.each else [None]:
            if (rule, index) != broken:
                item = None if index is None else event["lines"][index]
                event = assign(event, rule.field, sum_of(rule, event, item), index)
    return event


Breaker = Callable[[Rule, Invoice], tuple[Invoice, dict[str, Any], int | None]]


def break_digits(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    length, first, last = rule.params["length"], rule.params["first"], rule.params["last"]
    wrong = first + "0" * (length - 2) + ("1" if last == "0" else "0")
    if rule.when is not None:
        event = assign(event, rule.when[0], rule.when[1])
    return assign(event, rule.field, wrong), {}, None


def break_lookup(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    table, key = rule.params["table"], rule.params["key"]
    line = event["lines"][0]
    other = next(k for k, expected in table.items() if expected != line[rule.field])
    return assign(event, key, other, 0), {}, 0


def break_sum(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    index = 0 if rule.each else None
    scope = event if index is None else event["lines"][0]
    off = scope[rule.field] + rule.params["tolerance"] + Decimal("0.04")
    return assign(event, rule.field, off, index), {}, index


def break_one_of(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    return assign(event, rule.field, "X" + min(rule.params["values"])), {}, None


def break_not_after_now(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    return assign(event, rule.field, NOW + rule.params["skew"] + timedelta(seconds=1)), {}, None


def break_first_submission(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    return event, {f"invoice:{event['invoice_id']}": ("an-earlier-event", 0, FIRST_PIH)}, None


def break_counter_increases(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    # The seller's last ICV is this invoice's, and its hash the one the invoice links to: only the counter fails.
    return event, {f"seller:{event['tenant_id']}": (event["icv"], event["previous_invoice_hash"])}, None


def break_links_previous_hash(rule: Rule, event: Invoice) -> tuple[Invoice, dict[str, Any], int | None]:
    return assign(event, rule.field, event[rule.field][::-1]), {}, None


BREAKERS: dict[str, Breaker] = {
    "digits": break_digits,
    "lookup": break_lookup,
    "sum": break_sum,
    "one_of": break_one_of,
    "not_after_now": break_not_after_now,
    "first_submission": break_first_submission,
    "counter_increases": break_counter_increases,
    "links_previous_hash": break_links_previous_hash,
}


def judge_both(world: World, event: Invoice, seeded: dict[str, Any]) -> tuple[bool, set[str], str]:
    """(cleared natively, the ids of what the Python path sent, the record's event id)."""
    key, value, headers, _ = world.producer.build(SOURCE, event)
    record = message(value, cast("WireHeaders", headers), key=key)
    state = PartitionState()
    state.update(seeded)
    native = native_clear(world, record, copy_state(state))
    outcome, sent = python_judge(world, record, state)
    assert outcome in {"cleared", "violation"}
    ids = {ce_id.decode() for _, _, _, sent_headers in sent if (ce_id := dict(sent_headers).get("ce_id"))}
    return native is not None, ids, SourceRecord.from_message(record).event_id


def assert_flagged_by_both(world: World, rules: RuleTable, rule: Rule, seq: int) -> None:
    base = invoice(seq)
    cleared, _, _ = judge_both(world, base, {})
    assert cleared, "the unbroken invoice must clear natively"
    broken, seeded, index = BREAKERS[rule.kind](rule, base)
    broken = repaired(rules, broken, (rule, index))
    cleared, sent, event_id = judge_both(world, broken, seeded)
    assert not cleared, f"the fast path cleared an invoice that breaks {rule.code} ({rule.path(index)})"
    # Exactly this rule: the Python path sends one violation, whose id names the code and the field path.
    assert sent == {outcome_id(event_id, f"{rule.code}:{rule.path(index)}")}


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.mark.parametrize("rule", RULES.rules, ids=lambda r: f"{r.code}:{r.field}")
def test_every_rule_broken_alone_is_flagged_by_both_paths(world: World, rule: Rule) -> None:
    assert_flagged_by_both(world, RULES, rule, seq=RULES.rules.index(rule))


def test_every_predicate_has_a_breaker() -> None:
    assert set(BREAKERS) == STATELESS | CHAIN


def test_both_sides_implement_the_same_vocabulary() -> None:
    assert set(InvoiceJudge.predicates()) == STATELESS | CHAIN


THROWAWAY = {
    "code": "TEST-CURRENCY",
    "severity": "WARNING",
    "field": "currency",
    "predicate": {"kind": "one_of", "values": ["SAR"]},
    "message": "currency {value!r} is not SAR",
}


def table_with(tmp_path: Path, *extra: dict[str, Any]) -> RuleTable:
    data = json.loads(TABLE.read_text())
    data["rules"].extend(extra)
    copy = tmp_path / "zatca_rules.json"
    copy.write_text(json.dumps(data))
    return load_rules(copy)


def test_a_rule_added_to_a_copy_of_the_table_is_enforced_by_both(tmp_path: Path) -> None:
    rules = table_with(tmp_path, THROWAWAY)
    euro = {**invoice(40), "currency": "EUR"}
    # The package's table lets a euro invoice through; the copy with the new rule does not, on either path.
    cleared, sent, event_id = judge_both(make_world(), euro, {})
    assert cleared
    assert sent == {outcome_id(event_id, "cleared")}
    world = make_world(rules)
    cleared, sent, event_id = judge_both(world, euro, {})
    assert not cleared
    assert sent == {outcome_id(event_id, "TEST-CURRENCY:currency")}
    cleared, _, _ = judge_both(world, invoice(41), {})
    assert cleared
    # and the generic breaker covers it like any other rule
    added = rules.rules[-1]
    assert added.code == "TEST-CURRENCY"
    assert_flagged_by_both(world, rules, added, seq=42)


def test_a_line_rule_added_to_a_copy_is_enforced_by_both(tmp_path: Path) -> None:
    rule = {
        "code": "TEST-STANDARD-RATED",
        "each": "lines",
        "field": "vat_category",
        "predicate": {"kind": "one_of", "values": ["S"]},
        "message": "line {line_id}: category {value}",
    }
    rules = table_with(tmp_path, rule)
    world = make_world(rules)
    event = invoice(43)
    assert judge_both(world, event, {})[0]
    # Zero-rated at the zero rate, with the totals to match: only the new rule fails.
    line = {**event["lines"][0], "vat_category": "Z", "vat_rate": Decimal("0.00")}
    broken = repaired(rules, {**event, "lines": [line, *event["lines"][1:]]}, (rules.rules[-1], 0))
    cleared, sent, event_id = judge_both(world, broken, {})
    assert not cleared
    assert sent == {outcome_id(event_id, "TEST-STANDARD-RATED:lines[0].vat_category")}
    assert judge_both(make_world(), broken, {})[0]  # the package's table clears it


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"predicate": {"kind": "frobnicate"}}, 'predicate "frobnicate" is not implemented natively'),
        ({"field": "seller.address.city"}, "is not implemented natively"),
        ({"each": "payments"}, "is not implemented natively"),
        ({"predicate": {"kind": "sum", "terms": ["vat_total"], "divide": 3, "tolerance": "0.01"}}, "power of ten"),
    ],
)
def test_a_table_the_native_side_does_not_implement_is_refused(
    world: World, change: dict[str, Any], refusal: str
) -> None:
    data = json.loads(TABLE.read_text())
    data["rules"].append({**THROWAWAY, **change})
    with pytest.raises(ValueError, match=r"^the native judge refuses the rule table: rule 14 \(TEST-CURRENCY\): "):
        InvoiceJudge(world.cleared_writer(), FIRST_PIH, 1_048_576, json.dumps(data))
    with pytest.raises(ValueError, match=refusal):
        InvoiceJudge(world.cleared_writer(), FIRST_PIH, 1_048_576, json.dumps(data))


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"predicate": {"kind": "frobnicate"}}, "unknown predicate 'frobnicate'"),
        ({"message": "{nope}"}, "the message names \\['nope'\\]"),
        ({"severity": "FATAL"}, "severity 'FATAL'"),
        ({"predicate": {"kind": "digits", "length": 1, "first": "3", "last": "3"}}, "bad parameters for digits"),
    ],
)
def test_the_python_loader_refuses_a_malformed_rule(tmp_path: Path, change: dict[str, Any], refusal: str) -> None:
    with pytest.raises(RuleTableError, match=refusal):
        table_with(tmp_path, {**THROWAWAY, **change})


def test_the_chain_checks_are_declared_exactly_once(tmp_path: Path) -> None:
    with pytest.raises(RuleTableError, match="exactly one counter_increases"):
        table_with(
            tmp_path, {"code": "AGAIN", "field": "icv", "predicate": {"kind": "counter_increases"}, "message": "again"}
        )
