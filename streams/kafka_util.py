"""Small confluent-kafka helpers shared by admin, registry and replay code.

Reading a topic to its current end without joining a consumer group; committing a consumer loop's offsets
and sending its dead letters until Kafka acknowledges them (the bridge and the webhook runner); the one
wording of an ACL denial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, TopicDescription

from streams.errors import AuthorizationError, StreamsError
from streams.settings import KafkaConfig

log = structlog.get_logger("streams.kafka")

# The brokers' authorization refusals: the resource kind each names. CLUSTER_AUTHORIZATION_FAILED is what an
# idempotent producer without IdempotentWrite (or a client creating topics it may not) gets.
_DENIALS = {
    "TOPIC_AUTHORIZATION_FAILED": "topic",
    "GROUP_AUTHORIZATION_FAILED": "group",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": "transactional id",
    "CLUSTER_AUTHORIZATION_FAILED": "cluster",
}


def denial(
    error: KafkaError | str | None,
    kafka_config: KafkaConfig,
    operation: str,
    *,
    topic: str | None = None,
    group: str | None = None,
    transactional_id: str | None = None,
) -> AuthorizationError | None:
    """The one-line AuthorizationError for an ACL refusal, or None when `error` is not one.

    `error` is a KafkaError or its name; the resource named is the one of `topic`, `group`, `transactional_id`
    that the refusal concerns. The principal is `User:<sasl.username>` (ANONYMOUS without SASL): no password.
    """
    name = error if isinstance(error, str) or error is None else error.name()
    kind = _DENIALS.get(name or "")
    if kind is None:
        return None
    username = kafka_config.get("sasl.username")
    principal = f"User:{username}" if username else "User:ANONYMOUS"
    resource = {"topic": topic, "group": group, "transactional id": transactional_id}.get(kind)
    where = "on the cluster" if kind == "cluster" else f"{kind} {resource}" if resource else f"this {kind}"
    return AuthorizationError(f"{principal} may not {operation} {where} ({name}); run `streams acls plan`")


def describe_topic(admin: AdminClient, topic: str) -> TopicDescription | None:
    """`topic`'s description (its id, which Kafka renews when a topic is re-created, and its partitions), or
    None when it does not exist."""
    future = admin.describe_topics(TopicCollection([topic]), request_timeout=10)[topic]
    try:
        description: TopicDescription = future.result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
        return None
    return description


def create_missing_topics(
    admin: AdminClient, topics: list[NewTopic], *, identity: KafkaConfig | None = None
) -> list[str]:
    """Create those of `topics` the cluster lacks (losing a creation race to another client is fine).

    Returns the names created; any other failure is a StreamsError naming the topic (`identity`, the client's
    settings, names the principal of an ACL refusal).
    """
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [topic for topic in topics if topic.topic not in existing]
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, request_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            refused = denial(exc.args[0], identity or {}, "Create", topic=name)
            if refused is not None:
                raise refused from None
            if "TOPIC_ALREADY_EXISTS" not in str(exc.args[0]):
                raise StreamsError(f"cannot create topic '{name}': {exc.args[0]}") from exc
    return [topic.topic for topic in wanted]


def read_compacted(kafka_config: KafkaConfig, topic: str, *, timeout_s: float = 30.0) -> dict[bytes, bytes | None]:
    """Every key's latest value in `topic` up to its end offset now (None for a tombstone)."""
    return {
        key: message.value()
        for message in read_all(kafka_config, topic, timeout_s=timeout_s)
        if (key := message.key()) is not None
    }


def read_all(kafka_config: KafkaConfig, topic: str, *, timeout_s: float = 30.0) -> list[Message]:
    """Every committed record of `topic` up to its end offsets now, in partition order."""
    return read_partitions(kafka_config, topic, None, timeout_s=timeout_s)


def read_partitions(
    kafka_config: KafkaConfig, topic: str, partitions: list[int] | None, *, timeout_s: float = 30.0
) -> list[Message]:
    """Every committed record of `topic`'s `partitions` (None: all) up to their end offsets now."""
    return [
        record for batch in iter_partitions(kafka_config, topic, partitions, timeout_s=timeout_s) for record in batch
    ]


