"""The ZATCA rules as pure functions: each rule alone, the seller chain, redelivery, hash and QR."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.agents.rules import stateless_violations
from streams.agents.zatca import (
    FIRST_PIH,
    OUTCOME_NAMESPACE,
    SellerChain,
    canonical_json,
    chain_violations,
    invoice_hash,
    outcome_id,
    qr_payload,
)
from streams.demo.samples import invoice_chain

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def codes(invoice: dict[str, Any]) -> list[str]:
    return [v.rule_code for v in stateless_violations(invoice, now=NOW)]


def test_a_valid_invoice_breaks_no_rule() -> None:
    assert codes(invoice_chain(1)[0]) == []


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        (
            lambda e: {**e, "seller": {**e["seller"], "vat_number": "300000000000004"}},
            "KSA-SELLER-VAT",
            "seller.vat_number",
        ),
        (lambda e: {**e, "seller": {**e["seller"], "vat_number": None}}, "KSA-SELLER-VAT", "seller.vat_number"),
        (lambda e: {**e, "buyer": None}, "KSA-B2B-BUYER-VAT", "buyer.vat_number"),
        (lambda e: {**e, "payable_amount": e["payable_amount"] + 1}, "KSA-TOTALS", "payable_amount"),
        (lambda e: {**e, "tax_currency": "USD"}, "KSA-TAX-CURRENCY", "tax_currency"),
        (lambda e: {**e, "issued_at": NOW + timedelta(hours=1)}, "KSA-ISSUE-DATE", "issued_at"),
    ],
)
def test_each_rule_alone(change: Any, code: str, path: str) -> None:
    found = stateless_violations(change(invoice_chain(1)[0]), now=NOW)
    assert [(v.rule_code, v.field_path) for v in found] == [(code, path)]


def test_simplified_invoices_need_no_buyer_vat_and_rounding_is_tolerated() -> None:
    event = {**invoice_chain(1)[0], "subtype": "SIMPLIFIED", "buyer": None}
    assert codes(event) == []
    assert (
        codes(
            {
                **event,
                "vat_total": event["vat_total"] + Decimal("0.01"),
                "tax_inclusive_total": event["tax_inclusive_total"] + Decimal("0.01"),
                "payable_amount": event["payable_amount"] + Decimal("0.01"),
            }
        )
        == []
    )


def test_line_rate_must_match_its_category() -> None:
    event = invoice_chain(1)[0]
    lines = [{**event["lines"][0], "vat_category": "Z"}, *event["lines"][1:]]
    assert "KSA-VAT-RATE" in codes({**event, "lines": lines})


def judge(chain: SellerChain, event: dict[str, Any]) -> list[str]:
    found, digest = chain_violations(event, chain.state)
    chain.advance(event["icv"], digest)
    return [v.rule_code for v in found]


def test_the_chain_accepts_a_linked_sequence_and_flags_icv_and_hash_breaks() -> None:
    chain = SellerChain()
    events = invoice_chain(4)
    assert judge(chain, events[0]) == judge(chain, events[1]) == []
    assert judge(chain, {**events[2], "icv": 1}) == ["KSA-ICV"]
    assert judge(chain, {**events[3], "previous_invoice_hash": FIRST_PIH}) == ["KSA-PIH"]
    assert chain.last_icv == 4


def test_a_redelivery_judged_on_its_remembered_state_gets_the_same_verdict() -> None:
    chain = SellerChain()
    first, second, third = invoice_chain(3)
    judge(chain, first)
    before = chain.state
    verdict = chain_violations(second, before)
    judge(chain, second)
    judge(chain, third)
    assert chain_violations(second, before) == verdict == ([], invoice_hash(second))
    assert chain_violations(second, chain.state)[0] != []  # judged on today's state it would look broken
    assert SellerChain.from_json(chain.to_json()) == chain


def test_hash_is_canonical_and_qr_is_tlv() -> None:
    event = invoice_chain(1)[0]
    reordered = dict(reversed(list(event.items())))
    assert invoice_hash(event) == invoice_hash(reordered)
    assert invoice_hash(event) != invoice_hash({**event, "invoice_number": "other"})
    raw = base64.b64decode(qr_payload(event))
    fields = []
    while raw:
        tag, length = raw[0], raw[1]
        fields.append((tag, raw[2 : 2 + length].decode()))
        raw = raw[2 + length :]
    assert [tag for tag, _ in fields] == [1, 2, 3, 4, 5]
    assert fields[1][1] == event["seller"]["vat_number"]
    assert fields[3][1] == str(event["tax_inclusive_total"])


def test_outcome_ids_are_deterministic() -> None:
    assert outcome_id("e1", "cleared") == outcome_id("e1", "cleared") != outcome_id("e2", "cleared")


def test_search_index_upserts_are_idempotent_within_and_across_batches(tmp_path: Any) -> None:
    from streams.agents.indexing import SearchIndex  # noqa: PLC0415 - the index is not a rule; kept close for size

    index = SearchIndex(tmp_path / "index.sqlite")
    doc = ("e1", "workflow.completed", "acme", "workflow payment-run SUCCEEDED", "payment run", {"a": 1}, 0, 1)
    assert index.upsert([doc, doc]) == 1
    index.upsert([doc])
    assert index.count() == 1
    assert [hit["doc_id"] for hit in index.search("payment", tenant="acme")] == ["e1"]
    assert index.search("payment", tenant="other") == []
    index.close()


def _reference_canonical_json(value: Any) -> str:
    """The canonical form as decision 0011 first defined it, with the standard library's json."""

    def default(item: Any) -> Any:
        if isinstance(item, Decimal):
            return format(item, "f")
        if isinstance(item, datetime):
            return item.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if isinstance(item, date):
            return item.isoformat()
        if isinstance(item, bytes):
            return base64.b64encode(item).decode()
        raise TypeError(type(item).__name__)

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)


_text = st.text(st.characters(exclude_categories=["Cs"]))  # lone surrogates are not text either way
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    _text,
    st.binary(max_size=16),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=3))])),
    st.dates(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_canonical_json_is_the_documented_form(value: Any) -> None:
    assert canonical_json(value) == _reference_canonical_json(value)


def test_canonical_json_of_real_invoices_is_the_documented_form() -> None:
    for invoice in invoice_chain(20, seed=3):
        assert canonical_json(invoice) == _reference_canonical_json(invoice)


@settings(max_examples=300, deadline=None)
@given(_text, _text)
def test_outcome_ids_are_uuid5_in_the_outcome_namespace(event_id: str, what: str) -> None:
    assert outcome_id(event_id, what) == str(uuid.uuid5(OUTCOME_NAMESPACE, f"{event_id}:{what}"))
