"""Transactional batch agents on librdkafka: each batch's outputs, state writes and source offsets commit in
one Kafka transaction (exactly-once, the design of Kafka Streams' EOS v2; docs/decisions/0016).

faust hands an agent one event at a time through aiokafka and tops out near 3k events per CPU-second on
this machine, and its exactly-once mode has open duplicate bugs. An agent that needs both speed and
exactly-once runs here instead, in a thread of the `streams worker` process:

- a consumer in the group `<app id>-<agent>` reads batches (read_committed) and never commits itself; it
  rebalances incrementally (cooperative-sticky), so only partitions that change owner are revoked and restored;
- the agent's state lives in memory per source partition and in a compacted changelog topic
  `<app id>-<agent>-store-changelog`, co-partitioned with the source and rebuilt on assignment;
- outputs, dead letters, the batch's coalesced state writes and the consumed offsets go out in one
  transaction, committed every `commit_interval_s` (or sooner when many records are open);
- every partition's state holds a mark, the next offset to process (with the topic's id), so records a
  group reset delivers again (a re-drive) are recognised and skipped instead of re-emitted;
- anything that fails the transaction aborts it, and the state and positions go back to the last commit;
  a fenced producer (another instance with our transactional id) is replaced.

The transactional id is `<group>-<host>-<slot>`, the slot being the lowest one this host can lock under
the data directory, so a worker restarted after kill -9 takes its predecessor's id and aborts its open
transaction at once instead of readers waiting `transaction.timeout.ms` for it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import StreamsError
from streams.gc_tuning import throughput_gc
from streams.kafka_util import create_missing_topics, describe_topic, iter_partitions
from streams.observability import COMMIT_SECONDS, CONSUMER_LAG, EVENTS_TOTAL

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from streams.settings import KafkaConfig

log = structlog.get_logger("streams.agents.engine")

RESTORE_ATTEMPTS = 3  # reads of a changelog to its end before an assignment gives up (the worker stops)
MARK_KEY = "__next_offset"  # per partition: (next offset to process, source topic id)


class PartitionState(dict[str, Any]):
    """One source partition's state: a dict that remembers which keys were written since the last commit.

    Values are JSON (written to the changelog with orjson); arrays come back as tuples after a restore, so
    agents should write tuples too (immutable, and tuples of scalars cost the garbage collector nothing).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)


class Output:
    """Where an agent's results go: `send` queues a record in the open transaction."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes | None]]) -> None:
        wire_headers = cast("list[tuple[str, str | bytes | None]]", headers)  # what produce() accepts, read-only
        _produce(self._producer, topic, value, key, headers=wire_headers)


class BatchAgent(Protocol):
    """What the engine runs: a name, one source topic, and a handler for a partition's batch of records."""

    name: str
    source: str

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        """Process `records` (one partition, in offset order), reading and writing `state`, sending to `out`.

        Raising fails the transaction: the batch is retried from the last commit, so raise only for
        trouble that is not the record's fault (bad records go to a dead-letter topic instead).
        """


def changelog_topic(group: str) -> str:
    return f"{group}-store-changelog"


@dataclass
class EngineConfig:
    commit_interval_s: float = 0.025
    max_open_records: int = 5000  # commit sooner when this many source records are in the open transaction
    batch_size: int = 2000
    transaction_timeout_ms: int = 10_000
    session_timeout_ms: int = 10_000


@dataclass
class _Transaction:
    open: bool = False
    started: float = 0.0
    records: int = 0
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset, for this transaction


