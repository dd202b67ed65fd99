"""The `_schemas` log: a tailing read_committed consumer that keeps the state, and one fenced writer.

Writes go through a transactional producer whose single transactional.id fences every other registry
process (see docs/decisions/0003-schema-registry.md for why that makes ids and versions unique).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import SchemaError
from streams.registry import errors
from streams.registry.errors import RegistryError
from streams.registry.records import LogRecord, decode
from streams.registry.state import RegistryState
from streams.settings import KafkaConfig

log = logging.getLogger(__name__)
kafka_log = logging.getLogger("streams.registry.kafka")

T = TypeVar("T")
Plan = Callable[[RegistryState], tuple[Sequence[LogRecord], T]]
"""Given the caught-up state, the records to write and the caller's result; or a RegistryError."""

_BATCH_MAX = 256
_ATTEMPTS = 8


@dataclass
class _Job(Generic[T]):
    plan: Plan[T]
    future: concurrent.futures.Future[T]


def ensure_topic(kafka_config: KafkaConfig, topic: str, timeout_s: float) -> bool:
    """Create `topic` (1 partition, compacted, replication min(3, brokers)) if missing; True if created."""
    admin = AdminClient(dict(kafka_config))
    try:
        # All topics, not list_topics(topic): asking for one can auto-create it with broker defaults.
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise SchemaError(f"cannot reach Kafka at {kafka_config.get('bootstrap.servers')}: {exc.args[0]}") from exc
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        if len(existing.partitions) != 1:
            raise SchemaError(
                f"topic '{topic}' has {len(existing.partitions)} partitions; the schema registry needs"
                " exactly 1 (ids and versions are allocated in log order)"
            )
        return False
    replication = max(1, min(3, len(metadata.brokers)))
    configs = {"cleanup.policy": "compact"}
    if replication >= 3:
        configs["min.insync.replicas"] = "2"
    future = admin.create_topics([NewTopic(topic, 1, replication, config=configs)])[topic]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another registry won the race
            raise SchemaError(f"cannot create schema topic '{topic}': {exc.args[0]}") from exc
        return False
    log.info("created schema topic %s (1 partition, compacted, replication %d)", topic, replication)
    return True


