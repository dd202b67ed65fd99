"""`streams publish` and `streams consume`: send JSON lines as typed events, print events as JSON.

Publishing checks and encodes every line before sending any, so a bad file sends nothing.
"""

from __future__ import annotations

import json
from base64 import b64encode
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, get_args

import click
from pydantic import AwareDatetime, BaseModel, NaiveDatetime, ValidationError

from streams.catalog import TopicSpec, load_catalog
from streams.errors import PublishError, SchemaError, StreamsError

# The publisher, the codecs, the event models and the Kafka and registry clients are imported where they are
# used, so `streams publish --help` and `streams consume --help` load none of them.
if TYPE_CHECKING:
    from streams.publish import OutgoingRecord
    from streams.schemas.codec import AvroCodec
    from streams.schemas.registry_client import RegistryClient
    from streams.settings import Settings

TIME_TYPES = {datetime, date, AwareDatetime, NaiveDatetime}


@click.command()
@click.argument("topic")
@click.option(
    "--file",
    "-f",
    "source",
    type=click.File("r"),
    default="-",
    show_default=True,
    help="JSON lines, one event per line ('-' is stdin).",
)
@click.option("--source-name", default="streams-cli", show_default=True, help="CloudEvents ce_source.")
@click.option("--tenant", default=None, help="Tenant id for every event (default: each payload's tenant_id).")
@click.pass_obj
def publish(settings: Settings, topic: str, source: IO[str], source_name: str, tenant: str | None) -> None:
    """Publish JSON-lines events to TOPIC, schema-checked, all or nothing.

    \b
    Example:
      streams publish invoice.created --file invoices.jsonl
      cat events.jsonl | streams publish user.action
    """
    from streams.publish import Publisher  # noqa: PLC0415 - see the note at the imports

    catalog = load_catalog(settings.catalog_path, settings.profile)
    model = _model_for(catalog.topic(topic))  # unknown topic: a clear error before anything else
    # The whole file is read and checked before any connection: a bad line is named even with Kafka down.
    payloads: list[tuple[str, Any]] = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        where = f"{getattr(source, 'name', '<stdin>')}:{number}"
        try:
            raw = json.loads(line, parse_float=Decimal)
            if model is not None:
                _refuse_numeric_times(model, raw)
            payloads.append((where, model.model_validate(raw).model_dump() if model is not None else raw))
        except json.JSONDecodeError as exc:
            raise PublishError(f"{where}: not valid JSON: {_json_problem(exc)}; nothing sent") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            path = ".".join(str(part) for part in first["loc"])
            raise PublishError(f"{where}: field '{path}': {first['msg']}; nothing sent") from exc
        except PublishError as exc:
            raise PublishError(f"{where}: {exc}; nothing sent") from exc
    with Publisher(settings, catalog=catalog, source=source_name) as publisher:
        publisher._check_topic(topic)
        records: list[OutgoingRecord] = []
        for where, payload in payloads:
            try:
                records.append(publisher.encoder.encode(topic, payload, tenant=tenant))
            except PublishError as exc:
                raise PublishError(f"{where}: {exc}; nothing sent") from exc
        for record in records:
            publisher.send(record)
        publisher.flush()
    click.echo(f"published {len(records)} event(s) to {topic}")


def _json_problem(exc: json.JSONDecodeError) -> str:
    """json's message with the column of the character at fault, 1-based as editors count.

    json reports a trailing comma where it expected the next item (the `}` after it); the comma is the mistake.
    """
    before = exc.doc[: exc.pos].rstrip()
    if before.endswith(",") and exc.doc[exc.pos : exc.pos + 1] in {"}", "]"}:
        comma = exc.doc.rfind(",", 0, exc.pos)
        return f"a trailing comma at column {comma - exc.doc.rfind(chr(10), 0, comma)} before '{exc.doc[exc.pos]}'"
    return f"{exc.msg} at column {exc.colno}"


def _refuse_numeric_times(model: type[BaseModel], raw: Any, prefix: str = "") -> None:
    """A number where the schema has a timestamp is refused: pydantic would read 12 as 1970-01-01T00:00:12Z,
    which is never what a JSON line meant. Times are ISO 8601 strings (2026-12-07T10:00:00Z)."""
    if not isinstance(raw, dict):
        return
    for name, info in model.model_fields.items():
        value = raw.get(info.alias or name)
        path = f"{prefix}{name}"
        for kind in _leaf_types(info.annotation):
            if kind in TIME_TYPES and isinstance(value, int | float | Decimal) and not isinstance(value, bool):
                raise PublishError(
                    f"field '{path}': {value} is a number, not a time; write an ISO 8601 time such as"
                    " 2026-12-07T10:00:00Z"
                )
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                items = value if isinstance(value, list) else [value]
                for item in items:
                    _refuse_numeric_times(kind, item, f"{path}.")


