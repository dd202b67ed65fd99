"""Replay targets on the cluster: a shadow topic copy, and moving a stopped consumer group back to a range.

A shadow record keeps key, value and headers byte for byte, in the source partition, plus replay headers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from streams.publish import DURABILITY
from streams.replay.errors import ReplayError
from streams.replay.reader import consumed, reader_consumer
from streams.replay.runner import Progress

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from streams.replay.selection import ReplayPlan
    from streams.settings import KafkaConfig

__all__ = [
    "REPLAY_ID",
    "GroupResetPlan",
    "OffsetMove",
    "ShadowTopicSink",
    "apply_group_reset",
    "plan_group_reset",
    "shadow_topic_name",
]

REPLAY_ID, REPLAY_TOPIC, REPLAY_PARTITION = "streams_replay_id", "streams_replay_topic", "streams_replay_partition"
REPLAY_OFFSET, REPLAY_TIMESTAMP = "streams_replay_offset", "streams_replay_timestamp"
TIMEOUT_S = 15.0
_STOPPED = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD}


def shadow_topic_name(topic: str, replay_id: str) -> str:
    return f"{topic}.replay.{replay_id}"


class ShadowTopicSink:
    """Copies matched records into `name` (created with the source's partition count when missing)."""

    def __init__(self, kafka_config: KafkaConfig, plan: ReplayPlan, replay_id: str, name: str) -> None:
        self.kafka_config, self.plan, self.replay_id, self.name = kafka_config, plan, replay_id, name
        self.source = plan.query.topic
        self.created = False
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self._id = replay_id.encode()
        self._topic = self.source.encode()

    def prepare(self) -> None:
        """Create the shadow topic, or check that an existing one can take every source partition."""
        if self.name == self.source:
            raise ReplayError(f"--to-topic {self.name} is the source topic; replaying a topic into itself would loop")
        admin = AdminClient(dict(self.kafka_config))
        try:
            metadata = admin.list_topics(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ReplayError(f"cannot reach Kafka to prepare '{self.name}': {exc.args[0]}") from exc
        existing = metadata.topics.get(self.name)
        needed = max((r.partition for r in self.plan.ranges), default=0) + 1
        if existing is not None and existing.error is None:
            if len(existing.partitions) < needed:
                raise ReplayError(
                    f"--to-topic {self.name} has {len(existing.partitions)} partition(s); replaying "
                    f"into the source's partitions needs at least {needed}"
                )
            return
        source = metadata.topics[self.source]
        replicas = max(len(p.replicas) for p in source.partitions.values())
        try:
            admin.create_topics([NewTopic(self.name, self.plan.partition_count, replicas)])[self.name].result()
        except KafkaException as exc:
            error = exc.args[0]
            if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise ReplayError(f"cannot create the shadow topic '{self.name}': {error}") from exc
        self.created = True
        _wait_for_leaders(admin, self.name)

    def resume(self) -> Progress:
        """Where each partition continues: after the last record this replay id already copied."""
        progress = Progress()
        self._producer = Producer({**self.kafka_config, **DURABILITY, "linger.ms": 20})
        if self.created:
            return progress  # a topic made for this run holds nothing to continue from
        consumer = reader_consumer(self.kafka_config)
        try:
            for pinned in self.plan.ranges:
                last = _last_record(consumer, self.name, pinned.partition)
                headers = dict(last.headers() or []) if last is not None else {}
                mine = headers.get(REPLAY_ID) == self._id
                if mine and headers.get(REPLAY_PARTITION) == str(pinned.partition).encode():
                    progress.next_offsets[pinned.partition] = int(headers[REPLAY_OFFSET] or b"0") + 1
        finally:
            consumer.close()
        return progress

    def write(self, partition: int, messages: Sequence[Message]) -> None:
        producer = self._producer
        assert producer is not None  # noqa: S101 - resume() comes first
        fixed = [(REPLAY_ID, self._id), (REPLAY_TOPIC, self._topic), (REPLAY_PARTITION, str(partition).encode())]
        for message in consumed(messages):
            headers: list[tuple[str, Any]] = list(message.headers() or [])
            headers += [
                *fixed,
                (REPLAY_OFFSET, str(message.offset()).encode()),
                (REPLAY_TIMESTAMP, str(message.timestamp()[1]).encode()),
            ]
            while True:
                try:
                    producer.produce(
                        self.name,
                        value=message.value(),
                        key=message.key(),
                        partition=partition,
                        headers=headers,
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    raise ReplayError(f"cannot produce to '{self.name}': {exc.args[0]}") from exc
        producer.poll(0)

    def commit(self, progress: Progress) -> None:  # noqa: ARG002 - the topic itself records progress
        if self._producer is None:
            return
        remaining = self._producer.flush(60)
        if remaining:
            raise ReplayError(
                f"{remaining} record(s) not acknowledged by '{self.name}' within 60s; run the replay "
                f"again with --id {self.replay_id} to continue"
            )
        if self._failures:
            raise ReplayError(
                f"copying to '{self.name}' failed: {self._failures[0]}; run the replay again with "
                f"--id {self.replay_id} to continue"
            )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"partition {message.partition()}: {error.str()}")


def _wait_for_leaders(admin: AdminClient, topic: str) -> None:
    """A new topic answers reads only once every partition has a leader."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if found is not None and found.error is None and all(p.leader >= 0 for p in found.partitions.values()):
            return
        time.sleep(0.1)
    raise ReplayError(f"the shadow topic '{topic}' has partitions without a leader after {TIMEOUT_S:.0f}s")


def _last_record(consumer: Consumer, topic: str, partition: int) -> Message | None:
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(f"cannot read '{topic}' partition {partition}: {exc.args[0]}") from exc
    if high <= low:
        return None
    consumer.assign([TopicPartition(topic, partition, high - 1)])
    try:
        for message in consumer.consume(1, TIMEOUT_S):
            if message.error() is None:
                return message
    finally:
        consumer.unassign()
    return None


# ---- consumer group re-drive ----------------------------------------------------------------------


@dataclass(frozen=True)
class OffsetMove:
    """One partition of a group reset: the committed offset now (None: none) and where it moves."""

    partition: int
    committed: int | None
    target: int
    end: int  # the partition's end now: the group re-reads end - target records

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "committed": self.committed,
            "target": self.target,
            "rereads": max(0, self.end - self.target),
        }


@dataclass(frozen=True)
class GroupResetPlan:
    """Moving `group`'s offsets on `topic` to the range starts: what would change, and the group's state."""

    group: str
    topic: str
    state: str
    members: tuple[str, ...]
    moves: tuple[OffsetMove, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "state": self.state,
            "members": list(self.members),
            "moves": [m.to_json() for m in self.moves],
        }


def plan_group_reset(kafka_config: KafkaConfig, group: str, plan: ReplayPlan) -> GroupResetPlan:
    """What a reset of `group` to `plan`'s range starts would do (nothing is changed)."""
    admin = AdminClient(dict(kafka_config))
    state, members = _describe(admin, group)
    topic = plan.query.topic
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, r.partition) for r in plan.ranges])]
    try:
        listed = admin.list_consumer_group_offsets(request)[group].result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(f"cannot read the committed offsets of consumer group '{group}': {exc.args[0]}") from exc
    committed = {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in listed.topic_partitions or []}
    if state == ConsumerGroupState.DEAD.name and not any(v is not None for v in committed.values()):
        raise ReplayError(
            f"consumer group '{group}' does not exist (no members, no committed offsets on '{topic}'); "
            "check the name with `kafka-consumer-groups --list`"
        )
    consumer = reader_consumer(kafka_config)
    try:
        ends = {
            r.partition: consumer.get_watermark_offsets(TopicPartition(topic, r.partition), timeout=TIMEOUT_S)[1]
            for r in plan.ranges
        }
    finally:
        consumer.close()
    moves = tuple(OffsetMove(r.partition, committed.get(r.partition), r.start, ends[r.partition]) for r in plan.ranges)
    return GroupResetPlan(group, topic, state, members, moves)


