"""The one agent runtime: each batch's outputs, state writes and source offsets commit in one Kafka
transaction on librdkafka (exactly-once, the design of Kafka Streams' EOS v2; docs/decisions/0016, 0018).

Every agent, the built-ins and the ones users write with `streams.App`, runs here, one engine per agent in
a thread of the `streams worker` process:

- a consumer in the group `<app id>-<agent>` reads batches (read_committed) of the agent's source topics and
  never commits itself; it rebalances incrementally (cooperative-sticky), so only partitions that change
  owner are revoked and restored;
- the agent's state (its tables) lives in memory per partition number (the sources are co-partitioned) and
  in a compacted changelog topic `<app id>-<agent>-store-changelog`, rebuilt on assignment;
- outputs, dead letters, the batch's coalesced state writes and the consumed offsets go out in one
  transaction, committed every `commit_interval_s` (or sooner when many records are open);
- every partition's state holds a mark per source topic, the next offset to process (with the topic's id), so
  records a group reset delivers again (a re-drive) are recognised and skipped instead of re-emitted;
- anything that fails the transaction aborts it, and the state and positions go back to the last commit;
  a fenced producer (another instance with our transactional id) is replaced;
- a transaction that fails again and again is narrowed down to one record, which is then parked in its
  dead-letter topic as a reference (`dlq_value_omitted`) so no input can wedge a partition;
- but a registry that cannot be reached (SchemaUnavailableError) is not the record's fault: the batch is
  aborted and tried again, with a growing pause, until the registry answers, and nothing is parked.

`processing_guarantee="at_least_once"` keeps the same loop without transactions: outputs and state writes
are flushed, then the offsets committed.

The transactional id is `<group>-<host>-<slot>`, the slot being the lowest one this host can lock under
the data directory, so a worker restarted after kill -9 takes its predecessor's id and aborts its open
transaction at once instead of readers waiting `transaction.timeout.ms` for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import StreamsError
from streams.gc_tuning import throughput_gc
from streams.kafka_util import create_missing_topics, denial, describe_topic, iter_partitions
from streams.observability import AgentMetrics
from streams.records import SchemaUnavailableError
from streams.runtime.contract import BatchAgent, EngineConfig, changelog_topic, mark_key
from streams.runtime.isolation import Isolation
from streams.runtime.slots import claim_transactional_id
from streams.runtime.state import Output, PartitionState, frozen, produce
from streams.runtime.watchdog import CommitWatchdog

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from streams.settings import KafkaConfig

log = structlog.get_logger("streams.runtime.engine")

RESTORE_ATTEMPTS = 3  # reads of a changelog to its end before an assignment gives up (the worker stops)
MAX_RECORD_BYTES = 8 * 1024 * 1024  # the producer's own limit; the topics' max.message.bytes decide below it
# librdkafka stops fetching once the consumer's queue holds queued.max.messages.kbytes (64 MiB) and looks
# again only after fetch.queue.backoff.ms, 1 s by default: an agent that drains 64 MiB in less than that
# (the archiver) then waits with an empty queue, a stall per 64 MiB of backlog (bench/notes/archive.md).
FETCH_QUEUE_BACKOFF_MS = 10
Headers = list[tuple[str, bytes | None]]


TP = tuple[str, int]


@dataclass
class _Transaction:
    open: bool = False
    started: float = 0.0
    records: int = 0
    positions: dict[TP, int] = field(default_factory=dict)  # (topic, partition) -> next offset
    first: tuple[str, int, int] | None = None  # the first record in it, for isolating a poison record


class TransactionalEngine:
    """Runs one BatchAgent until stopped (see the module docstring for the guarantees).

    Example (`streams worker` runs it in a thread):
        engine = TransactionalEngine(kafka, agent, group="streams-worker-validation", data_dir=Path(".streams"))
        engine.run(stop_event)
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        agent: BatchAgent,
        *,
        group: str,
        data_dir: Path,
        replication: int = 1,
        config: EngineConfig | None = None,
        transactional_id: str | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.kafka, self.agent, self.group = kafka, agent, group
        self.metrics = metrics or AgentMetrics()
        self.config = config or EngineConfig()
        self.exactly_once = self.config.guarantee == "exactly_once"
        self.replication = replication
        self.changelog = changelog_topic(group)
        self.state: dict[int, PartitionState] = {}
        self.topic_ids: dict[str, str] = {}
        self.marks = {topic: mark_key(agent, topic) for topic in agent.sources}
        self.commits = 0
        self.parked = 0  # records parked as references after isolating them
        self.restored = 0  # partitions whose state was rebuilt from the changelog, over the engine's life
        self.running = False
        self._txn = _Transaction()
        self._isolation = Isolation(agent.name)
        self._dead_letter = getattr(agent, "dead_letter", None)
        self._tick = getattr(agent, "tick", None)
        self._before_commit: Callable[[], None] | None = getattr(agent, "before_commit", None)
        self._committed: Callable[[], None] | None = getattr(agent, "committed", None)
        self._aborted: Callable[[], None] | None = getattr(agent, "aborted", None)
        self._full: Callable[[], bool] | None = getattr(agent, "full", None)
        self._one_source = agent.sources[0] if len(agent.sources) == 1 else None
        self._tick_at = 0.0
        if transactional_id is None:
            self._slot_file, self.transactional_id = claim_transactional_id(data_dir, group)
        else:  # one fixed id (a single writer): whoever takes it over fences the previous holder
            self._slot_file, self.transactional_id = None, transactional_id
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._lag_at = 0.0
        self._returned_at = time.monotonic()  # when consume() last returned
        self._delivery_errors: list[KafkaError] = []
        self._watchdog = CommitWatchdog(agent.name)  # librdkafka can block a commit for good (decision 0028)

    # ------------------------------------------------------------------ lifecycle

    def run(self, stop: threading.Event) -> None:
        """Consume, process and commit until `stop` is set; StreamsError at once if the topics are missing."""
        try:
            self._prepare()
        except BaseException:
            self._release_slot()
            raise
        consumer = self._consumer = Consumer(
            {
                **self.kafka,
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.config.session_timeout_ms,
                "heartbeat.interval.ms": max(500, self.config.session_timeout_ms // 5),
                "fetch.wait.max.ms": 10,
                "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
                # Incremental rebalancing: a worker joining or leaving moves only the partitions that change
                # owner; the others keep their state and keep flowing (eager, every rebalance revoked and
                # restored every partition of every worker).
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        try:
            self._producer = self._new_producer()
        except BaseException:  # refused (an ACL) or unreachable: leave nothing open behind the error
            consumer.close()
            self._release_slot()
            raise
        consumer.subscribe(
            list(self.agent.sources), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "engine.started",
            agent=self.agent.name,
            group=self.group,
            transactional_id=self.transactional_id,
            guarantee=self.config.guarantee,
        )
        self.running = True
        try:
            with throughput_gc():
                while not stop.is_set():
                    self._step(consumer)
            self._finish_transaction()
        finally:
            self.running = False
            consumer.close()  # revokes (committing nothing more: the transaction above is closed)
            self._close_producer()
            self._release_slot()
            log.info("engine.stopped", agent=self.agent.name, commits=self.commits)

    def _prepare(self) -> None:
        admin = AdminClient(self.kafka)
        partitions = 0
        for topic in self.agent.sources:
            source = describe_topic(admin, topic)
            if source is None:
                raise StreamsError(
                    f"the source topic '{topic}' of agent '{self.agent.name}' does not exist; "
                    "run `streams topics apply`"
                )
            self.topic_ids[topic] = str(source.topic_id)
            partitions = max(partitions, len(source.partitions))
        create_missing_topics(admin, self._internal_topics(partitions), identity=self.kafka)

    def _internal_topics(self, source_partitions: int) -> list[NewTopic]:
        """The topics the engine itself needs: the changelog, one partition per source partition."""
        return [
            NewTopic(
                self.changelog,
                num_partitions=source_partitions,
                replication_factor=self.replication,
                config={"cleanup.policy": "compact"},
            )
        ]

    def _release_slot(self) -> None:
        if self._slot_file is not None:
            self._slot_file.close()

    def _new_producer(self) -> Producer:
        config: dict[str, Any] = {
            **self.kafka,
            "linger.ms": 2,
            "message.max.bytes": MAX_RECORD_BYTES,
            # A transaction begun right after the previous commit can find the coordinator still writing
            # that commit's markers: it answers CONCURRENT_TRANSACTIONS and the client retries after
            # retry.backoff.ms, 100 ms by default, which showed as 100-120 ms stalls in
            # send_offsets_to_transaction every few seconds. The Java client retries those after 20 ms.
            "retry.backoff.ms": 10,
        }
        if not self.exactly_once:
            return Producer({**config, "enable.idempotence": True, "acks": "all", "on_delivery": self._on_delivery})
        producer = Producer(
            {
                **config,
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": self.config.transaction_timeout_ms,
            }
        )
        try:
            producer.init_transactions(30)  # aborts whatever a predecessor with this id left open
        except KafkaException as exc:
            refused = denial(exc.args[0], self.kafka, "Write", transactional_id=self.transactional_id)
            if refused is not None:  # no ACL for this id: retrying cannot help, the worker stops in one line
                raise refused from None
            raise
        return producer

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(error)

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
        isolating = self._isolation.isolating
        records = consumer.consume(1 if isolating else config.batch_size, timeout=max(0.0, deadline - time.monotonic()))
        self._returned_at = time.monotonic()
        try:
            if records:
                self._process(records, since)
            if self._tick is not None and self._returned_at >= self._tick_at:
                self._tick_at = self._returned_at + config.commit_interval_s
                self._run_ticks(consumer, records)
            behind = len(records) >= config.batch_size
            age = time.monotonic() - txn.started
            if txn.open and (
                isolating
                or txn.records >= config.max_open_records
                or (self._full is not None and self._full())
                or age >= (config.backlog_commit_s if behind else config.commit_interval_s)
                # caught up after a backlog: what it holds already pays for a commit, so waiting out the
                # interval would only delay its outputs
                or (not behind and txn.records >= config.batch_size)
            ):
                self._commit()
                self._isolation.committed()
        except KafkaException as exc:
            self._failed(exc.args[0], isolating)
        except SchemaUnavailableError as exc:  # an outage, not a bad record: hold, park nothing
            pause = self._isolation.held(exc)
            self._recover(None)
            time.sleep(pause)
        except Exception as exc:  # the agent failed outside its own dead-lettering: retry the batch, loudly
            log.exception("engine.batch.failed", agent=self.agent.name, error=f"{type(exc).__name__}: {exc}")
            self._failed(None, isolating, exc)
            time.sleep(1.0)
        self._report_lag(consumer)

    def _begin(self, since: float | None = None) -> None:
        txn = self._txn
        if txn.open:
            return
        if self.exactly_once:
            assert self._producer is not None  # noqa: S101 - run() made it
            self._producer.begin_transaction()
        txn.open, txn.started, txn.records = True, time.monotonic() if since is None else since, 0

    def _process(self, records: list[Message], since: float) -> None:
        assert self._producer is not None  # noqa: S101 - run() made it
        slices = self._slices(records)
        if not slices:
            return
        txn = self._txn
        self._begin(since)
        out = Output(self._producer)
        for (topic, partition), batch in slices.items():
            slot = self._slot(partition)
            state = self.state.get(slot)
            if state is None:  # not ours any more (revoked inside consume); the next owner reads it
                continue
            if txn.first is None:
                txn.first = (topic, partition, batch[0].offset() or 0)
            txn.positions[topic, partition] = (batch[-1].offset() or 0) + 1
            txn.records += len(batch)
            fresh = batch
            mark_name, topic_id = self._mark_name(topic, partition), self.topic_ids[topic]
            mark = state.get(mark_name)
            if mark is not None and mark[1] == topic_id and (batch[0].offset() or 0) < mark[0]:
                fresh = [record for record in batch if (record.offset() or 0) >= mark[0]]  # offsets only grow
                if len(fresh) < len(batch):  # a re-drive: these records' outputs and state are committed already
                    self.metrics.events.labels(agent=self.agent.name, outcome="already-processed").inc(
                        len(batch) - len(fresh)
                    )
            if fresh:
                poisoned = self._isolation.poisoned((topic, partition, fresh[0].offset() or 0))
                if not (poisoned and len(fresh) == 1 and self._park(fresh[0], out)):
                    self.agent.handle(fresh, state, out)
            state[mark_name] = (txn.positions[topic, partition], topic_id)
            self._write_state(slot, state)  # now, so its sends overlap the next slice instead of the commit

    def _slices(self, records: list[Message]) -> dict[TP, list[Message]]:
        """The consumed records per (topic, partition), in offset order; error events logged (or raised).

        consume() hands a partition's records in runs (one per fetched batch): a slice is cut per run, not
        appended to per record, and with one source topic a record is asked only for its error and partition
        (what a batch agent pays per record should be its own work)."""
        slices: dict[TP, list[Message]] = {}
        one_source, start, run = self._one_source, 0, None
        for index, record in enumerate(records):
            error = record.error()
            key = None if error is not None else (one_source or record.topic() or "", record.partition() or 0)
            if key != run:
                if run is not None:
                    slices[run] = slices.get(run, []) + records[start:index]
                start, run = index, key
            if error is not None:
                self._consume_error(record, error)
        if run is not None:
            slices[run] = slices.get(run, []) + records[start:]
        return slices

    def _consume_error(self, record: Message, error: KafkaError) -> None:
        refused = denial(
            error, self.kafka, "Read", group=self.group, topic=record.topic() or ", ".join(self.agent.sources)
        )
        if refused is not None:  # a missing ACL never heals by waiting: stop in one line, commit nothing
            raise refused
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("engine.consume.error", agent=self.agent.name, error=str(error))

    def _slot(self, partition: int) -> int:
        """Which state a source partition's records use (and which changelog partition holds it)."""
        return partition

    def _mark_name(self, topic: str, _partition: int) -> str:
        return self.marks[topic]

    def _run_ticks(self, consumer: Consumer, records: list[Message]) -> None:
        """Every commit interval: each owned partition's tick, told whether the partition is caught up."""
        assert self._producer is not None  # noqa: S101 - run() made it
        assert self._tick is not None  # noqa: S101 - only called when the agent has one
        busy = {record.partition() for record in records}
        wanted = [TopicPartition(t, p) for t in self.agent.sources for p in self.state]
        positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(wanted)}
        for partition, state in list(self.state.items()):
            idle = partition not in busy and all(
                _caught_up(
                    positions.get((topic, partition), -1),
                    consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)[1],
                )
                for topic in self.agent.sources
            )
            self._tick(partition, state, Output(self._producer, self._begin), idle)
            if state.dirty:
                self._begin()
                self._write_state(partition, state)

    def _commit(self) -> None:
        """Add the offsets and commit (the state went out after each slice); the caller recovers on failure."""
        producer, consumer, txn = self._producer, self._consumer, self._txn
        assert producer is not None  # noqa: S101 - run() made it
        assert consumer is not None  # noqa: S101 - run() made it
        started = time.perf_counter()
        if self._before_commit is not None:
            self._before_commit()  # side effects outside Kafka: done before the offsets say so (at-least-once)
        offsets = [TopicPartition(topic, p, offset) for (topic, p), offset in txn.positions.items()]
        if self.exactly_once:
            with self._watchdog.watching("commit", producer):
                if offsets:
                    producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
                producer.commit_transaction(30)
        else:
            producer.flush(30)
            if self._delivery_errors:
                error, self._delivery_errors = self._delivery_errors[0], []
                raise KafkaException(error)
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
        self._txn = _Transaction()
        self.commits += 1
        if self._committed is not None:
            self._committed()
        self.metrics.commit.labels(agent=self.agent.name).observe(time.perf_counter() - started)

    def _write_state(self, partition: int, state: PartitionState) -> None:
        """The keys written since the last call, once each with their latest value, into the open transaction."""
        producer = self._producer
        assert producer is not None  # noqa: S101 - run() made it
        for key in state.dirty:
            value = state.get(key)
            produce(
                producer,
                self.changelog,
                orjson.dumps(value) if value is not None else None,
                key.encode(),
                partition=partition,
            )
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

    # ------------------------------------------------------------------ failures

    def _failed(self, error: KafkaError | None, isolating: bool, exc: Exception | None = None) -> None:
        """The transaction failed: back to the last commit; a record that keeps failing alone is parked next
        (streams.runtime.isolation)."""
        self._isolation.failed(self._txn.first, isolating, error or exc)
        self._recover(error)

    def _park(self, record: Message, out: Output) -> bool:
        if not self._isolation.park(record, out, self._dead_letter):
            return False
        self.parked += 1
        self.metrics.events.labels(agent=self.agent.name, outcome="dead-letter").inc()
        return True

    def _recover(self, error: KafkaError | None) -> None:
        """The transaction failed: abort it, then go back to the last commit (state and positions)."""
        self._abort(error)
        self._rewind(list(self.state))

    def _abort(self, error: KafkaError | None) -> None:
        """Abort the open transaction; a fenced (fatal) producer is replaced by a new one with the same id."""
        if error is not None:
            log.warning(
                "engine.transaction.failed",
                agent=self.agent.name,
                error=str(error),
                fatal=error.fatal(),
                abortable=error.txn_requires_abort(),
            )
        producer = self._producer
        if self.exactly_once and producer is not None and (error is None or not error.fatal()) and self._txn.open:
            try:
                producer.abort_transaction(30)
            except KafkaException as exc:
                log.warning("engine.abort.failed", agent=self.agent.name, error=str(exc.args[0]))
                error = exc.args[0]
        if error is not None and error.fatal():
            self._fenced()
        self._txn = _Transaction()
        self._delivery_errors = []
        for state in self.state.values():
            state.dirty.clear()
        if self._aborted is not None:
            self._aborted()

    def _fenced(self) -> None:
        """Another producer took our transactional id (or the producer failed for good): replace ours."""
        self._close_producer()
        self._producer = self._new_producer()

    def _rewind(self, partitions: list[int]) -> None:
        """State from the changelog and consumer positions from the group's commits, for `partitions`."""
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - run() made it
        if not partitions:
            return
        self._restore(partitions)
        committed = consumer.committed(
            [TopicPartition(t, p) for t in self.agent.sources for p in partitions], timeout=30
        )
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
                    dict.__setitem__(state, key, frozen(orjson.loads(value)))
        self.state.update(restored)
        self.restored += len(restored)
        restored_hook = getattr(self.agent, "restored", None)
        if restored_hook is not None:
            for partition, state in restored.items():
                restored_hook(partition, state)
        log.info(
            "engine.restored",
            agent=self.agent.name,
            partitions=sorted(restored),
            keys=sum(map(len, restored.values())),
            seconds=round(time.monotonic() - started, 3),
        )

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Restore the state of the partitions added to ours (incremental: the others keep theirs)."""
        numbers = sorted({tp.partition for tp in partitions} - set(self.state))
        if not numbers:
            return
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            try:
                self._restore(numbers)
                break
            except StreamsError as exc:  # the changelog could not be read to its end: try again, then give up
                if attempt == RESTORE_ATTEMPTS:
                    raise  # the worker stops (it must not process partitions without their state)
                log.warning("engine.restore.failed", agent=self.agent.name, attempt=attempt, error=str(exc))
                time.sleep(2.0 * attempt)
        log.info("engine.assigned", agent=self.agent.name, partitions=numbers)

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
        consumer = self._consumer
        kept = {tp.partition for tp in consumer.assignment()} if consumer is not None else set()
        kept -= {tp.partition for tp in partitions}  # the revoked ones may still be listed
        for tp in partitions:
            if tp.partition not in kept:  # a partition number stays while another source topic's is still ours
                self.state.pop(tp.partition, None)
        log.info("engine.revoked", agent=self.agent.name, partitions=[tp.partition for tp in partitions])

    def _report_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now < self._lag_at:
            return
        self._lag_at = now + 5.0
        for tp in consumer.position(self._source_partitions()):
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                self.metrics.lag.labels(agent=self.agent.name, topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - tp.offset)
                )

    def _source_partitions(self) -> list[TopicPartition]:
        """The source partitions this engine reads now."""
        return [TopicPartition(t, p) for t in self.agent.sources for p in self.state]


def _caught_up(position: int, high: int) -> bool:
    """The partition's reader is at its end (both known: before the first fetch neither is)."""
    return 0 <= high <= position