def iter_partitions(
    kafka_config: KafkaConfig, topic: str, partitions: list[int] | None, *, timeout_s: float = 30.0
) -> Iterator[list[Message]]:
    """`read_partitions` in batches as they arrive, for readers that fold records into something smaller
    (a state store's changelog) instead of holding them all. StreamsError if `timeout_s` pass without a
    record while the end is not reached yet."""
    consumer = _reader(kafka_config)
    try:
        if partitions is None:
            partitions = list(consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        ranges = {
            partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            for partition in partitions
        }
        yield from _read(consumer, topic, ranges, timeout_s)
    except KafkaException as exc:
        raise StreamsError(f"reading '{topic}': {exc.args[0]}") from exc
    finally:
        consumer.close()


def read_range(
    kafka_config: KafkaConfig, topic: str, partition: int, start: int, end: int, *, timeout_s: float = 30.0
) -> list[Message]:
    """The committed records of one partition with offsets in [start, end)."""
    consumer = _reader(kafka_config)
    try:
        return [record for batch in _read(consumer, topic, {partition: (start, end)}, timeout_s) for record in batch]
    except KafkaException as exc:
        raise StreamsError(f"reading '{topic}' [{partition}] offsets {start}-{end}: {exc.args[0]}") from exc
    finally:
        consumer.close()


def _reader(kafka_config: KafkaConfig) -> Consumer:
    return Consumer(
        {**kafka_config, "group.id": "streams-reader", "enable.auto.commit": False, "isolation.level": "read_committed"}
    )


def _read(
    consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]], timeout_s: float
) -> Iterator[list[Message]]:
    """Batches of the records in `ranges` ({partition: [low, high)}), none at or above a partition's high."""
    ranges = {partition: (low, high) for partition, (low, high) in ranges.items() if high > low}
    if not ranges:
        return
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ranges.items()])
    deadline = time.monotonic() + timeout_s
    while True:
        # What is there already, else wait for the next record (consume() would wait out its timeout).
        batch = consumer.consume(10_000, 0) or [message for message in (consumer.poll(0.2),) if message is not None]
        batch = [message for message in batch if message.error() is None]
        # Transaction markers take offsets that are never delivered, so ask for the positions themselves.
        positions = {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in ranges])}
        if any(offset > ranges[partition][1] for partition, offset in positions.items()):  # read past a high
            batch = [message for message in batch if (message.offset() or 0) < ranges[message.partition() or 0][1]]
        if batch:
            deadline = time.monotonic() + timeout_s  # progress: the timeout counts from the last record
            yield batch
        if all(offset >= ranges[partition][1] for partition, offset in positions.items()):
            return
        if time.monotonic() > deadline:
            raise StreamsError(f"timed out reading '{topic}' to offsets {ranges}: nothing for {timeout_s:g} s")


def commit_offsets(
    consumer: Consumer,
    offsets: dict[tuple[str, int], int],
    assigned: set[tuple[str, int]],
    committed: dict[tuple[str, int], int],
    *,
    sync: bool = False,
) -> None:
    """Commit `offsets` (next offset per partition) for the partitions still `assigned`, noting them in
    `committed`; a failed commit is logged, not raised: a later commit, or the next owner's redelivery, covers it."""
    if not offsets:
        return
    committed.update(offsets)
    parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in assigned]
    if not parts:
        return
    try:
        if sync:  # two calls: the stubs type the synchronous and asynchronous forms apart
            consumer.commit(offsets=parts, asynchronous=False)
        else:
            consumer.commit(offsets=parts, asynchronous=True)
    except KafkaException as exc:
        log.warning("offset commit failed", error=str(exc))


def produce_until_acknowledged(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, str | bytes | None]],
    acknowledged: Callable[[], None],
) -> None:
    """Send one record (a dead letter) and call `acknowledged` once Kafka has it; a failed delivery is logged and
    sent again, and a full local queue is waited out, so the record is never dropped."""

    def delivered(err: KafkaError | None, _: Message) -> None:
        if err is None:
            acknowledged()
            return
        log.warning("dead letter not delivered; retrying", topic=topic, error=err.str())
        _produce(producer, topic, key, value, headers, delivered)

    _produce(producer, topic, key, value, headers, delivered)


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, str | bytes | None]],
    callback: Callable[[KafkaError | None, Message], None],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.05)


TopicPartitionKey = tuple[str, int]


