"""The transactional engine on a real broker: state survives restarts, a failed batch leaves no trace, a
re-drive re-emits nothing (decision 0016)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.kafka_util import read_all, read_compacted
from streams.runtime.contract import EngineConfig, changelog_topic
from streams.runtime.engine import TransactionalEngine
from streams.runtime.state import Output, PartitionState
from tests.integration.worker_harness import wait_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from confluent_kafka import Message
    from confluent_kafka.admin import AdminClient

PARTITIONS = 2


class Counting:
    """Sends each record on with its running count per key; fails once on chosen values."""

    name = "counting"

    def __init__(self, source: str, target: str, fail_on: set[bytes] | None = None) -> None:
        self.sources: tuple[str, ...] = (source,)
        self.target = target
        self.fail_on = fail_on or set()
        self.handled = 0

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        for record in records:
            value = record.value() or b""
            if value in self.fail_on:
                self.fail_on.discard(value)  # the retried batch goes through
                out.send(self.target, record.key(), b"from a failed batch", [])
                raise RuntimeError(f"failing once on {value!r}")
            key = (record.key() or b"").decode()
            state[key] = state.get(key, 0) + 1
            out.send(self.target, record.key(), f"{value.decode()}#{state[key]}".encode(), [])
            self.handled += 1


@pytest.fixture
def topics(admin_client: AdminClient, unique_name: Callable[[str], str]) -> tuple[str, str]:
    source, target = unique_name("engine-in"), unique_name("engine-out")
    futures = admin_client.create_topics(
        [
            NewTopic(source, num_partitions=PARTITIONS, replication_factor=1),
            NewTopic(target, num_partitions=PARTITIONS, replication_factor=1),
        ]
    )
    for future in futures.values():
        future.result()
    return source, target


def produce(bootstrap: str, topic: str, values: list[str], key: str = "k") -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value=value.encode(), key=key.encode())
    assert producer.flush(10) == 0


class Running:
    """An engine in a thread, stopped (cleanly) on exit."""

    def __init__(self, engine: TransactionalEngine) -> None:
        self.engine, self.stop = engine, threading.Event()
        self.thread = threading.Thread(target=engine.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> TransactionalEngine:
        self.thread.start()
        return self.engine

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@pytest.fixture
def engine_factory(
    kafka_bootstrap: str, tmp_path: Path, unique_name: Callable[[str], str]
) -> Callable[[Counting], Running]:
    group = unique_name("engine-group")

    def make(agent: Counting) -> Running:
        return Running(
            TransactionalEngine(
                {"bootstrap.servers": kafka_bootstrap},
                agent,
                group=group,
                data_dir=tmp_path,
                config=EngineConfig(session_timeout_ms=6000),
            )
        )

    return make


def values_of(bootstrap: str, topic: str) -> list[str]:
    return sorted((m.value() or b"").decode() for m in read_all({"bootstrap.servers": bootstrap}, topic))


def test_state_survives_a_restart_and_outputs_are_exactly_once(
    kafka_bootstrap: str, topics: tuple[str, str], engine_factory: Callable[[Counting], Running]
) -> None:
    source, target = topics
    produce(kafka_bootstrap, source, ["a", "b", "c"])
    agent = Counting(source, target)
    with engine_factory(agent) as engine:
        wait_for(lambda: len(values_of(kafka_bootstrap, target)) >= 3, 60, lambda: "the first three outputs")
        group = engine.group
    produce(kafka_bootstrap, source, ["d"])
    with engine_factory(Counting(source, target)):  # a new process, as far as state goes
        wait_for(lambda: len(values_of(kafka_bootstrap, target)) >= 4, 60, lambda: "the fourth output")
    assert values_of(kafka_bootstrap, target) == ["a#1", "b#2", "c#3", "d#4"]
    store = read_compacted({"bootstrap.servers": kafka_bootstrap}, changelog_topic(group))
    assert store[b"k"] == b"4"


def test_a_failed_batch_is_aborted_and_retried_without_a_trace(
    kafka_bootstrap: str, topics: tuple[str, str], engine_factory: Callable[[Counting], Running]
) -> None:
    source, target = topics
    produce(kafka_bootstrap, source, ["a", "b", "boom", "c"])
    agent = Counting(source, target, fail_on={b"boom"})
    with engine_factory(agent):
        wait_for(lambda: len(values_of(kafka_bootstrap, target)) >= 4, 60, lambda: "four outputs")
    # read_committed sees neither the aborted "from a failed batch" record nor the first tries of a and b
    assert values_of(kafka_bootstrap, target) == ["a#1", "b#2", "boom#3", "c#4"]
    assert agent.handled >= 4


def test_a_redrive_skips_what_the_state_marks_as_done(
    kafka_bootstrap: str, topics: tuple[str, str], engine_factory: Callable[[Counting], Running]
) -> None:
    source, target = topics
    produce(kafka_bootstrap, source, ["a", "b"])
    with engine_factory(Counting(source, target)) as engine:
        wait_for(lambda: len(values_of(kafka_bootstrap, target)) >= 2, 60, lambda: "two outputs")
        group = engine.group
    reset = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:  # what `streams replay --group G --reset` does: the group's offsets back to the start
        reset.commit(offsets=[TopicPartition(source, p, 0) for p in range(PARTITIONS)], asynchronous=False)
    finally:
        reset.close()
    produce(kafka_bootstrap, source, ["c"])
    again = Counting(source, target)
    with engine_factory(again):
        wait_for(lambda: len(values_of(kafka_bootstrap, target)) >= 3, 60, lambda: "the new record's output")
    assert values_of(kafka_bootstrap, target) == ["a#1", "b#2", "c#3"]
    assert again.handled == 1


def test_a_state_larger_than_a_read_batch_is_restored_whole(
    kafka_bootstrap: str, topics: tuple[str, str], engine_factory: Callable[[Counting], Running]
) -> None:
    source, target = topics
    keys = 25_000  # the restore reads the changelog in batches of up to 10,000 and folds each into the state
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for n in range(keys):
        producer.produce(source, value=b"v", key=f"k{n}".encode())
    assert producer.flush(30) == 0
    first = Counting(source, target)
    with engine_factory(first):
        wait_for(lambda: first.handled >= keys, 120, lambda: f"{first.handled} of {keys} handled")
    produce(kafka_bootstrap, source, ["again"], key="k0")
    produce(kafka_bootstrap, source, ["again"], key=f"k{keys - 1}")
    second = Counting(source, target)
    with engine_factory(second) as engine:
        wait_for(lambda: second.handled >= 2, 60, lambda: "the two new records' outputs")
        restored = sum(len(state) for state in engine.state.values())
    assert second.handled == 2
    assert restored == keys + PARTITIONS  # every key, and each partition's offset mark
    outputs = values_of(kafka_bootstrap, target)
    assert outputs.count("again#2") == 2
    assert len(outputs) == keys + 2


def test_a_second_engine_joining_moves_only_its_share(
    kafka_bootstrap: str, topics: tuple[str, str], engine_factory: Callable[[Counting], Running]
) -> None:
    source, target = topics
    produce(kafka_bootstrap, source, ["a", "b"], key="k")
    produce(kafka_bootstrap, source, ["c", "d"], key="j")
    first = Counting(source, target)
    with engine_factory(first) as engine:
        wait_for(lambda: first.handled >= 4, 60, lambda: "the first four outputs")
        assert engine.restored == PARTITIONS
        second = Counting(source, target)
        with engine_factory(second) as joined:
            wait_for(
                lambda: len(joined.state) == 1 and len(engine.state) == 1,
                60,
                lambda: f"one partition each (first {sorted(engine.state)}, second {sorted(joined.state)})",
            )
            # incremental: the first engine gave one partition away and kept the other without a restore
            assert engine.restored == PARTITIONS
            assert joined.restored == 1
            produce(kafka_bootstrap, source, ["e"], key="k")
            produce(kafka_bootstrap, source, ["f"], key="j")
            wait_for(lambda: first.handled + second.handled >= 6, 60, lambda: "the two new records' outputs")
    assert values_of(kafka_bootstrap, target) == ["a#1", "b#2", "c#1", "d#2", "e#3", "f#3"]


class Oversized(Counting):
    """Counting, but a chosen input makes an output larger than the target topic accepts, so every transaction
    holding it fails at the broker; parks in a dead-letter topic of its own when the engine isolates it."""

    def __init__(self, source: str, target: str, dead_letters: str, poison: bytes) -> None:
        super().__init__(source, target)
        self.dead_letters, self.poison = dead_letters, poison

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        for record in records:
            if record.value() == self.poison:
                out.send(self.target, record.key(), b"x" * 5000, [])
            else:
                super().handle([record], state, out)

    def dead_letter(self, record: Message, error: BaseException) -> tuple[str, list[tuple[str, bytes | None]]]:
        return self.dead_letters, [
            ("dlq_error_message", str(error).encode()),
            ("dlq_offset", str(record.offset()).encode()),
        ]


def test_a_record_whose_transaction_keeps_failing_is_isolated_and_parked_as_a_reference(
    kafka_bootstrap: str,
    admin_client: AdminClient,
    unique_name: Callable[[str], str],
    engine_factory: Callable[[Counting], Running],
) -> None:
    source, target, dead = unique_name("iso-in"), unique_name("iso-out"), unique_name("iso-dlq")
    futures = admin_client.create_topics(
        [
            NewTopic(source, num_partitions=1, replication_factor=1),
            NewTopic(target, num_partitions=1, replication_factor=1, config={"max.message.bytes": "2000"}),
            NewTopic(dead, num_partitions=1, replication_factor=1),
        ]
    )
    for future in futures.values():
        future.result()
    produce(kafka_bootstrap, source, ["a", "b", "poison", "c", "d"])
    agent = Oversized(source, target, dead, b"poison")
    with engine_factory(agent) as engine:
        wait_for(
            lambda: len(values_of(kafka_bootstrap, target)) >= 4,
            90,
            lambda: f"the four good outputs (have {values_of(kafka_bootstrap, target)})",
        )
        parked = engine.parked
    assert values_of(kafka_bootstrap, target) == ["a#1", "b#2", "c#3", "d#4"]  # each once, in spite of the aborts
    assert parked == 1
    [reference] = read_all({"bootstrap.servers": kafka_bootstrap}, dead)
    headers = dict(reference.headers() or [])
    assert reference.value() is None
    assert headers["dlq_offset"] == b"2"
    message, omitted = headers["dlq_error_message"], headers["dlq_value_omitted"]
    assert isinstance(message, bytes)
    assert isinstance(omitted, bytes)
    assert b"the transaction failed 2 times on this record alone" in message
    assert b"could not be written whole" in omitted


class Filling(Counting):
    """Says its open transaction is full once it holds `limit` records (what the archiver does by bytes)."""

    def __init__(self, source: str, target: str, limit: int) -> None:
        super().__init__(source, target)
        self.limit, self.open = limit, 0

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        super().handle(records, state, out)
        self.open += len(records)

    def full(self) -> bool:
        return self.open >= self.limit

    def committed(self) -> None:
        self.open = 0


def test_an_agent_that_says_it_is_full_commits_before_the_interval(
    kafka_bootstrap: str, topics: tuple[str, str], tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    source, target = topics
    agent = Filling(source, target, limit=3)
    engine = TransactionalEngine(
        {"bootstrap.servers": kafka_bootstrap},
        agent,
        group=unique_name("engine-group"),
        data_dir=tmp_path,
        # One record per batch (consume returns as soon as one is there) and intervals no wait below reaches:
        # only the agent's full() can commit.
        config=EngineConfig(
            session_timeout_ms=6000,
            batch_size=1,
            commit_interval_s=600,
            backlog_commit_s=600,
            transaction_timeout_ms=900_000,
        ),
    )
    produce(kafka_bootstrap, source, ["a", "b", "c"])
    running = Running(engine)
    with running:
        wait_for(lambda: len(values_of(kafka_bootstrap, target)) >= 3, 60, lambda: f"{engine.commits} commits")
        assert (engine.commits, agent.open) == (1, 0)
        running.stop.set()
        produce(kafka_bootstrap, source, ["d"])  # wakes the consume() that waits out the long interval
    assert values_of(kafka_bootstrap, target) == ["a#1", "b#2", "c#3", "d#4"]  # d: committed on the way out