class SchemaLog:
    """The registry state, kept current from `topic`, and the only path that writes to it."""

    def __init__(self, kafka_config: KafkaConfig, topic: str = "_schemas", *, timeout_s: float = 30.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.transactional_id = f"streams-registry-writer-{topic}"
        self.fenced_count = 0  # times this process's writer lost the writer role and took it back
        self._kafka_config = dict(kafka_config)
        self._state = RegistryState()
        self._cond = threading.Condition()
        self._position = 0  # next offset the tailer will read; everything before it is in _state
        self._stopping = threading.Event()
        self._jobs: queue.Queue[_Job[Any] | None] = queue.Queue()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._offsets: Consumer | None = None
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the topic if needed, start tailing and writing, and return once caught up."""
        ensure_topic(self._kafka_config, self.topic, self.timeout_s)
        consumer = self._consumer = self._new_consumer()
        self._offsets = self._new_consumer()
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._threads = [
            threading.Thread(target=self._tail, args=(consumer,), name="registry-tailer", daemon=True),
            threading.Thread(target=self._write_loop, name="registry-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.sync(timeout_s=max(self.timeout_s, 60.0))

    def stop(self) -> None:
        """Stop both threads; queued writes fail with a store error."""
        self._stopping.set()
        self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        for consumer in (self._consumer, self._offsets):
            if consumer is not None:
                consumer.close()
        self._producer = None

    def _new_consumer(self) -> Consumer:
        return Consumer(
            {
                **self._kafka_config,
                "group.id": f"streams-registry-{self.topic}",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                "logger": kafka_log,
            }
        )

    # ---- reading --------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[RegistryState]:
        """The state, held still for the duration of the block (keep it short)."""
        with self._cond:
            yield self._state

    def sync(self, timeout_s: float | None = None) -> None:
        """Return once the state includes every record committed before this call."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        end = self._end_offset(deadline)
        self.wait_for(end, max(0.0, deadline - time.monotonic()))

    def _end_offset(self, deadline: float) -> int:
        if self._offsets is None:
            raise errors.store_error("the schema log is not started")
        partition = TopicPartition(self.topic, 0)
        while True:
            try:
                # read_committed: this is the last stable offset, so open transactions never block us.
                low, high = self._offsets.get_watermark_offsets(partition, timeout=5.0, cached=False)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise errors.store_timeout(f"end offset of '{self.topic}': {exc.args[0]}") from exc
                time.sleep(0.2)
                continue
            return 0 if high <= low else int(high)

    def wait_for(self, offset: int, timeout_s: float) -> None:
        """Return once every record before `offset` is folded into the state."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._position >= offset, timeout=timeout_s):
                raise errors.store_timeout(
                    f"the registry read '{self.topic}' up to offset {self._position}, not {offset}, in {timeout_s:.0f}s"
                )

    def _tail(self, consumer: Consumer) -> None:
        partition = TopicPartition(self.topic, 0)
        while not self._stopping.is_set():
            try:
                # A short poll, not consume(timeout): consume waits out its timeout unless the batch
                # fills, and the position only moves past transaction markers while we poll.
                first = consumer.poll(0.05)
                messages = [] if first is None else [first, *consumer.consume(num_messages=500, timeout=0)]
                position = consumer.position([partition])[0].offset
            except (KafkaException, RuntimeError) as exc:
                if not self._stopping.is_set():
                    log.warning("reading %s: %s", self.topic, exc)
                    time.sleep(0.5)
                continue
            decoded = [record for record in map(self._decode, messages) if record is not None]
            with self._cond:
                for record in decoded:
                    self._state.apply(record)
                last = messages[-1].offset() if messages else None
                if last is not None:
                    position = max(position, last + 1)
                # Transaction markers occupy offsets that are never delivered; position moves past them.
                self._position = max(self._position, position)
                self._cond.notify_all()

    def _decode(self, message: Message) -> LogRecord | None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("reading %s: %s", self.topic, error)
            return None
        record = decode(message.key(), message.value())
        if record is None:
            log.warning("skipping unreadable record at %s offset %s", self.topic, message.offset())
        return record

    # ---- writing --------------------------------------------------------------------------------

    def submit(self, plan: Plan[T]) -> concurrent.futures.Future[T]:
        """Queue a write; the future resolves once its records are committed and visible here."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._stopping.is_set():
            future.set_exception(errors.store_error("the registry is shutting down"))
        else:
            self._jobs.put(_Job(plan, future))
        return future

    def _write_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            batch: list[_Job[Any]] = [job]
            while len(batch) < _BATCH_MAX:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                batch.append(more)
            try:
                self._run_batch(batch)
            except Exception as exc:  # the writer thread must outlive any one batch
                log.exception("registry write batch failed")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(errors.store_error(str(exc)))
        while True:  # fail whatever is still queued
            try:
                left = self._jobs.get_nowait()
            except queue.Empty:
                return
            if left is not None:
                left.future.set_exception(errors.store_error("the registry is shutting down"))

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        last_error = "unknown"
        for attempt in range(_ATTEMPTS):
            try:
                outcomes = self._plan_and_commit(batch)
            except RegistryError as exc:
                for job in batch:
                    job.future.set_exception(exc)
                return
            except (KafkaException, SystemError) as exc:  # a fatal error can surface as SystemError
                last_error = str(exc)
                self._recover(_kafka_error(exc))
                time.sleep(random.uniform(0, min(0.05 * 2**attempt, 1.0)))  # noqa: S311 - jitter, not crypto
                continue
            for job, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome[0])
            return
        for job in batch:
            job.future.set_exception(errors.store_error(f"gave up after {_ATTEMPTS} attempts: {last_error}"))

    def _plan_and_commit(self, batch: list[_Job[Any]]) -> list[tuple[Any] | BaseException]:
        producer = self._writer()
        # After init_transactions no older writer can commit, so once we have read to the end
        # nothing can appear that this plan does not see, unless a newer writer fences us (then
        # our commit fails and we start over from here).
        self.sync()
        with self._cond:
            scratch = self._state.clone()
        outcomes: list[tuple[Any] | BaseException] = []
        staged: list[LogRecord] = []
        for job in batch:
            try:
                planned, result = job.plan(scratch)
            except SchemaError as exc:
                outcomes.append(exc)
                continue
            except Exception as exc:  # a bug in one request must not fail the whole batch
                log.exception("planning a registry write failed")
                outcomes.append(exc)
                continue
            for record in planned:
                scratch.apply(record)
            staged.extend(planned)
            outcomes.append((result,))
        if staged:
            last = self._commit(producer, staged)
            self.wait_for(last + 1, self.timeout_s)
        return outcomes

    def _commit(self, producer: Producer, staged: list[LogRecord]) -> int:
        offsets: list[int] = []
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)
            else:
                offsets.append(message.offset() or 0)

        producer.begin_transaction()
        for record in staged:
            key, value = record.encode()
            producer.produce(self.topic, key=key, value=value, partition=0, on_delivery=delivered)
        producer.flush(self.timeout_s)
        if failures or len(offsets) != len(staged):
            raise KafkaException(failures[0] if failures else KafkaError(KafkaError._TIMED_OUT))
        for attempt in range(3):
            try:
                producer.commit_transaction(self.timeout_s)
                break
            except KafkaException as exc:
                if not exc.args[0].retriable() or attempt == 2:
                    raise
        return max(offsets)

    def _writer(self) -> Producer:
        if self._producer is None:
            producer = Producer(
                {
                    **self._kafka_config,
                    "transactional.id": self.transactional_id,
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 0,
                    "transaction.timeout.ms": 60000,
                    "logger": kafka_log,
                }
            )
            # Bumps the epoch of our one transactional.id: any other registry's open transaction is
            # aborted and every later produce or commit of theirs fails as fenced.
            producer.init_transactions(self.timeout_s)
            self._producer = producer
        return self._producer

    def _recover(self, error: KafkaError | None) -> None:
        producer = self._producer
        if producer is not None and error is not None and error.txn_requires_abort():
            try:
                producer.abort_transaction(self.timeout_s)
                return
            except KafkaException as exc:
                log.warning("aborting a registry transaction failed: %s", exc.args[0])
        if error is not None and error.code() in (
            KafkaError._FENCED,
            KafkaError.PRODUCER_FENCED,
            KafkaError.INVALID_PRODUCER_EPOCH,
        ):
            self.fenced_count += 1
            log.warning("registry writer fenced by another registry process; taking the writer role back")
        else:
            log.warning("registry write failed, retrying with a new producer: %s", error)
        self._producer = None


def _kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError behind `exc` (directly or as its cause), if any."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, KafkaException) and isinstance(current.args[0], KafkaError):
            return current.args[0]
        current = current.__cause__ or current.__context__
    return None
