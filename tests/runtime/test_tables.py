"""Tables and windows against a partition's state, without a broker: writes, undo, window arithmetic,
closing by a watermark, expiry and late events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.runtime.outcomes import LateEvent
from streams.runtime.state import PartitionState
from streams.runtime.tables import SCOPE, Table, WindowedTable


@pytest.fixture
def state() -> Iterator[PartitionState]:
    partition = PartitionState()
    SCOPE.state = partition
    SCOPE.begin(0)
    yield partition
    SCOPE.state = None


def at(timestamp_ms: int) -> None:
    SCOPE.begin(timestamp_ms)


def test_a_table_reads_its_default_writes_json_and_marks_keys_dirty(state: PartitionState) -> None:
    counts = Table("counts", default=int)
    assert counts["a"] == 0
    assert "a" not in counts
    counts["a"] += 1
    counts[7] = 3  # keys are strings
    assert (counts["a"], counts["7"], state["counts:a"]) == (1, 3, 1)
    assert state.dirty == {"counts:a", "counts:7"}
    with pytest.raises(TypeError, match="table 'counts' keeps JSON values"):
        counts["b"] = {1, 2}
    counts["c"] = [1, [2, 3]]
    assert counts["c"] == (1, (2, 3))  # arrays are stored as tuples, as they come back from the changelog


def test_undo_puts_back_what_a_failed_event_changed(state: PartitionState) -> None:
    counts = Table("counts", default=int)
    counts["kept"] = 5
    at(1)  # a new event
    counts["kept"] += 1
    counts["new"] = 1
    del counts["kept"]
    SCOPE.outputs.append(("t", None, b"", []))
    SCOPE.undo()
    assert (counts["kept"], "new" in counts, SCOPE.outputs) == (5, False, [])


def test_a_table_without_default_raises_key_error(state: PartitionState) -> None:
    with pytest.raises(KeyError):
        Table("plain")["missing"]
    assert Table("plain").get("missing", "d") == "d"


def test_tumbling_windows_count_per_window_and_read_current_now_and_delta(state: PartitionState) -> None:
    minutes = Table("per-minute", default=int).tumbling(60)
    at(61_000)
    minutes["u"] += 1
    at(119_999)
    minutes["u"] += 2
    at(120_000)
    minutes["u"] += 5
    assert minutes["u"].current() == 5
    assert minutes["u"].delta(60) == 3
    assert state["per-minute:60000:u"] == 3
    assert minutes["u"].now() == 0  # the clock's minute has nothing


def test_hopping_windows_hold_an_event_in_every_window_covering_it(state: PartitionState) -> None:
    hops = Table("hops", default=int).hopping(10, 5)
    assert hops.starts(12_000) == [10_000, 5_000]
    at(12_000)
    hops["k"] += 1
    assert (state["hops:10000:k"], state["hops:5000:k"]) == (1, 1)
    with pytest.raises(ValueError, match="multiple of its step"):
        Table("bad").hopping(10, 3)


def test_closing_yields_each_window_once_keeps_it_until_it_expires_and_refuses_late_events(
    state: PartitionState,
) -> None:
    windows = Table("w", default=int).tumbling(10, expires=30, grace=5)
    at(3_000)
    windows["a"] += 1
    windows["b"] += 2
    at(14_000)
    windows["a"] += 1
    assert list(windows.closing(state, 14_000)) == []  # [0, 10) closes at 10 + 5 grace
    closed = list(windows.closing(state, 15_000))
    assert closed == [(("a", (0.0, 10.0)), 1), (("b", (0.0, 10.0)), 2)]
    assert state["w:__closed"] == 15_000  # recorded: a restart does not close them again
    assert list(windows.closing(state, 16_000)) == []  # never twice
    assert state["w:0:a"] == 1  # kept for reads until 30 s after its end
    at(9_000)
    with pytest.raises(LateEvent, match="late for table 'w'"):
        windows["a"] += 1
    assert list(windows.closing(state, 40_000)) == [(("a", (10.0, 20.0)), 1)]
    assert "w:0:a" not in state  # expired: deleted (a tombstone in the changelog)
    assert "w:0:a" in state.dirty


def test_a_restored_state_rebuilds_its_window_index(state: PartitionState) -> None:
    windows = Table("w", default=int).tumbling(10)
    at(1_000)
    windows["x:y"] += 1  # keys may hold the separator
    restored = PartitionState()
    dict.update(restored, state)
    index = windows.rebuild(restored)
    assert index.windows == {0: {"x:y"}}
    restored.derived["w"] = index
    SCOPE.state = restored
    assert list(windows.closing(restored, 10_000)) == [(("x:y", (0.0, 10.0)), 1)]


def test_tables_refuse_use_outside_an_agent() -> None:
    SCOPE.state = None
    with pytest.raises(RuntimeError, match="only inside an agent"):
        Table("t", default=int)["k"]
    assert isinstance(Table("t").tumbling(1), WindowedTable)
