"""Selector parsing: instants, per-partition offsets, pinned ranges, field filters, plan round trips."""

from __future__ import annotations

import pytest

from streams.replay.errors import ReplayError
from streams.replay.selection import (
    PinnedRange,
    ReplayPlan,
    ReplayQuery,
    format_ms,
    format_ranges,
    parse_bound,
    parse_ranges,
    parse_where,
)


def test_instants_resolve_to_epoch_milliseconds_in_any_zone() -> None:
    assert parse_bound("2026-11-01T08:00:00.001Z", "--from") == 1_793_520_000_001
    assert parse_bound("2026-11-01T11:00:00.001+03:00", "--from") == 1_793_520_000_001
    assert format_ms(1_793_520_000_001) == "2026-11-01T08:00:00.001Z"


def test_offsets_per_partition() -> None:
    assert parse_bound("0:100, 1:250", "--from") == {0: 100, 1: 250}
    assert parse_bound(None, "--to") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-01T08:00:00", "has no timezone"),
        ("yesterday", "neither an ISO-8601 time"),
        ("0:1,0:2", "partition 0 is given twice"),
    ],
)
def test_bad_bounds_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        parse_bound(text, "--from")


def test_ranges_round_trip() -> None:
    ranges = parse_ranges("0:100-200,2:0-5")
    assert ranges == {0: (100, 200), 2: (0, 5)}
    pinned = [PinnedRange(p, s, e) for p, (s, e) in ranges.items()]
    assert format_ranges(pinned) == "0:100-200,2:0-5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0:100", "not a list of partition:start-end"),
        ("0:200-100", "starts at 200, after its end 100"),
        ("1:0-1,1:2-3", "given twice"),
    ],
)
def test_bad_ranges(text: str, message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        parse_ranges(text)


def test_where() -> None:
    assert parse_where("seller.vat_number=300000000000003") == (("seller", "vat_number"), "300000000000003")
    assert parse_where("note=a=b") == (("note",), "a=b")
    with pytest.raises(ReplayError, match="FIELD=VALUE"):
        parse_where("seller..vat=1")


def test_plan_json_round_trip() -> None:
    query = ReplayQuery(
        "invoice.created", "2026-11-01T00:00:00Z", None, None, (0, 1), "k", "acme", None, ("seller.vat_number=3",)
    )
    plan = ReplayPlan(query, (PinnedRange(0, 5, 10), PinnedRange(1, 0, 0)), 3, 1_793_491_200_000, None, {0: 5})
    again = ReplayPlan.from_json(plan.to_json())
    assert again == plan
    assert again.total == 5
    assert plan.to_json()["ranges_arg"] == "0:5-10,1:0-0"