def apply_group_reset(kafka_config: KafkaConfig, reset: GroupResetPlan) -> None:
    """Commit the planned offsets for the group; refuses (and changes nothing) while it has members."""
    admin = AdminClient(dict(kafka_config))
    state, members = _describe(admin, reset.group)
    refuse_active(reset.group, state, members)
    offsets = [TopicPartition(reset.topic, m.partition, m.target) for m in reset.moves]
    try:
        result = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(reset.group, offsets)])
        altered = result[reset.group].result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() in {
            KafkaError.UNKNOWN_MEMBER_ID,
            KafkaError.REBALANCE_IN_PROGRESS,
        }:
            raise ReplayError(
                f"consumer group '{reset.group}' became active while resetting; stop its consumers "
                "and run the command again"
            ) from exc
        raise ReplayError(f"cannot move the offsets of consumer group '{reset.group}': {error}") from exc
    failed = [f"partition {tp.partition}: {tp.error}" for tp in altered.topic_partitions or [] if tp.error]
    if failed:
        raise ReplayError(f"consumer group '{reset.group}': some offsets were not moved: {'; '.join(failed)}")


def refuse_active(group: str, state: str, members: tuple[str, ...]) -> None:
    if members or state not in {s.name for s in _STOPPED}:
        who = ", ".join(members) or "none listed"
        raise ReplayError(
            f"consumer group '{group}' is active (state {state}, {len(members)} member(s): {who}); "
            "stop its consumers first: offsets of a running group are not moved"
        )


def _describe(admin: AdminClient, group: str) -> tuple[str, tuple[str, ...]]:
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return ConsumerGroupState.DEAD.name, ()
        raise ReplayError(f"cannot describe consumer group '{group}': {error}") from exc
    members = tuple(f"{m.client_id} on {m.host}" for m in description.members or [])
    return description.state.name, members