def member_config(
    kafka: KafkaConfig,
    group: str,
    client_id: str,
    *,
    session_timeout_ms: int,
    instance_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The consumer configuration of a group member that commits offsets itself, only for settled records: from
    the earliest offset when the group has none, static membership with `instance_id`; `extra` wins."""
    config: dict[str, Any] = {
        **kafka,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "session.timeout.ms": session_timeout_ms,
        "client.id": client_id,
        **(extra or {}),
    }
    if instance_id:
        config["group.instance.id"] = instance_id
    return config


class Partitions:
    """What a consumer-group member that commits only settled records keeps about its partitions (the bridge and
    the webhook runner): which it owns, which are paused or held (the registry was unreachable: rewound and
    paused until a time), the next offsets it committed; and the lag it reports from those."""

    def __init__(
        self,
        consumer: Consumer,
        lag_gauge: Any,
        lag_interval_s: float,
        *,
        identity: KafkaConfig | None = None,
        group: str | None = None,
    ) -> None:
        self.consumer = consumer
        self._identity, self._group = identity or {}, group  # who reads, to name it in an ACL refusal
        self.assigned: set[TopicPartitionKey] = set()
        self.paused: set[TopicPartitionKey] = set()
        self.held: dict[TopicPartitionKey, float] = {}  # partition -> when to resume it
        self.committed: dict[TopicPartitionKey, int] = {}  # next offset everything before is settled
        self._lag_gauge, self._lag_interval_s, self._lag_at = lag_gauge, lag_interval_s, 0.0

    def hold(self, tp: TopicPartitionKey, offset: int, error: Exception, delay_s: float) -> None:
        """The registry cannot be asked now: rewind the partition to `offset` and pause it for `delay_s`."""
        log.warning(
            "schema registry unreachable; partition held",
            topic=tp[0],
            partition=tp[1],
            offset=offset,
            error=str(error),
            retry_in_s=delay_s,
        )
        self.held[tp] = time.monotonic() + delay_s
        part = TopicPartition(tp[0], tp[1], offset)
        self.consumer.pause([part])
        self.paused.add(tp)
        self.consumer.seek(part)

    def release_held(self, now: float) -> None:
        """Forget the holds whose time has come (the next `pause_only` resumes those partitions)."""
        for tp in [tp for tp, at in self.held.items() if at <= now]:
            del self.held[tp]

    def owned(
        self, messages: list[Message], rewound: set[TopicPartitionKey]
    ) -> Iterator[tuple[Message, TopicPartitionKey, int]]:
        """(record, partition, offset) of each record to handle: consumer errors are logged and skipped, as are
        records of partitions no longer owned or rewound earlier in this batch (`rewound`, which the caller
        fills as it holds partitions). An ACL refusal raises AuthorizationError: it never heals by waiting."""
        assigned = self.assigned
        for message in messages:
            error = message.error()
            if error is not None:
                refused = denial(error, self._identity, "Read", group=self._group, topic=message.topic())
                if refused is not None:  # stop in one line, commit nothing
                    raise refused
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", error=error.str())
                continue
            tp = (message.topic() or "", message.partition() or 0)
            if tp in rewound or tp not in assigned:
                continue
            yield message, tp, message.offset() or 0

    def pause_only(self, desired: set[TopicPartitionKey]) -> tuple[set[TopicPartitionKey], set[TopicPartitionKey]]:
        """Pause exactly `desired` (resuming the others); (newly paused, newly resumed)."""
        pause, resume = desired - self.paused, self.paused - desired
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])
        self.paused = desired
        return pause, resume

    def commit(self, offsets: dict[TopicPartitionKey, int], *, sync: bool = False) -> None:
        commit_offsets(self.consumer, offsets, self.assigned, self.committed, sync=sync)

    def assign(self, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self.assigned |= tps
        self.paused -= tps  # a fresh assignment starts unpaused; the next turn re-pauses if needed
        log.info("partitions assigned", partitions=sorted(tps))

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        self.assigned -= tps
        self.paused -= tps
        for tp in tps:
            self.held.pop(tp, None)
            self.committed.pop(tp, None)

    def report_lag(self) -> bool:
        """Now and then (True when now): records between each owned partition's committed offset and its end."""
        now = time.monotonic()
        if now < self._lag_at:
            return False
        self._lag_at = now + self._lag_interval_s
        for topic, partition in self.assigned:
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            committed = self.committed.get((topic, partition))
            if high >= 0 and committed is not None:
                self._lag_gauge.labels(topic, str(partition)).set(max(0, high - committed))
        return True
