"""Garbage-collector settings for the hot loops (the Celery bridge and the agents' transactional engine)."""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

# Collector thresholds while a hot loop runs. A consumed batch brings thousands of tracked objects at once
# (confluent-kafka's messages, their header lists and tuples) that reference counting frees a moment later;
# with Python's default of 700 they trigger collections that promote them, and full collections follow
# every few thousand records, each walking the whole heap (Celery, kombu, pydantic, an agent's state, ...):
# 15-20 us of CPU per task in a profiled bridge run, a quarter of its work; ~8% of the validation agent's.
# A first generation larger than a batch's peak collects about once per 100k records instead (cycles are
# rare here: the loop's garbage is acyclic).
GC_THRESHOLDS = (100_000, 10, 10)


@contextlib.contextmanager
def throughput_gc() -> Iterator[None]:
    """Collect less often, and never walk what exists before the loop starts; as it was afterwards.

    The objects that exist now (modules, classes, the catalog, the Celery or faust app) live as long as the
    process: frozen, full collections skip them. The loop's garbage is almost all freed by reference counting.
    """
    thresholds = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # a process that froze its own heap keeps it as it chose
    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()
