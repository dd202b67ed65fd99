"""`streams dlq list|redrive`: look at dead letters and send them back to their topic once fixed.

Redrive republishes the original key, value and headers (our dlq_* headers removed) and remembers how
far it got in the consumer group `streams-dlq-redrive`, so a record is redriven once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from streams.catalog import load_catalog
from streams.cli_options import OUTPUT_TABLE
from streams.errors import StreamsError

if TYPE_CHECKING:
    from streams.settings import KafkaConfig, Settings

REDRIVE_GROUP = "streams-dlq-redrive"


def _dead_letters(kafka_config: KafkaConfig, topic: str, *, group: str | None, timeout: float = 5.0) -> list[Any]:
    """Every record after the group's committed position (from the start without a group)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: PLC0415 - fast `--help`

    consumer = Consumer(
        {
            **kafka_config,
            "group.id": group or "streams-dlq-list",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise StreamsError(
                f"dead-letter topic '{topic}' does not exist; is its source in topics.yaml with dlq: true?"
            )
        partitions = [TopicPartition(topic, p) for p in found.partitions]
        if group is not None:
            partitions = consumer.committed(partitions, timeout=10)
            for tp in partitions:
                if tp.offset < 0:
                    tp.offset = -2  # OFFSET_BEGINNING
        else:
            for tp in partitions:
                tp.offset = -2
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in found.partitions}
        consumer.assign(partitions)
        records: list[Any] = []
        remaining = {tp.partition for tp in partitions if ends[tp.partition] > max(tp.offset, 0)}
        while remaining:
            message = consumer.poll(timeout)
            if message is None:
                break
            if message.error():
                raise StreamsError(f"reading '{topic}': {message.error()}")
            records.append(message)
            partition, offset = message.partition() or 0, message.offset() or 0
            if offset >= ends[partition] - 1:
                remaining.discard(partition)
        return records
    except KafkaException as exc:
        raise StreamsError(f"cannot read '{topic}': {exc.args[0]}") from exc
    finally:
        consumer.close()


def describe(message: Any) -> dict[str, Any]:
    from streams.records import DLQ_HEADER_PREFIX  # noqa: PLC0415 - `streams dlq --help` loads no codec

    headers = message.headers() or []
    errors = {
        k.removeprefix(DLQ_HEADER_PREFIX): v.decode(errors="replace")
        for k, v in headers
        if k.startswith(DLQ_HEADER_PREFIX)
    }
    return {
        "dlq_partition": message.partition(),
        "dlq_offset": message.offset(),
        "key": message.key().decode(errors="replace") if message.key() else None,
        "value_bytes": len(message.value() or b""),
        **errors,
    }


def pending(kafka_config: KafkaConfig, topic: str) -> list[Any]:
    """TOPIC's dead letters not yet redriven (after `streams-dlq-redrive`'s committed position)."""
    return _dead_letters(kafka_config, f"{topic}.dlq", group=REDRIVE_GROUP)


def redrive_records(
    kafka_config: KafkaConfig, topic: str, records: list[Any], *, pending_records: list[Any] | None = None
) -> dict[int, int]:
    """Republish `records` (dead letters of TOPIC) with their dlq_* headers removed, then mark them done;
    returns the positions committed ({partition: next offset}).

    With `pending_records` (every pending one, of which `records` is a selection: the console's one or
    filter), a partition's position moves only over the leading records that were all redriven, so a
    skipped record stays pending; a selected record past a skipped one is republished but stays pending
    too (decision 0027: a later redrive sends it again with the same ce_id).
    """
    from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: PLC0415 - fast `--help`

    from streams.records import DLQ_HEADER_PREFIX  # noqa: PLC0415

    producer = Producer({**kafka_config, "acks": "all", "enable.idempotence": True})
    for message in records:
        headers = [(k, v) for k, v in (message.headers() or []) if not k.startswith(DLQ_HEADER_PREFIX)]
        producer.produce(topic, key=message.key(), value=message.value(), headers=headers)
    if producer.flush(60) > 0:
        raise StreamsError(f"could not redrive every record to '{topic}' within 60 s; nothing was marked done")
    consumer = Consumer({**kafka_config, "group.id": REDRIVE_GROUP, "enable.auto.commit": False})
    try:
        done = _prefix_done(records, pending_records if pending_records is not None else records)
        if done:
            consumer.commit(offsets=[TopicPartition(f"{topic}.dlq", p, o) for p, o in done.items()], asynchronous=False)
    finally:
        consumer.close()
    return done


def _prefix_done(records: list[Any], pending_records: list[Any]) -> dict[int, int]:
    """Per partition, the offset after the longest run of pending records (in order) that were all redriven."""
    chosen = {(m.partition(), m.offset()) for m in records}
    done: dict[int, int] = {}
    blocked: set[int] = set()
    for message in sorted(pending_records, key=lambda m: (m.partition(), m.offset())):
        partition = message.partition()
        if partition in blocked:
            continue
        if (partition, message.offset()) in chosen:
            done[partition] = message.offset() + 1
        else:
            blocked.add(partition)
    return done


@click.group()
def dlq() -> None:
    """Dead-letter topics: list what was parked and why; redrive it once the cause is fixed.

    \b
    Example:
      streams dlq list invoice.created
      streams dlq redrive invoice.created --dry-run
    """


@dlq.command(name="list")
@click.argument("topic")
@OUTPUT_TABLE
@click.pass_obj
def list_dead_letters(settings: Settings, topic: str, output: str) -> None:
    """List TOPIC's dead letters with the agent, error and original position.

    \b
    Example:
      streams dlq list invoice.created --output json
    """
    load_catalog(settings.catalog_path, settings.profile).topic(topic)
    records = [
        describe(m)
        for m in _dead_letters(settings.kafka_config(settings.bootstrap_servers()), f"{topic}.dlq", group=None)
    ]
    if output == "json":
        click.echo(json.dumps(records, indent=2))
        return
    for record in records:
        click.echo(
            f"{record.get('topic')}[{record.get('partition')}]@{record.get('offset')} "
            f"{record.get('agent')}: {record.get('error_class')}: {record.get('error_message')}"
        )
    click.echo(f"{len(records)} dead letter(s) in {topic}.dlq")


@dlq.command()
@click.argument("topic")
@click.option("--dry-run", is_flag=True, help="Count what would be redriven; send nothing.")
@click.pass_obj
def redrive(settings: Settings, topic: str, dry_run: bool) -> None:
    """Republish TOPIC's not-yet-redriven dead letters to TOPIC (original key, value, headers).

    \b
    Example:
      streams dlq redrive invoice.created --dry-run && streams dlq redrive invoice.created
    """
    load_catalog(settings.catalog_path, settings.profile).topic(topic)
    config = settings.kafka_config(settings.bootstrap_servers())
    records = pending(config, topic)
    if dry_run:
        click.echo(f"would redrive {len(records)} record(s) from {topic}.dlq to {topic}")
        return
    redrive_records(config, topic, records)
    click.echo(f"redrove {len(records)} record(s) from {topic}.dlq to {topic}")
