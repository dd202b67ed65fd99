"""The replay loop: read the pinned ranges, filter, hand matches to a sink, checkpoint, pace, report progress.

Sinks (a shadow topic, an evidence bundle) say where a resumed run continues and persist progress.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from streams.replay.reader import RateLimiter, read_ranges

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from streams.replay.filters import RecordFilter
    from streams.replay.selection import ReplayPlan

__all__ = ["Progress", "ReplaySink", "run_replay"]

CHECKPOINT_RECORDS = 100_000  # or CHECKPOINT_SECONDS, whichever comes first: a resume repeats little
CHECKPOINT_SECONDS = 2.0


@dataclass
class Progress:
    """How far a replay got: where each partition continues, records read and records matched."""

    next_offsets: dict[int, int] = field(default_factory=dict)
    scanned: int = 0
    matched: int = 0
    matched_by_partition: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "next_offsets": {str(p): o for p, o in sorted(self.next_offsets.items())},
            "scanned": self.scanned,
            "matched": self.matched,
            "matched_by_partition": {str(p): n for p, n in sorted(self.matched_by_partition.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            {int(p): int(o) for p, o in data["next_offsets"].items()},
            int(data["scanned"]),
            int(data["matched"]),
            {int(p): int(n) for p, n in data["matched_by_partition"].items()},
        )


class ReplaySink(Protocol):
    """Where matched records go."""

    def resume(self) -> Progress:
        """Progress of an earlier, interrupted run of this replay (empty when there was none)."""

    def write(self, partition: int, messages: Sequence[Message]) -> None:
        """Matched records of one partition, in offset order."""

    def commit(self, progress: Progress) -> None:
        """Make everything written so far durable and record `progress`."""


OnProgress = Callable[[int], None]  # offsets newly covered


def run_replay(
    consumer: Consumer,
    plan: ReplayPlan,
    sink: ReplaySink,
    record_filter: RecordFilter,
    *,
    rate: float | None = None,
    on_progress: OnProgress | None = None,
) -> Progress:
    """Run `plan` into `sink` from where it stopped last time; returns the final progress (committed)."""
    progress = sink.resume()
    covered = {r.partition: progress.next_offsets.get(r.partition, r.start) - r.start for r in plan.ranges}
    if on_progress is not None:
        on_progress(sum(max(0, c) for c in covered.values()))
    limiter = RateLimiter(rate)
    matches = record_filter.matches if record_filter.active else None
    since_commit, last_commit = 0, time.monotonic()
    starts = {r.partition: r.start for r in plan.ranges}
    with _cyclic_gc_paused():
        for batch in read_ranges(consumer, plan, progress.next_offsets, limiter):
            messages = batch.messages
            if matches is not None:
                messages = [m for m in messages if matches(m)]
            if messages:
                sink.write(batch.partition, messages)
            partition = batch.partition
            before = progress.next_offsets.get(partition, starts[partition])
            progress.next_offsets[partition] = batch.next_offset
            progress.scanned += len(batch.messages)
            progress.matched += len(messages)
            progress.matched_by_partition[partition] = progress.matched_by_partition.get(partition, 0) + len(messages)
            since_commit += len(batch.messages)
            if on_progress is not None:
                on_progress(batch.next_offset - before)
            if batch.done or since_commit >= CHECKPOINT_RECORDS or time.monotonic() - last_commit > CHECKPOINT_SECONDS:
                sink.commit(progress)
                since_commit, last_commit = 0, time.monotonic()
    sink.commit(progress)
    return progress


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The loop makes millions of short-lived, never cyclic tuples and lists (message headers, encodings):
    reference counting frees them, and the cyclic collector would only spend a fifth of the CPU finding
    nothing. It is re-enabled (as it was) afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