class TransactionalEngine:
    """Runs one BatchAgent until stopped (see the module docstring for the guarantees).

    Example (`streams worker` runs it in a thread):
        engine = TransactionalEngine(kafka, agent, group="streams-worker-validation", data_dir=Path(".streams"))
        engine.run(stop_event)
    """

    def __init__(self, kafka: KafkaConfig, agent: BatchAgent, *, group: str, data_dir: Path,
                 replication: int = 1, config: EngineConfig | None = None) -> None:
        self.kafka, self.agent, self.group = kafka, agent, group
        self.config = config or EngineConfig()
        self.replication = replication
        self.changelog = changelog_topic(group)
        self.state: dict[int, PartitionState] = {}
        self.topic_id = ""
        self.commits = 0
        self.restored = 0  # partitions whose state was rebuilt from the changelog, over the engine's life
        self._txn = _Transaction()
        self._slot_file, self.transactional_id = _claim_transactional_id(data_dir, group)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._lag_at = 0.0
        self._returned_at = time.monotonic()  # when consume() last returned

    # ------------------------------------------------------------------ lifecycle

    def run(self, stop: threading.Event) -> None:
        """Consume, process and commit until `stop` is set; StreamsError at once if the topics are missing."""
        try:
            self._prepare()
        except BaseException:
            self._slot_file.close()
            raise
        consumer = self._consumer = Consumer({
            **self.kafka, "group.id": self.group, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "isolation.level": "read_committed", "auto.offset.reset": "earliest",
            "session.timeout.ms": self.config.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.config.session_timeout_ms // 5),
            "fetch.wait.max.ms": 10,
            # Incremental rebalancing: a worker joining or leaving moves only the partitions that change
            # owner; the others keep their state and keep flowing (eager, every rebalance revoked and
            # restored every partition of every worker).
            "partition.assignment.strategy": "cooperative-sticky",
        })
        self._producer = self._new_producer()
        consumer.subscribe([self.agent.source], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        log.info("engine.started", agent=self.agent.name, group=self.group, transactional_id=self.transactional_id)
        try:
            with throughput_gc():
                while not stop.is_set():
                    self._step(consumer)
            self._finish_transaction()
        finally:
            consumer.close()  # revokes (committing nothing more: the transaction above is closed)
            self._close_producer()
            self._slot_file.close()
            log.info("engine.stopped", agent=self.agent.name, commits=self.commits)

    def _prepare(self) -> None:
        admin = AdminClient(self.kafka)
        source = describe_topic(admin, self.agent.source)
        if source is None:
            raise StreamsError(f"the source topic '{self.agent.source}' does not exist; run `streams topics apply`")
        self.topic_id = str(source.topic_id)
        create_missing_topics(admin, [NewTopic(self.changelog, num_partitions=len(source.partitions),
                                               replication_factor=self.replication,
                                               config={"cleanup.policy": "compact"})])

    def _new_producer(self) -> Producer:
        producer = Producer({
            **self.kafka, "transactional.id": self.transactional_id, "linger.ms": 2,
            "transaction.timeout.ms": self.config.transaction_timeout_ms,
            # A transaction begun right after the previous commit can find the coordinator still writing
            # that commit's markers: it answers CONCURRENT_TRANSACTIONS and the client retries after
            # retry.backoff.ms, 100 ms by default, which showed as 100-120 ms stalls in
            # send_offsets_to_transaction every few seconds. The Java client retries those after 20 ms.
            "retry.backoff.ms": 10,
        })
        producer.init_transactions(30)  # aborts whatever a predecessor with this id left open
        return producer

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush(5)
        except (KafkaException, SystemError) as exc:  # confluent-kafka 2.16: a fenced producer's close
            log.warning("engine.producer.close", error=str(exc))

    # ------------------------------------------------------------------ the loop

    def _step(self, consumer: Consumer) -> None:
        txn, config = self._txn, self.config
        # consume() returns when the batch is full or the wait is over, and any record it returns arrived
        # after the previous call returned: that is when the transaction's clock starts.
        since = self._returned_at
        deadline = (txn.started if txn.open else since) + config.commit_interval_s
        records = consumer.consume(config.batch_size, timeout=max(0.0, deadline - time.monotonic()))
        self._returned_at = time.monotonic()
        try:
            if records:
                self._process(records, since)
            if txn.open and (txn.records >= config.max_open_records
                             or time.monotonic() - txn.started >= config.commit_interval_s):
                self._commit()
        except KafkaException as exc:
            self._recover(exc.args[0])
        except Exception as exc:  # the agent failed outside its own dead-lettering: retry the batch, loudly
            log.exception("engine.batch.failed", agent=self.agent.name, error=f"{type(exc).__name__}: {exc}")
            self._recover(None)
            time.sleep(1.0)
        self._report_lag(consumer)

    def _process(self, records: list[Message], since: float) -> None:
        assert self._producer is not None  # noqa: S101 - run() made it
        by_partition: dict[int, list[Message]] = {}
        for record in records:
            error = record.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("engine.consume.error", agent=self.agent.name, error=str(error))
                continue
            by_partition.setdefault(record.partition() or 0, []).append(record)
        if not by_partition:
            return
        txn = self._txn
        if not txn.open:
            self._producer.begin_transaction()
            txn.open, txn.started, txn.records = True, since, 0
        out = Output(self._producer)
        for partition, batch in by_partition.items():
            state = self.state.get(partition)
            if state is None:  # not ours any more (revoked inside consume); the next owner reads it
                continue
            txn.positions[partition] = (batch[-1].offset() or 0) + 1
            txn.records += len(batch)
            fresh = batch
            mark = state.get(MARK_KEY)
            if mark is not None and mark[1] == self.topic_id and (batch[0].offset() or 0) < mark[0]:
                fresh = [record for record in batch if (record.offset() or 0) >= mark[0]]  # offsets only grow
                if len(fresh) < len(batch):  # a re-drive: these records' outputs and state are committed already
                    EVENTS_TOTAL.labels(agent=self.agent.name, outcome="already-processed").inc(len(batch) - len(fresh))
            if fresh:
                self.agent.handle(fresh, state, out)
            state[MARK_KEY] = (txn.positions[partition], self.topic_id)
            self._write_state(partition, state)  # now, so its sends overlap the next slice instead of the commit

    def _commit(self) -> None:
        """Add the offsets and commit (the state went out after each slice); the caller recovers on failure."""
        producer, consumer, txn = self._producer, self._consumer, self._txn
        assert producer is not None  # noqa: S101 - run() made it
        assert consumer is not None  # noqa: S101 - run() made it
        started = time.perf_counter()
        offsets = [TopicPartition(self.agent.source, p, offset) for p, offset in txn.positions.items()]
        if offsets:
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        txn.open, txn.positions = False, {}
        self.commits += 1
        COMMIT_SECONDS.labels(agent=self.agent.name).observe(time.perf_counter() - started)

    def _write_state(self, partition: int, state: PartitionState) -> None:
        """The keys written since the last call, once each with their latest value, into the open transaction."""
        producer = self._producer
        assert producer is not None  # noqa: S101 - run() made it
        for key in state.dirty:
            value = state.get(key)
            _produce(producer, self.changelog, orjson.dumps(value) if value is not None else None, key.encode(),
                     partition=partition)
        state.dirty.clear()

    def _finish_transaction(self) -> bool:
        """Commit what is open before letting go of partitions; if that fails, abort (False): whoever reads
        them next starts from the last commit."""
        if self._txn.open:
            try:
                self._commit()
            except KafkaException as exc:
                self._abort(exc.args[0])
                return False
        return True

    def _recover(self, error: KafkaError | None) -> None:
        """The transaction failed: abort it, then go back to the last commit (state and positions)."""
        self._abort(error)
        self._rewind(list(self.state))

    def _abort(self, error: KafkaError | None) -> None:
        """Abort the open transaction; a fenced (fatal) producer is replaced by a new one with the same id."""
        if error is not None:
            log.warning("engine.transaction.failed", agent=self.agent.name, error=str(error),
                        fatal=error.fatal(), abortable=error.txn_requires_abort())
        producer = self._producer
        if producer is not None and (error is None or not error.fatal()) and self._txn.open:
            try:
                producer.abort_transaction(30)
            except KafkaException as exc:
                log.warning("engine.abort.failed", agent=self.agent.name, error=str(exc.args[0]))
                error = exc.args[0]
        if error is not None and error.fatal():
            self._close_producer()
            self._producer = self._new_producer()
        self._txn = _Transaction()
        for state in self.state.values():
            state.dirty.clear()

    def _rewind(self, partitions: list[int]) -> None:
        """State from the changelog and consumer positions from the group's commits, for `partitions`."""
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - run() made it
        if not partitions:
            return
        self._restore(partitions)
        committed = consumer.committed([TopicPartition(self.agent.source, p) for p in partitions], timeout=30)
        for tp in committed:
            consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))

    def _restore(self, partitions: Iterable[int]) -> None:
        started = time.monotonic()
        restored = {p: PartitionState() for p in partitions}
        for batch in iter_partitions(self.kafka, self.changelog, list(restored)):
            for record in batch:
                state = restored[record.partition() or 0]
                key, value = (record.key() or b"").decode(), record.value()
                if value is None:
                    dict.pop(state, key, None)
                else:
                    dict.__setitem__(state, key, _frozen(orjson.loads(value)))
        self.state.update(restored)
        self.restored += len(restored)
        log.info("engine.restored", agent=self.agent.name, partitions=sorted(restored),
                 keys=sum(map(len, restored.values())), seconds=round(time.monotonic() - started, 3))

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Restore the state of the partitions added to ours (incremental: the others keep theirs)."""
        if not partitions:
            return
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            try:
                self._restore(tp.partition for tp in partitions)
                break
            except StreamsError as exc:  # the changelog could not be read to its end: try again, then give up
                if attempt == RESTORE_ATTEMPTS:
                    raise  # the worker stops (it must not process partitions without their state)
                log.warning("engine.restore.failed", agent=self.agent.name, attempt=attempt, error=str(exc))
                time.sleep(2.0 * attempt)
        log.info("engine.assigned", agent=self.agent.name, partitions=[tp.partition for tp in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the open transaction while the partitions are still ours, then forget their state. If it
        could not commit, the partitions we keep go back to the last commit too."""
        if not partitions:
            return
        committed = self._finish_transaction()
        self._forget(partitions)
        if not committed:
            self._rewind(list(self.state))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: whatever is open can no longer commit."""
        self._abort(None)
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.state.pop(tp.partition, None)
        log.info("engine.revoked", agent=self.agent.name, partitions=[tp.partition for tp in partitions])

    def _report_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now < self._lag_at:
            return
        self._lag_at = now + 5.0
        for tp in consumer.position([TopicPartition(self.agent.source, p) for p in self.state]):
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, high - tp.offset))


def _frozen(value: Any) -> Any:
    """A restored value with its arrays as tuples: immutable like the agent's own writes should be, and
    untracked by the garbage collector, which then skips the (large) state in its full collections."""
    if type(value) is not list:
        return value
    return tuple(value) if list not in map(type, value) else tuple(map(_frozen, value))  # flat: the common case


def _produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None, **options: Any) -> None:
    """`producer.produce`, waiting while librdkafka's local queue is full instead of failing."""
    while True:
        try:
            producer.produce(topic, value, key, **options)
            return
        except BufferError:
            producer.poll(0.05)


def _claim_transactional_id(data_dir: Path, group: str) -> tuple[Any, str]:
    """(open lock file, `<group>-<host>-<slot>`) for the lowest slot no live process on this host holds."""
    directory = data_dir / "agents"
    directory.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname() or "host"
    slot = 0
    while True:
        handle = (directory / f"{group}.{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle, f"{group}-{host}-{slot}"
