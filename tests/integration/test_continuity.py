"""The continuity guard on a real broker: records faust skipped are read back; other owners' commits are respected."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
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
    guard.saw(topic, 0, 2)  # the agent handled offset 2; the stream now hands it offset 7
    hole = await guard.hole_before(topic, 0, 7)
    assert [m.offset() for m in hole] == [3, 4, 5, 6]
    assert [m.value() for m in hole] == [f"record-{n}".encode() for n in (3, 4, 5, 6)]
    guard.saw(topic, 0, 7)
    assert await guard.hole_before(topic, 0, 8) == []  # in order
    assert await guard.hole_before(topic, 0, 4) == []  # a rewind after a rebalance is redelivery, not a hole


async def test_a_jump_covered_by_the_groups_commit_is_no_hole(kafka_bootstrap: str, topic: str,
                                                              unique_name: Callable[[str], str]) -> None:
    group = unique_name("group")
    commit(kafka_bootstrap, group, topic, 6)  # another worker owned the partition and got to 6
    guard = ContinuityGuard({"bootstrap.servers": kafka_bootstrap}, group, (topic,))
    guard.start()
    guard.saw(topic, 0, 1)
    assert [m.offset() for m in await guard.hole_before(topic, 0, 8)] == [6, 7]
    # First sight of a partition: the group's commit is where the stream must start.
    assert [m.offset() for m in await guard.hole_before(topic, 1, 0)] == []
