"""What an agent adds to faust's at-least-once: no source record skipped, none left undelivered.

faust can hand an agent a partition with a hole in it: records dropped when a rebalance lands in the
middle of a fetch are later taken for a "gap" and committed over; and after a recovery it can drop
records it already fetched. The guard knows, per source partition, the next offset the agent should
see, so the agent reads holes itself and faust is sent back to records it dropped
(docs/decisions/0012-agent-continuity.md). Re-drives need no help here: the faust agents' effects are
idempotent by event id (the validation agent, on the transactional engine, keeps its own marks: 0016).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import structlog
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.errors import StreamsError
from streams.kafka_util import read_range

if TYPE_CHECKING:
    from collections.abc import Callable

    import faust
    from confluent_kafka import Message

    from streams.settings import KafkaConfig

log = structlog.get_logger("streams.agents.continuity")

T = TypeVar("T")
IDLE_S = 10.0  # an agent idle this long while its partitions hold records it has not seen was dropped (see below)


TP = tuple[str, int]


@dataclass
class ContinuityGuard:
    """Per source partition of an agent's topics: the next offset the agent should see."""

    kafka: KafkaConfig
    group: str
    topics: tuple[str, ...]
    expected: dict[TP, int] = field(default_factory=dict)
    _admin: AdminClient | None = None  # set by start()
    _handling: bool = False  # between hole_before and saw: the agent is on a record
    _last_activity: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        """Connect (once: when faust restarts the agent, keep what we know)."""
        if self._admin is not None:
            return
        self._admin = AdminClient(self.kafka)
        self._last_activity = time.monotonic()  # the agent starts reading now
        log.info("continuity guard ready", group=self.group, topics=list(self.topics))

    async def hole_before(self, topic: str, partition: int, offset: int) -> list[Message]:
        """The records between the last one this agent saw on the partition (or the group's commit) and `offset`.

        Empty in the normal case; records only when faust skipped some. Call it before handling `offset`.
        """
        self._handling, self._last_activity = True, time.monotonic()
        known = self.expected.get((topic, partition))
        if known is not None and offset <= known:  # in order, or a rewind after a rebalance
            return []
        # First sight of the partition, or a jump: the group's commit says where processing really stopped
        # (another worker may have owned the partition in between).
        committed = await _until_done(functools.partial(self._group_committed, topic, partition))
        start = max((mark for mark in (known, committed) if mark is not None), default=offset)
        if start >= offset:
            return []
        records = await _until_done(functools.partial(read_range, self.kafka, topic, partition, start, offset))
        if records:
            log.warning("reading records the stream skipped", topic=topic, partition=partition,
                        start=start, end=offset, records=len(records))
        return records

    def saw(self, topic: str, partition: int, offset: int) -> None:
        self.expected[topic, partition] = offset + 1
        self._handling, self._last_activity = False, time.monotonic()

    def watch(self, app: faust.App) -> None:
        """Check every few seconds that `app`'s agent has not been left idle with records it never got."""
        async def redeliver_dropped() -> None:
            await self.redeliver_dropped(app)

        app.timer(interval=IDLE_S / 2)(redeliver_dropped)

    async def redeliver_dropped(self, app: faust.App) -> None:
        """Seek faust back to the next offset the agent should see, on partitions where faust dropped records.

        faust-streaming 0.15.3 can lose records it fetched: after a recovery it seeks the stream partitions
        to the committed offsets and only then resumes flow control, which empties the agents' queues, so
        records fetched in between are gone while faust's read position has moved past them. Nothing
        re-reads them until the next record arrives on the partition (the hole check then would). The
        agent being idle for IDLE_S while faust says it handed on an offset the agent never saw is that
        case; a seek makes faust fetch and deliver the records again (none was seen, so none is handled
        twice).
        """
        if self._handling or time.monotonic() - self._last_activity < IDLE_S or app.rebalancing or app.in_recovery:
            return
        consumer = app.consumer
        delivered = getattr(consumer, "_read_offset", None)  # faust's last offset handed on, per partition
        for tp in consumer.assignment():
            end = consumer.highwater(tp) if tp.topic in self.topics else None
            if end is None:
                continue
            start = self.expected.get((tp.topic, tp.partition))
            if start is None:  # nothing seen here since the assignment: the group's commit is where it resumes
                start = await _until_done(functools.partial(self._group_committed, tp.topic, tp.partition))
                if start is None:
                    continue
                self.expected[tp.topic, tp.partition] = start  # as good as seen: asked once, not every check
            last = delivered.get(tp) if delivered is not None else end - 1
            if start < end and last is not None and last >= start:
                log.warning("the agent is idle but its partition holds records it never got; re-reading them",
                            topic=tp.topic, partition=tp.partition, start=start, end=end)
                await consumer.seek(tp, start)
                self._last_activity = time.monotonic()

    async def start_async(self) -> None:
        """`start` off the event loop, retried until it works (an agent must not run without its guard)."""
        await _until_done(self.start)

    def _group_committed(self, topic: str, partition: int) -> int | None:
        return self._committed_offsets([TopicPartition(topic, partition)]).get((topic, partition))

    def _committed_offsets(self, partitions: list[TopicPartition] | None = None) -> dict[TP, int]:
        admin = self._admin or AdminClient(self.kafka)
        request = ConsumerGroupTopicPartitions(self.group, partitions)
        result = admin.list_consumer_group_offsets([request], request_timeout=10)[self.group].result()
        return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions
                if tp.topic in self.topics and tp.offset >= 0}


async def _until_done(call: Callable[[], T]) -> T:
    """Run a blocking Kafka call off the loop until it succeeds.

    Giving up is not an option: an exception would end the agent's iteration, and faust acknowledges the
    record it was on, so the hole would be committed over after all. Waiting keeps the record uncommitted.
    """
    loop = asyncio.get_running_loop()
    for attempt in itertools.count():
        try:
            return await loop.run_in_executor(None, call)
        except (KafkaException, StreamsError) as exc:
            delay = min(5.0, 0.2 * 2**attempt)
            log.warning("kafka call failed; retrying", error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - itertools.count never ends
