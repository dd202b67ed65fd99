"""The bridge loop's collector settings apply only while it runs, and everything is as it was afterwards."""

from __future__ import annotations

import gc

import pytest

from streams.gc_tuning import GC_THRESHOLDS, throughput_gc


def test_throughput_gc_freezes_the_startup_heap_and_restores_thresholds() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with throughput_gc():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_throughput_gc_restores_on_error_and_leaves_a_frozen_heap_frozen() -> None:
    before = gc.get_threshold()
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        with pytest.raises(RuntimeError, match="the loop failed"), throughput_gc():
            raise RuntimeError("the loop failed")
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
