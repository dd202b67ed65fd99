"""The audit chain stays exactly-once when writer processes are killed with SIGKILL or rebalanced mid-run.

Writers are real `streams audit run` subprocesses; events are published at a steady rate meanwhile.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.demo.samples import invoice, user_action, workflow_completed
from streams.schemas.codec import AvroCodec
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.test_audit import (
    ROOT,
    AuditWorld,
    ChainTail,
    Source,
    WriterProcess,
    assert_exactly_once,
    audit_world,  # noqa: F401
    publish_samples,
)

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)
TOTAL = 20_000
RATE = 1_000  # events/s: the run lasts ~20 s, long enough to kill and restart writers inside it


class PacedPublisher(threading.Thread):
    """Publishes TOTAL events round-robin over the audited topics at RATE; encodes a few samples once."""

    def __init__(self, world: AuditWorld) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.delivered: set[Source] = set()
        self.errors: list[str] = []
        makers = {world.actions: user_action, world.workflows: workflow_completed, world.invoices: invoice}
        self.values = {}
        for topic, maker in makers.items():
            schema = json.loads((ROOT / "schemas" / f"{_schema_of(world, topic)}.avsc").read_text())
            codec = AvroCodec(schema, world.schema_ids[topic])
            self.values[topic] = [codec.encode(maker(i, tenant=f"tenant-{i % 3}")) for i in range(30)]

    def run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.world.settings.bootstrap_servers(),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        topics = self.world.audited
        started = time.monotonic()
        for i in range(TOTAL):
            topic = topics[i % len(topics)]
            headers: list[tuple[str, str | bytes | None]] = [
                ("ce_specversion", b"1.0"),
                ("ce_id", f"fault-{i}".encode()),
                ("ce_type", topic.encode()),
                ("ce_time", datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
                ("ce_tenantid", f"tenant-{i % 3}".encode()),
            ]
            producer.produce(
                topic,
                value=self.values[topic][i % 30],
                key=f"k{i % 101}".encode(),
                headers=headers,
                on_delivery=self._delivered,
            )
            if i % 100 == 99:
                producer.poll(0)
                time.sleep(max(0.0, started + (i + 1) / RATE - time.monotonic()))
        if producer.flush(60):
            self.errors.append("undelivered events after 60 s")

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(error.str())
        else:
            self.delivered.add((message.topic() or "", message.partition() or 0, message.offset() or 0))


def _schema_of(world: AuditWorld, topic: str) -> str:
    return {world.actions: "user.action", world.workflows: "workflow.completed", world.invoices: "invoice.created"}[
        topic
    ]


def aborted_records(world: AuditWorld, committed: int) -> int:
    """Chain records that only read_uncommitted sees: entries of transactions a kill left to be aborted."""
    consumer = Consumer(
        {
            "bootstrap.servers": world.settings.bootstrap_servers(),
            "group.id": "t.raw",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        partition = TopicPartition(world.chain, 0)
        high = consumer.get_watermark_offsets(partition, timeout=10)[1]
        consumer.assign([TopicPartition(world.chain, 0, OFFSET_BEGINNING)])
        seen, deadline = 0, time.monotonic() + 30
        while consumer.position([partition])[0].offset < high and time.monotonic() < deadline:
            seen += len(consumer.consume(5000, 0.2))
        return seen - committed
    finally:
        consumer.close()


def finish(world: AuditWorld, publisher: PacedPublisher, tail: ChainTail, writers: list[WriterProcess]) -> None:
    """Wait for the publisher and the chain, stop the writers gracefully, then check everything."""
    publisher.join(120)
    assert not publisher.is_alive()
    assert publisher.errors == []
    assert len(publisher.delivered) == TOTAL
    tail.wait_for(TOTAL, timeout=120)
    for writer in writers:
        writer.wait_for_event("audit.writer.started")  # a SIGTERM before that would find no handler yet
        assert writer.terminate() == 0, writer.log_path.read_text()[-3000:]
    entries = tail.read_to_end()
    assert_exactly_once(entries, publisher.delivered)
    code, output = world.cli("verify", "--chain-topic", world.chain, "--check-sources", "--output", "json")
    assert code == 0, output
    report = json.loads(output)
    assert (report["entries"], report["source_problem_counts"]) == (TOTAL, {})
    log.info("chain: %d entries; %d records of aborted transactions", TOTAL, aborted_records(world, TOTAL))


def stop_all(writers: list[WriterProcess], tail: ChainTail) -> None:
    for writer in writers:
        if writer.process is not None and writer.process.poll() is None:
            writer.kill()
    tail.close()


def progress(tail: ChainTail, entries: int) -> None:
    """Until the chain holds `entries` entries (or is complete)."""
    tail.wait_for(min(TOTAL, entries), timeout=120)


def single_leader(writers: list[WriterProcess], timeout: float = 60.0) -> WriterProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [writer for writer in writers if writer.leading()]
        if len(leaders) == 1:
            return leaders[0]
        time.sleep(0.1)
    raise AssertionError(f"no single leader among the writers after {timeout}s")


@pytest.mark.timeout(300)
def test_chain_is_exactly_once_when_the_writer_is_killed_three_times(
    audit_world: AuditWorld,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = audit_world
    writer = WriterProcess(world, tmp_path / "writer.log")
    tail = ChainTail(world)
    publisher = PacedPublisher(world)
    writer.start()
    publisher.start()
    try:
        for fraction in (0.2, 0.45, 0.7):
            tail.wait_for(int(TOTAL * fraction), timeout=120)
            time.sleep(random.uniform(0.0, 0.25))  # land anywhere in its consume/seal/produce/commit cycle
            writer.kill()  # SIGKILL while it writes, often inside an open transaction
            assert len(tail.entries) < TOTAL
            writer.start()
        finish(world, publisher, tail, [writer])
        assert writer.starts == 4
    finally:
        stop_all([writer], tail)


@pytest.mark.timeout(300)
def test_chain_is_exactly_once_when_a_second_writer_joins_and_the_leader_dies(
    audit_world: AuditWorld,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = audit_world
    first, second = WriterProcess(world, tmp_path / "first.log"), WriterProcess(world, tmp_path / "second.log")
    tail = ChainTail(world)
    publisher = PacedPublisher(world)
    first.start()
    publisher.start()
    try:
        tail.wait_for(int(TOTAL * 0.15), timeout=120)
        second.start()
        second.wait_for_event("audit.writer.started")
        first.wait_for_event("audit.leader.stepped_down")  # the join rebalanced the group mid-run
        leader = single_leader([first, second])
        progress(tail, leader.elected_at() + 1500)  # the elected writer writes...
        leader.kill()  # ...and dies mid-run: the other takes over once the dead member's session expires
        survivor = single_leader([first, second])
        assert survivor is not leader
        progress(tail, survivor.elected_at() + 1500)
        assert len(tail.entries) < TOTAL
        leader.start()  # and comes back: another rebalance
        finish(world, publisher, tail, [first, second])
        assert '"audit.leader.elected"' in first.log_path.read_text()
        assert '"audit.leader.elected"' in second.log_path.read_text()
    finally:
        stop_all([first, second], tail)


def test_a_fenced_writer_steps_down_and_resumes_from_the_chain(audit_world: AuditWorld) -> None:  # noqa: F811
    """A zombie with the same transactional.id fences the writer and leaves a transaction open."""
    world = audit_world
    writer, stop = world.writer(), threading.Event()
    writer.retry_backoff_s = 0.2
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    tail = ChainTail(world)
    try:
        published = publish_samples(world, per_topic=5)
        tail.wait_for(15, timeout=60)
        zombie = Producer(
            {"bootstrap.servers": world.settings.bootstrap_servers(), "transactional.id": world.transactional_id}
        )
        zombie.init_transactions(30)  # fences the running writer
        zombie.begin_transaction()
        zombie.produce(world.chain, value=b"zombie entry", partition=0)
        assert zombie.flush(10) == 0  # in the log, inside a transaction that never commits
        published.update(publish_samples(world, per_topic=5))  # the writer's next commit is fenced
        tail.wait_for(30, timeout=60)
        entries = tail.read_to_end()
        with pytest.raises(KafkaException):  # the writer's re-election fenced the zombie in turn
            zombie.commit_transaction(10)
    finally:
        tail.close()
        stop.set()
        thread.join(20)
    assert_exactly_once(entries, set(published))
    assert writer.elections == 2
    assert writer.entries_written == 30
