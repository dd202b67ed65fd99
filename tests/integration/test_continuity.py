"""The continuity guard on a real broker: holes read back, re-driven records recognised, marks survive restarts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.agents.continuity import ContinuityGuard

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka.admin import AdminClient


@pytest.fixture
def topic(admin_client: AdminClient, kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    name = unique_name("continuity")
    admin_client.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(10):
        producer.produce(name, value=f"record-{n}".encode(), partition=0)
    assert producer.flush(10) == 0
    return name


def commit(kafka_bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


async def test_a_jump_past_the_last_seen_offset_reads_the_hole(kafka_bootstrap: str, topic: str,
                                                               unique_name: Callable[[str], str]) -> None:
    guard = ContinuityGuard({"bootstrap.servers": kafka_bootstrap}, unique_name("group"), (topic,))
    guard.start()
    try:
        guard.saw(topic, 0, 2)  # the agent handled offset 2; the stream now hands it offset 7
        hole = await guard.hole_before(topic, 0, 7)
        assert [m.offset() for m in hole] == [3, 4, 5, 6]
        assert [m.value() for m in hole] == [f"record-{n}".encode() for n in (3, 4, 5, 6)]
        guard.saw(topic, 0, 7)
        assert await guard.hole_before(topic, 0, 8) == []  # in order
        assert await guard.hole_before(topic, 0, 4) == []  # a rewind after a rebalance is redelivery, not a hole
    finally:
        guard.close()


async def test_a_jump_covered_by_the_groups_commit_is_no_hole(kafka_bootstrap: str, topic: str,
                                                              unique_name: Callable[[str], str]) -> None:
    group = unique_name("group")
    commit(kafka_bootstrap, group, topic, 6)  # another worker owned the partition and got to 6
    guard = ContinuityGuard({"bootstrap.servers": kafka_bootstrap}, group, (topic,))
    guard.start()
    try:
        guard.saw(topic, 0, 1)
        assert [m.offset() for m in await guard.hole_before(topic, 0, 8)] == [6, 7]
        # First sight of a partition: the group's commit is where the stream must start.
        assert [m.offset() for m in await guard.hole_before(topic, 1, 0)] == []
    finally:
        guard.close()


def recorded_marks(kafka_bootstrap: str, group: str, topic: str, offset: int) -> ContinuityGuard:
    """A guard (closed) that recorded the group's commit of `offset` on partition 0 as its mark."""
    commit(kafka_bootstrap, group, topic, offset)
    guard = ContinuityGuard({"bootstrap.servers": kafka_bootstrap}, group, (topic,))
    guard.start()
    guard.record_commits()
    guard.close()
    return guard


async def test_committed_marks_survive_a_reset_and_a_restart(kafka_bootstrap: str, topic: str,
                                                             unique_name: Callable[[str], str]) -> None:
    group = unique_name("group")
    recorded_marks(kafka_bootstrap, group, topic, 8)
    commit(kafka_bootstrap, group, topic, 0)  # a re-drive resets the group to the start

    second = ContinuityGuard({"bootstrap.servers": kafka_bootstrap}, group, (topic,))
    second.start()
    try:
        assert [second.already_committed(topic, 0, offset) for offset in (0, 7, 8, 9)] == [True, True, False, False]
        assert not second.already_committed(topic, 1, 0)
        second.record_commits()  # the reset does not lower the mark
        assert second.committed_high[topic, 0] == 8
    finally:
        second.close()


def test_marks_of_a_deleted_and_recreated_topic_are_ignored(admin_client: AdminClient, kafka_bootstrap: str,
                                                            topic: str, unique_name: Callable[[str], str]) -> None:
    group = unique_name("group")
    first = recorded_marks(kafka_bootstrap, group, topic, 8)
    admin_client.delete_topics([topic])[topic].result()
    deadline = time.monotonic() + 30
    while True:  # deletion completes in the background; creating the name again fails until it has
        try:
            admin_client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()
            break
        except KafkaException:
            assert time.monotonic() < deadline, f"{topic} could not be created again"
            time.sleep(0.5)

    second = ContinuityGuard({"bootstrap.servers": kafka_bootstrap}, group, (topic,))
    second.start()  # the new topic's offsets start at 0 again: the old mark of 8 must not skip them
    try:
        assert second.committed_high == {}
        assert not second.already_committed(topic, 0, 0)
        assert second.topic_ids[topic] != first.topic_ids[topic]
    finally:
        second.close()


def test_a_guard_over_a_topic_not_created_yet_starts_with_no_marks(kafka_bootstrap: str,
                                                                    unique_name: Callable[[str], str]) -> None:
    missing = unique_name("not-yet")
    guard = ContinuityGuard({"bootstrap.servers": kafka_bootstrap}, unique_name("group"), (missing,))
    guard.start()
    try:
        assert guard.topic_ids == {}
        assert guard.committed_high == {}
    finally:
        guard.close()
