"""Small confluent-kafka helpers shared by admin, registry and replay code.

Reading a topic to its current end without joining a consumer group; the one wording of an ACL denial.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, TopicDescription

from streams.errors import AuthorizationError, StreamsError
from streams.settings import KafkaConfig

# The brokers' authorization refusals: the resource kind each names. CLUSTER_AUTHORIZATION_FAILED is what an
# idempotent producer without IdempotentWrite (or a client creating topics it may not) gets.
_DENIALS = {
    "TOPIC_AUTHORIZATION_FAILED": "topic",
    "GROUP_AUTHORIZATION_FAILED": "group",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": "transactional id",
    "CLUSTER_AUTHORIZATION_FAILED": "cluster",
}


def denial(error: KafkaError | str | None, kafka_config: KafkaConfig, operation: str, *, topic: str | None = None,
           group: str | None = None, transactional_id: str | None = None) -> AuthorizationError | None:
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


def create_missing_topics(admin: AdminClient, topics: list[NewTopic], *, identity: KafkaConfig | None = None
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


def read_compacted(
    kafka_config: KafkaConfig, topic: str, *, timeout_s: float = 30.0
) -> dict[bytes, bytes | None]:
    """Every key's latest value in `topic` up to its end offset now (None for a tombstone)."""
    return {
        key: message.value()
        for message in read_all(kafka_config, topic, timeout_s=timeout_s)
        if (key := message.key()) is not None
    }


def read_all(kafka_config: KafkaConfig, topic: str, *, timeout_s: float = 30.0) -> list[Message]:
    """Every committed record of `topic` up to its end offsets now, in partition order."""
    return read_partitions(kafka_config, topic, None, timeout_s=timeout_s)


def read_partitions(kafka_config: KafkaConfig, topic: str, partitions: list[int] | None, *,
                    timeout_s: float = 30.0) -> list[Message]:
    """Every committed record of `topic`'s `partitions` (None: all) up to their end offsets now."""
    return [record for batch in iter_partitions(kafka_config, topic, partitions, timeout_s=timeout_s)
            for record in batch]


def iter_partitions(kafka_config: KafkaConfig, topic: str, partitions: list[int] | None, *,
                    timeout_s: float = 30.0) -> Iterator[list[Message]]:
    """`read_partitions` in batches as they arrive, for readers that fold records into something smaller
    (a state store's changelog) instead of holding them all. StreamsError if `timeout_s` pass without a
    record while the end is not reached yet."""
    consumer = _reader(kafka_config)
    try:
        if partitions is None:
            partitions = list(consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        ranges = {partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                  for partition in partitions}
        yield from _read(consumer, topic, ranges, timeout_s)
    except KafkaException as exc:
        raise StreamsError(f"reading '{topic}': {exc.args[0]}") from exc
    finally:
        consumer.close()


def read_range(kafka_config: KafkaConfig, topic: str, partition: int, start: int, end: int, *,
               timeout_s: float = 30.0) -> list[Message]:
    """The committed records of one partition with offsets in [start, end)."""
    consumer = _reader(kafka_config)
    try:
        return [record for batch in _read(consumer, topic, {partition: (start, end)}, timeout_s) for record in batch]
    except KafkaException as exc:
        raise StreamsError(f"reading '{topic}' [{partition}] offsets {start}-{end}: {exc.args[0]}") from exc
    finally:
        consumer.close()


def _reader(kafka_config: KafkaConfig) -> Consumer:
    return Consumer({**kafka_config, "group.id": "streams-reader", "enable.auto.commit": False,
                     "isolation.level": "read_committed"})


def _read(consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]],
          timeout_s: float) -> Iterator[list[Message]]:
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
