"""Replay targets on the real broker: byte-identical shadow topics (resumed after kill -9), group re-drive.

The re-drive uses a plain consumer group; re-driving the agents is tested with the agents.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.test_replay import T0, ReplayWorld, iso, read_topic, replay_world_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parents[2]
LAUNCH = "from tests.integration.test_replay import cli; cli()"


def launch(world: ReplayWorld, *args: str) -> subprocess.Popen[bytes]:
    """The replay CLI in its own process (so it can be killed)."""
    env = {**os.environ, **world.env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def total(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-count"})
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in found.partitions)
    finally:
        consumer.close()


def test_shadow_topic_keeps_keys_values_and_headers_byte_for_byte(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce_many([(seq % 3, T0 + seq, seq) for seq in range(30)])
    odd = world.sent[0]
    producer = Producer({"bootstrap.servers": world.bootstrap})
    producer.produce(
        world.topic,
        value=odd.value,
        key=None,
        partition=1,
        timestamp=T0 + 99,
        headers=[("empty", None), ("ce_tenantid", b"acme"), ("dup", b"1"), ("dup", b"2")],
    )
    assert producer.flush(10) == 0

    started = time.monotonic()
    report = json.loads(
        world.ok("replay", world.topic, "--to-topic", "--id", "copy1", "--rate", "40", "--output", "json").output
    )
    assert time.monotonic() - started >= 31 / 40 - 0.1  # --rate paces the copy
    shadow = f"{world.topic}.replay.copy1"
    assert report["target"] == {"kind": "topic", "name": shadow}
    assert report["result"] == {"scanned": 31, "records": 31}
    metadata = AdminClient({"bootstrap.servers": world.bootstrap}).list_topics(shadow, timeout=10)
    assert len(metadata.topics[shadow].partitions) == 3

    copies = world.read(shadow, 31)
    originals = read_topic(world.bootstrap, world.topic, 31)
    by_origin = {
        (int(dict(m.headers())["streams_replay_partition"]), int(dict(m.headers())["streams_replay_offset"])): m
        for m in copies
    }
    assert len(by_origin) == 31
    for original in originals:
        copy = by_origin.pop((original.partition(), original.offset()))
        assert copy.partition() == original.partition()
        assert copy.key() == original.key()
        assert copy.value() == original.value()
        count = len(original.headers())
        assert copy.headers()[:count] == original.headers()
        assert copy.headers()[count:] == [
            ("streams_replay_id", b"copy1"),
            ("streams_replay_topic", world.topic.encode()),
            ("streams_replay_partition", str(original.partition()).encode()),
            ("streams_replay_offset", str(original.offset()).encode()),
            ("streams_replay_timestamp", str(original.timestamp()[1]).encode()),
        ]
    for partition in range(3):  # and in the source's order
        offsets = [int(dict(m.headers())["streams_replay_offset"]) for m in copies if m.partition() == partition]
        assert offsets == sorted(offsets)

    named = f"{world.topic}.acme-only"
    world.ok("replay", world.topic, "--to-topic", named, "--tenant", "acme", "--key", odd.key.decode())  # type: ignore[union-attr]
    assert [m.value() for m in world.read(named, 1)] == [odd.value]


def test_a_killed_shadow_copy_continues_with_the_same_id_without_duplicates(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce_many([(seq % 3, T0 + seq, seq) for seq in range(240)])
    shadow = f"{world.topic}.replay.resume1"
    process = launch(world, "replay", world.topic, "--to-topic", "--id", "resume1", "--rate", "60")
    deadline = time.monotonic() + 60
    while total(world.bootstrap, shadow) < 40:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the copy made no progress"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    if process.stderr is not None:
        process.stderr.close()
    copied = total(world.bootstrap, shadow)
    assert 40 <= copied < 240

    changed = world.fails("replay", world.topic, "--to-topic", "--id", "resume1", "--tenant", "acme")
    assert "was started with a different query" in changed
    world.ok("replay", world.topic, "--to-topic", "--id", "resume1")
    copies = world.read(shadow, 240)
    origins = sorted(
        (int(dict(m.headers())["streams_replay_partition"]), int(dict(m.headers())["streams_replay_offset"]))
        for m in copies
    )
    assert origins == sorted((s.partition, s.offset) for s in world.sent)  # each exactly once


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(3)])]
    result = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def consume_group(bootstrap: str, group: str, topic: str, expected: int) -> list[Any]:
    """Run a plain consumer of `group` until it has `expected` records, commit, leave the group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[Any] = []
    deadline = time.monotonic() + 45
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen.append(message)
        consumer.commit(asynchronous=False)
        assert consumer.poll(1.0) is None  # nothing beyond what was expected
    finally:
        consumer.close()
    return seen


def test_group_redrive_plans_moves_and_refuses_an_active_group(
    replay_world: ReplayWorld, unique_name: Callable[[str], str]
) -> None:
    world = replay_world
    world.produce_many([(seq % 3, T0 + seq, seq) for seq in range(12)])
    group = unique_name("group")
    assert len(consume_group(world.bootstrap, group, world.topic, 12)) == 12
    assert committed(world.bootstrap, group, world.topic) == {0: 4, 1: 4, 2: 4}

    dry = world.ok("replay", world.topic, "--group", group, "--reset", "--from", iso(T0 + 6), "--dry-run").output
    assert f"{world.topic} partition 0: committed 4 -> 2 (re-reads 2 record(s))" in dry
    assert "dry run: nothing changed" in dry
    assert committed(world.bootstrap, group, world.topic) == {0: 4, 1: 4, 2: 4}

    done = json.loads(
        world.ok("replay", world.topic, "--group", group, "--reset", "--from", iso(T0 + 6), "--output", "json").output
    )
    assert [m["target"] for m in done["group_reset"]["moves"]] == [2, 2, 2]
    assert committed(world.bootstrap, group, world.topic) == {0: 2, 1: 2, 2: 2}
    redriven = consume_group(world.bootstrap, group, world.topic, 6)
    assert sorted(m.timestamp()[1] for m in redriven) == [T0 + seq for seq in range(6, 12)]

    consumer = Consumer(
        {
            "bootstrap.servers": world.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([world.topic])
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the consumer never joined"
            consumer.poll(0.2)
        before = committed(world.bootstrap, group, world.topic)
        message = world.fails("replay", world.topic, "--group", group, "--reset", "--from", iso(T0))
        assert f"consumer group '{group}' is active" in message
        assert "stop its consumers first" in message
        assert committed(world.bootstrap, group, world.topic) == before
    finally:
        consumer.close()
    missing = world.fails("replay", world.topic, "--group", unique_name("nobody"), "--reset", "--dry-run")
    assert "does not exist" in missing
