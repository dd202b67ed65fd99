"""The ZATCA rules as pure functions: each rule alone, the seller chain, redelivery, hash and QR."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from streams.agents.zatca import (
    FIRST_PIH,
    SellerChain,
    chain_violations,
    invoice_hash,
    outcome_id,
    qr_payload,
    stateless_violations,
)
from streams.samples import invoice_chain

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def codes(invoice: dict[str, Any]) -> list[str]:
    return [v.rule_code for v in stateless_violations(invoice, now=NOW)]


def test_a_valid_invoice_breaks_no_rule() -> None:
    assert codes(invoice_chain(1)[0]) == []


@pytest.mark.parametrize(("change", "code", "path"), [
    (lambda e: {**e, "seller": {**e["seller"], "vat_number": "300000000000004"}}, "KSA-SELLER-VAT",
     "seller.vat_number"),
    (lambda e: {**e, "seller": {**e["seller"], "vat_number": None}}, "KSA-SELLER-VAT", "seller.vat_number"),
    (lambda e: {**e, "buyer": None}, "KSA-B2B-BUYER-VAT", "buyer.vat_number"),
    (lambda e: {**e, "payable_amount": e["payable_amount"] + 1}, "KSA-TOTALS", "payable_amount"),
    (lambda e: {**e, "tax_currency": "USD"}, "KSA-TAX-CURRENCY", "tax_currency"),
    (lambda e: {**e, "issued_at": NOW + timedelta(hours=1)}, "KSA-ISSUE-DATE", "issued_at"),
])
def test_each_rule_alone(change: Any, code: str, path: str) -> None:
    found = stateless_violations(change(invoice_chain(1)[0]), now=NOW)
    assert [(v.rule_code, v.field_path) for v in found] == [(code, path)]


def test_simplified_invoices_need_no_buyer_vat_and_rounding_is_tolerated() -> None:
    event = {**invoice_chain(1)[0], "subtype": "SIMPLIFIED", "buyer": None}
    assert codes(event) == []
    assert codes({**event, "vat_total": event["vat_total"] + Decimal("0.01"),
                  "tax_inclusive_total": event["tax_inclusive_total"] + Decimal("0.01"),
                  "payable_amount": event["payable_amount"] + Decimal("0.01")}) == []


def test_line_rate_must_match_its_category() -> None:
    event = invoice_chain(1)[0]
    lines = [{**event["lines"][0], "vat_category": "Z"}, *event["lines"][1:]]
    assert "KSA-VAT-RATE" in codes({**event, "lines": lines})


def test_the_chain_accepts_a_linked_sequence_and_flags_icv_and_hash_breaks() -> None:
    chain = SellerChain()
    events = invoice_chain(4)
    for event in events[:2]:
        assert chain_violations(event, chain)[0] == []
    out_of_order = {**events[2], "icv": 1}
    assert [v.rule_code for v in chain_violations(out_of_order, chain)[0]] == ["KSA-ICV"]
    broken = {**events[3], "previous_invoice_hash": FIRST_PIH}
    assert [v.rule_code for v in chain_violations(broken, chain)[0]] == ["KSA-PIH"]


def test_a_redelivered_event_gets_the_same_verdict_and_leaves_the_chain_alone() -> None:
    chain = SellerChain()
    first, second, third = invoice_chain(3)
    chain_violations(first, chain)
    verdict, digest, judged_on = chain_violations(second, chain)
    chain_violations(third, chain)
    state = chain.to_json()
    again, digest_again, _ = chain_violations(second, chain, judged_on)  # redelivered after the crash
    assert (again, digest_again) == (verdict, digest) == ([], invoice_hash(second))
    assert chain.to_json() == state
    assert SellerChain.from_json(state) == chain


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
