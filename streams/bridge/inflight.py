"""What the bridge consumed but has not confirmed yet: per-partition records and per-queue waiting tasks.

A partition's offset may be committed up to its first record that still has work outstanding.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from streams.bridge.router import RoutedTask

__all__ = ["InFlight", "PendingRecord", "PendingTask", "QueueSlot", "TopicPartitionKey", "first_tasks"]

TopicPartitionKey = tuple[str, int]
QueueSlot = tuple[str, int]  # a Celery queue and the index of its priority list


@dataclass(slots=True, eq=False)
class PendingRecord:
    """One consumed record; `left` counts its tasks not yet confirmed plus dead letters not yet delivered."""

    tp: TopicPartitionKey
    offset: int
    left: int = 0


class PendingTask(NamedTuple):
    """One task message of a consumed record, waiting to be pushed to its queue's priority list."""

    record: PendingRecord
    task: RoutedTask


@dataclass
class InFlight:
    """Bounded bookkeeping between consume and commit; single-threaded (the bridge loop owns it)."""

    records: dict[TopicPartitionKey, deque[PendingRecord]] = field(default_factory=dict)
    waiting: dict[QueueSlot, list[PendingTask]] = field(default_factory=dict)
    outstanding: int = 0  # records not yet done
    tasks_waiting: int = 0
    completed: int = 0  # records that became committable, ever
    _dirty: set[TopicPartitionKey] = field(default_factory=set)

    def add(self, tp: TopicPartitionKey, offset: int) -> PendingRecord:
        """Track a consumed record (in offset order per partition); done at once if nothing is added to it."""
        record = PendingRecord(tp, offset)
        records = self.records.get(tp)
        if records is None:
            records = self.records[tp] = deque()
        records.append(record)
        self.outstanding += 1
        self._dirty.add(tp)
        return record

    def enqueue(self, record: PendingRecord, tasks: list[RoutedTask]) -> None:
        """`record`'s tasks wait for their queues; the record is done when Redis confirmed them all."""
        record.left += len(tasks)
        self.tasks_waiting += len(tasks)
        waiting = self.waiting
        for task in tasks:
            group = (task.queue, task.slot)
            pending = waiting.get(group)
            if pending is None:
                pending = waiting[group] = []
            pending.append(PendingTask(record, task))

    def hold(self, record: PendingRecord) -> None:
        """One more thing (a dead letter) must be confirmed before `record` is done."""
        record.left += 1

    def settle(self, record: PendingRecord) -> None:
        """One thing of `record` was confirmed."""
        record.left -= 1
        self._dirty.add(record.tp)

    def confirm(self, group: QueueSlot, count: int) -> list[PendingTask]:
        """The first `count` waiting tasks of `group` (queue, priority list) are in Redis; returns them."""
        tasks = self.waiting.get(group, [])
        done, rest = tasks[:count], tasks[count:]
        if rest:
            self.waiting[group] = rest
        else:
            self.waiting.pop(group, None)
        self.tasks_waiting -= len(done)
        dirty = self._dirty
        for task in done:
            record = task.record
            record.left -= 1
            dirty.add(record.tp)
        return done

    def committable(self) -> dict[TopicPartitionKey, int]:
        """Next offset to commit for each partition whose done prefix grew (done records are forgotten)."""
        out: dict[TopicPartitionKey, int] = {}
        for tp in self._dirty:
            queue = self.records.get(tp)
            while queue and queue[0].left <= 0:
                out[tp] = queue.popleft().offset + 1
                self.outstanding -= 1
                self.completed += 1
        self._dirty.clear()
        return out

    def blocked_partitions(self, queues: set[str] | None = None) -> set[TopicPartitionKey]:
        """Partitions with a task waiting for one of `queues` (all queues when None)."""
        return {
            task.record.tp
            for (queue, _), tasks in self.waiting.items()
            if queues is None or queue in queues
            for task in tasks
        }

    def drop(self, tps: set[TopicPartitionKey]) -> int:
        """Forget revoked partitions' unconfirmed work (it will be redelivered); how many records."""
        dropped = 0
        for tp in tps:
            queue = self.records.pop(tp, None)
            dropped += len(queue or ())
            self._dirty.discard(tp)
        self.outstanding -= dropped
        for name in list(self.waiting):
            kept = [task for task in self.waiting[name] if task.record.tp not in tps]
            self.tasks_waiting -= len(self.waiting[name]) - len(kept)
            if kept:
                self.waiting[name] = kept
            else:
                del self.waiting[name]
        return dropped


def first_tasks(
    waiting: dict[QueueSlot, list[PendingTask]], limit: int, turn: int
) -> dict[QueueSlot, list[PendingTask]]:
    """At most `limit` tasks, each group's oldest first, starting with group number `turn` (mod the count).

    One push stays bounded, so it ends well inside the Redis socket time-out (a timed-out push is sent
    again, making duplicates); rotating the first group keeps a deep queue from starving the others.
    """
    groups = list(waiting)
    if not groups:
        return {}
    start = turn % len(groups)
    room, out = limit, {}
    for group in groups[start:] + groups[:start]:
        if room <= 0:
            break
        out[group] = waiting[group][:room]
        room -= len(out[group])
    return out
