"""Filters are exact: no prefix, no case folding; --where compares by the decoded value's type."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from streams.replay.errors import ReplayError
from streams.replay.filters import RecordFilter, _comparer
from streams.replay.selection import ReplayQuery
from tests.replay.fakes import FakeMessage, decoder, invoice_messages


def message(key: bytes | None = b"inv-1", tenant: bytes = b"acme", type_: bytes = b"invoice.created") -> FakeMessage:
    return FakeMessage("t.x", 0, 0, 0, key, b"", [("ce_tenantid", tenant), ("ce_type", type_)])


@pytest.mark.parametrize(
    ("query", "hits"),
    [
        (ReplayQuery("t.x", key="inv-1"), [True, False, False, False, True, True]),
        (ReplayQuery("t.x", tenant="acme"), [True, True, False, False, True, True]),
        (ReplayQuery("t.x", type_="invoice.created"), [True, True, True, True, False, True]),
        (ReplayQuery("t.x", key="inv-1", tenant="acme"), [True, False, False, False, True, True]),
    ],
)
def test_key_tenant_and_type_are_exact(query: ReplayQuery, hits: list[bool]) -> None:
    candidates = [
        message(),
        message(key=b"inv-10"),
        message(key=b"inv-1 ", tenant=b"acme-2"),
        message(key=None, tenant=b"ACME"),
        message(type_=b"invoice.created.v2"),
        message(),
    ]
    record_filter = RecordFilter(query, None)
    assert [record_filter.matches(c) for c in candidates] == hits  # type: ignore[arg-type]


def test_where_decodes_and_matches_nested_fields() -> None:
    messages = invoice_messages("t.x", 6)
    by_vat = RecordFilter(ReplayQuery("t.x", where=("seller.vat_number=300000000000003",)), decoder())
    assert all(by_vat.matches(m) for m in messages)  # type: ignore[arg-type]
    by_tenant = RecordFilter(ReplayQuery("t.x", where=("tenant_id=globex",)), decoder())
    assert [by_tenant.matches(m) for m in messages] == [m.headers_[2][1] == b"globex" for m in messages]  # type: ignore[arg-type,index]


def test_where_on_a_field_the_schema_lacks_is_an_error() -> None:
    record_filter = RecordFilter(ReplayQuery("t.x", where=("seller.vat=1",)), decoder())
    with pytest.raises(ReplayError, match=r"seller of topic 't.x' \(schema id 7\) has no field 'vat'"):
        record_filter.matches(invoice_messages("t.x", 1)[0])  # type: ignore[arg-type]


def test_where_needs_a_decoder() -> None:
    with pytest.raises(ReplayError, match="schema registry"):
        RecordFilter(ReplayQuery("t.x", where=("a=1",)), None)


def test_comparisons_follow_the_value_type() -> None:
    assert _comparer("1150.00")(Decimal(1150))
    assert not _comparer("1150.01")(Decimal(1150))
    assert _comparer("7")(7)
    assert _comparer("true")(True)
    assert _comparer("null")(None)
    assert _comparer("2026-11-01T08:00:00Z")(datetime(2026, 11, 1, 8, tzinfo=UTC))
    assert not _comparer("2026-11-01T08:00:00")(datetime(2026, 11, 1, 8, tzinfo=UTC))  # no zone: no match
    assert _comparer("SAR")("SAR")
    assert not _comparer("sar")("SAR")