def _leaf_types(annotation: Any) -> list[Any]:
    """The classes an annotation can hold (through Optional, unions, lists and Annotated)."""
    arguments = get_args(annotation)
    if not arguments:
        return [annotation]
    return [leaf for argument in arguments for leaf in _leaf_types(argument)]


def _model_for(spec: TopicSpec) -> type[BaseModel] | None:
    """The typed model that turns JSON (ISO times, decimal strings) into the schema's Python types."""
    from streams.schemas.models import EVENT_MODELS  # noqa: PLC0415

    if spec.name in EVENT_MODELS:
        return EVENT_MODELS[spec.name]
    if spec.schema_file is None:
        return None
    record_name = json.loads(Path(spec.schema_file).read_text()).get("name")
    return next((m for m in EVENT_MODELS.values() if m.__name__ == record_name), None)


@click.command()
@click.argument("topic")
@click.option("--from-beginning/--latest", default=True, show_default=True, help="Where to start reading.")
@click.option("--max-messages", "-n", type=int, default=None, help="Stop after this many records.")
@click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="Stop after this many seconds without a record."
)
@click.pass_obj
def consume(settings: Settings, topic: str, from_beginning: bool, max_messages: int | None, timeout: float) -> None:
    """Print TOPIC's records as JSON lines: decoded value, key, headers, partition, offset.

    Reads without joining a consumer group, so it never moves anyone's offsets. A record that cannot be
    decoded is printed with an `error` field and its raw bytes (`value_base64`), and the command then exits
    1 with one line saying how many; an unreachable registry stops it at the first record.

    \b
    Example:
      streams consume invoice.created -n 10
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: PLC0415

    from streams.schemas.registry_client import RegistryClient  # noqa: PLC0415

    registry = RegistryClient(settings.registry_url())
    codecs: dict[int, AvroCodec] = {}
    consumer = Consumer(
        {
            **settings.kafka_config(settings.bootstrap_servers()),
            "group.id": "streams-consume",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise StreamsError(f"topic '{topic}' does not exist on the cluster")
        start = -2 if from_beginning else -1  # OFFSET_BEGINNING / OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in found.partitions])
        seen = 0
        undecoded: list[str] = []
        while max_messages is None or seen < max_messages:
            message = consumer.poll(timeout)
            if message is None:
                break
            if message.error():
                raise StreamsError(f"reading '{topic}': {message.error()}")
            described = _describe(message, registry, codecs)
            if "error" in described:
                if described["error"].startswith("cannot reach the schema registry"):
                    raise StreamsError(f"cannot decode '{topic}': {described['error']}")
                undecoded.append(f"{described['partition']}:{described['offset']}")
            click.echo(json.dumps(described, default=_json_default))
            seen += 1
        if undecoded:
            raise StreamsError(
                f"{len(undecoded)} of {seen} record(s) of '{topic}' could not be decoded (partition:offset"
                f" {', '.join(undecoded[:5])}{', ...' if len(undecoded) > 5 else ''}); see their `error` field"
            )
    except KafkaException as exc:
        raise StreamsError(f"cannot read '{topic}': {exc.args[0]}") from exc
    finally:
        consumer.close()
        registry.close()


def _describe(message: Any, registry: RegistryClient, codecs: dict[int, AvroCodec]) -> dict[str, Any]:
    from streams.schemas.codec import HEADER, AvroCodec, split_header  # noqa: PLC0415

    value = message.value()
    out: dict[str, Any] = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": message.timestamp()[1],
        "key": message.key().decode(errors="replace") if message.key() is not None else None,
        "headers": {name: raw.decode(errors="replace") for name, raw in (message.headers() or [])},
    }
    try:
        _, schema_id = split_header(value or b"")
        codec = codecs.get(schema_id)
        if codec is None:
            codec = codecs[schema_id] = AvroCodec(registry.schema_by_id(schema_id), schema_id)
        out["schema_id"] = schema_id
        out["value"] = codec.decode_datum(value[HEADER.size :])
    except SchemaError as exc:
        out["error"] = str(exc)
        out["value_base64"] = b64encode(value or b"").decode()
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return b64encode(value).decode()
    raise TypeError(f"cannot serialise {type(value).__name__}")
