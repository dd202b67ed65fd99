"""Reading pinned offset ranges, one partition after another, without joining a consumer group.

Partition by partition in offset order, so every run sees the records in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.replay.errors import ReplayError

if TYPE_CHECKING:
    from collections.abc import Generator

    from streams.archive.read import ArchiveView
    from streams.replay.selection import PinnedRange, ReplayPlan
    from streams.settings import KafkaConfig

__all__ = ["Batch", "ConsumedRecord", "RateLimiter", "consumed", "read_ranges", "reader_consumer"]

BATCH = 2000
IDLE_TIMEOUT_S = 30.0
_ERROR = Message.error  # no record for this long inside a pinned range: the broker is gone


class ConsumedRecord(Protocol):
    """What a consumed, error-free Message guarantees (the stubs also allow None offsets and dict headers)."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...


def consumed(messages: Sequence[Message]) -> Sequence[ConsumedRecord]:
    """`messages` (from `consume`, errors already dropped) with the precise types a hot loop relies on."""
    return cast("Sequence[ConsumedRecord]", messages)


@dataclass(frozen=True)
class Batch:
    """Records of one partition, in offset order; `next_offset` is where reading continues."""

    partition: int
    messages: list[Message]
    next_offset: int
    done: bool  # the partition's range is finished


def reader_consumer(kafka_config: KafkaConfig) -> Consumer:
    """A consumer that is only ever assigned (never joins a group, never commits)."""
    return Consumer(
        {
            **kafka_config,
            "group.id": "streams-replay",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # An offset retention removed while reading is an error, never a silent jump to the end.
            "auto.offset.reset": "error",
            # A fetch for the partition just finished waits at its end; keep that short so the next starts soon.
            "fetch.wait.max.ms": 10,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
        }
    )


class RateLimiter:
    """Sleeps so that no more than `rate` records per second pass (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._started = time.monotonic()
        self._count = 0

    def batch_size(self) -> int:
        return BATCH if self.rate is None else max(1, min(BATCH, int(self.rate / 10)))

    def pace(self, count: int) -> None:
        if self.rate is None:
            return
        self._count += count
        ahead = self._count / self.rate - (time.monotonic() - self._started)
        if ahead > 0:
            time.sleep(ahead)


def read_ranges(consumer: Consumer, plan: ReplayPlan, resume: dict[int, int], limiter: RateLimiter) -> Iterator[Batch]:
    """Batches of every pinned range in partition order, starting at `resume[partition]` when given.

    Offsets below the plan's `archived_below` (or below Kafka's log start now, if retention removed more
    since the plan was made) are read from the archive, the rest from Kafka.
    """
    archive = None
    for pinned in plan.ranges:
        start = max(pinned.start, resume.get(pinned.partition, pinned.start))
        if start >= pinned.end:
            yield Batch(pinned.partition, [], pinned.end, done=True)
            continue
        if plan.archive is not None and pinned.partition in plan.archived_below:
            if archive is None:
                from streams.archive.read import open_view  # noqa: PLC0415 - only replays through an archive

                archive = open_view(plan.archive, plan.query.topic)
            # Until Kafka holds `start`: retention may remove more while the archive is read, so ask again.
            while start < pinned.end and start < (
                split := max(
                    plan.archived_below[pinned.partition], _log_start(consumer, plan.query.topic, pinned.partition)
                )
            ):
                start = yield from _read_archive(archive, plan, pinned, start, min(split, pinned.end), limiter)
            if start >= pinned.end:
                continue
        yield from _read_range(consumer, plan.query.topic, pinned, start, limiter)


def _read_archive(
    archive: ArchiveView | None, plan: ReplayPlan, pinned: PinnedRange, start: int, until: int, limiter: RateLimiter
) -> Generator[Batch, None, int]:
    """Batches of [start, until) from the archive; returns where reading continues (`until`)."""
    topic = plan.query.topic
    for records in archive.read(pinned.partition, start, until) if archive is not None else ():
        if records:
            limiter.pace(len(records))
            start = records[-1].offset() + 1
            yield Batch(pinned.partition, cast("list[Message]", records), start, done=start >= pinned.end)
    covered = archive.covered(pinned.partition) if archive is not None else None
    if start < until and covered is not None and covered[1] >= until:
        start = until  # the archive's last offsets there were transaction markers
        yield Batch(pinned.partition, [], start, done=start >= pinned.end)
    if start < until:
        raise ReplayError(
            f"'{topic}' partition {pinned.partition}: offsets {start}-{until - 1} are neither in "
            f"Kafka nor in the archive at {plan.archive}"
        )
    return start


def _log_start(consumer: Consumer, topic: str, partition: int) -> int:
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10.0)[0])
    except KafkaException as exc:
        raise ReplayError(f"cannot read '{topic}' partition {partition}: {exc.args[0]}") from exc


def _read_range(
    consumer: Consumer, topic: str, pinned: PinnedRange, start: int, limiter: RateLimiter
) -> Iterator[Batch]:
    try:
        consumer.assign([TopicPartition(topic, pinned.partition, start)])
    except KafkaException as exc:
        raise ReplayError(f"cannot read '{topic}' partition {pinned.partition}: {exc.args[0]}") from exc
    position = start
    idle_since = time.monotonic()
    while position < pinned.end:
        wanted = min(limiter.batch_size(), pinned.end - position)
        try:
            messages = consumer.consume(wanted, 1.0)
        except KafkaException as exc:
            raise ReplayError(f"reading '{topic}' partition {pinned.partition}: {exc.args[0]}") from exc
        kept: list[Message] = []
        at_end = False
        last = messages[-1].offset() if messages else None
        if last is not None and last < pinned.end and not any(map(_ERROR, messages)):
            # the common batch: no error or end-of-partition event, all inside the range (checked in C)
            kept, position, messages = messages, last + 1, []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end = True  # transaction markers or compaction left the range's tail empty
                    continue
                raise ReplayError(f"reading '{topic}' partition {pinned.partition} at offset {position}: {error}")
            offset = message.offset()
            if offset is None or offset >= pinned.end:
                at_end = True
                break
            kept.append(message)
            position = offset + 1
        if kept:
            idle_since = time.monotonic()
        elif at_end:
            position = pinned.end
        elif time.monotonic() - idle_since > IDLE_TIMEOUT_S:
            raise ReplayError(
                f"reading '{topic}' partition {pinned.partition}: no record for {IDLE_TIMEOUT_S:.0f}s "
                f"at offset {position} (range ends at {pinned.end}); is the broker up?"
            )
        if at_end:
            position = pinned.end
        limiter.pace(len(kept))
        yield Batch(pinned.partition, kept, position, done=position >= pinned.end)
    consumer.unassign()
