"""The faust App built from the catalog and settings, and what every agent shares on it.

Values travel as raw bytes through faust; `EventDecoder` reads the Confluent wire format with schemas
from the registry, `DeadLetters` parks what cannot be processed in `<topic>.dlq` with error headers.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import faust
import structlog
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from streams.agents import DEFAULT_APP_ID
from streams.errors import SchemaError, StreamsError
from streams.kafka_util import create_missing_topics
from streams.publish import EventEncoder
from streams.schemas.codec import HEADER, AvroCodec, split_header
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from streams.catalog import Catalog
    from streams.settings import KafkaConfig, Settings

log = structlog.get_logger("streams.app")

DLQ_HEADER_PREFIX = "dlq_"
DEFAULT_MAX_RECORD_BYTES = 1_048_576


class UndecodableRecordError(StreamsError):
    """A record that is not a decodable event for its topic (bad bytes, unknown schema, too large)."""


class EventDecoder:
    """Decodes Confluent wire-format values, fetching and caching writer schemas by id."""

    def __init__(self, registry: RegistryClient, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.registry = registry
        self.max_record_bytes = max_record_bytes
        self._codecs: dict[int, AvroCodec] = {}

    def decode(self, value: bytes | None) -> tuple[int, dict[str, Any]]:
        """(schema id, decoded record); UndecodableRecordError says why not."""
        schema_id, record, _ = self._decode(value, canonical=False)
        return schema_id, record

    def decode_canonical(self, value: bytes | None) -> tuple[int, dict[str, Any], bytes | None]:
        """`decode` plus the record's canonical JSON (`zatca.canonical_bytes` of it, made natively from the
        datum), or None when the schema has types the native form does not cover (the caller makes it)."""
        return self._decode(value, canonical=True)

    def _decode(self, value: bytes | None, *, canonical: bool) -> tuple[int, dict[str, Any], bytes | None]:
        if value is None:
            raise UndecodableRecordError("record has no value (a tombstone is not an event)")
        if len(value) > self.max_record_bytes:
            raise UndecodableRecordError(
                f"record of {len(value)} bytes is over the {self.max_record_bytes} bytes agents accept"
            )
        try:
            _, schema_id = split_header(value)
            codec = self._codecs.get(schema_id)
            if codec is None:
                codec = self._codecs[schema_id] = AvroCodec(self.registry.schema_by_id(schema_id), schema_id)
            datum = value[HEADER.size:]
            record = codec.decode_datum(datum)
            text = codec.canonical_json_datum(datum) if canonical and codec.has_canonical_json else None
        except SchemaError as exc:
            raise UndecodableRecordError(str(exc)) from exc
        return schema_id, record, text


class SourceRecord(NamedTuple):
    """Where a record came from, for logs, DLQ headers and outputs' references (a NamedTuple: agents make one
    per record, and a frozen dataclass costs several times as much to create)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]

    @property
    def event_id(self) -> str:
        """ce_id, or the record's coordinates when a producer sent none."""
        return self.header("ce_id") or f"{self.topic}/{self.partition}/{self.offset}"

    def header(self, name: str) -> str | None:
        for key, raw in self.headers:
            if key == name:
                return raw.decode(errors="replace") if isinstance(raw, bytes) else None if raw is None else str(raw)
        return None

    @classmethod
    def from_event(cls, event: Any) -> SourceRecord:
        message = event.message
        raw_headers = message.headers or ()
        headers = list(raw_headers.items()) if isinstance(raw_headers, Mapping) else list(raw_headers)
        return cls(message.topic, message.partition, message.offset, int(message.timestamp * 1000),
                   message.key, message.value, headers)

    @classmethod
    def from_message(cls, message: Message) -> SourceRecord:
        """The same from a confluent-kafka message (its headers are already (str, bytes | None) pairs)."""
        return cls(message.topic() or "", message.partition() or 0, message.offset() or 0,
                   message.timestamp()[1], message.key(), message.value(),
                   cast("Sequence[tuple[str, bytes | None]]", message.headers() or []))  # consumed: a list


def dlq_headers(source: SourceRecord, agent: str, error: BaseException,
                attempts: int) -> list[tuple[str, bytes | None]]:
    """The original headers untouched, then what went wrong and where the record came from."""
    extra = {
        "agent": agent,
        "error_class": type(error).__name__,
        "error_message": str(error)[:2000],
        "topic": source.topic,
        "partition": str(source.partition),
        "offset": str(source.offset),
        "timestamp": str(source.timestamp_ms),
        "attempts": str(attempts),
        "failed_at": str(int(time.time() * 1000)),
    }
    return [*source.headers, *((f"{DLQ_HEADER_PREFIX}{k}", v.encode()) for k, v in extra.items())]


@dataclass
class AgentContext:
    """What the agents share inside one worker: the app, catalog, decoding and encoding."""

    app: faust.App
    settings: Settings
    catalog: Catalog
    decoder: EventDecoder
    encoder: EventEncoder
    retries: int = 3

    def topic(self, name: str) -> faust.TopicT:
        """A catalog topic as raw bytes in faust (decoding is ours)."""
        spec = self.catalog.topic(name)
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=spec.partitions)

    async def dead_letter(self, source: SourceRecord, agent: str, error: BaseException, attempts: int = 1) -> None:
        """Park the record in `<topic>.dlq` (key, value, headers kept) and let the partition flow on."""
        target, headers = dead_letter(self.catalog, source, agent, error, attempts)
        await self.topic(target).send(key=source.key, value=source.value,
                                      headers=[(name, value or b"") for name, value in headers])


def dead_letter(catalog: Catalog, source: SourceRecord, agent: str, error: BaseException,
                attempts: int = 1) -> tuple[str, list[tuple[str, bytes | None]]]:
    """(dead-letter topic, headers) for a record an agent gives up on; logged and counted here, sent by the caller.

    StreamsError when the catalog declares no `<topic>.dlq`: the record must then stay uncommitted.
    """
    log.warning("dead-lettered", agent=agent, topic=source.topic, partition=source.partition,
                offset=source.offset, event_id=source.event_id, error=f"{type(error).__name__}: {error}")
    target = f"{source.topic}.dlq"
    if target not in catalog.names():
        raise StreamsError(f"topic '{source.topic}' has no dead-letter topic in the catalog; cannot park "
                           f"offset {source.offset}") from error
    from streams.observability import DLQ_TOTAL  # noqa: PLC0415 - metrics module imports prometheus lazily

    DLQ_TOTAL.labels(agent=agent, topic=source.topic).inc()
    return target, dlq_headers(source, agent, error, attempts)


def broker_credentials(kafka_config: KafkaConfig) -> faust.types.auth.CredentialsT | None:
    """faust's (aiokafka's) credentials for the librdkafka properties `Settings.kafka_config` made.

    The one translation: faust connects with exactly the security the confluent-kafka clients use.
    """
    protocol = str(kafka_config.get("security.protocol", "PLAINTEXT"))
    context = None
    if protocol in {"SSL", "SASL_SSL"}:
        ca = kafka_config.get("ssl.ca.location")
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        certificate = kafka_config.get("ssl.certificate.location")
        if certificate is not None:
            key_password = kafka_config.get("ssl.key.password")
            context.load_cert_chain(str(certificate), str(kafka_config["ssl.key.location"]),
                                    str(key_password) if key_password is not None else None)
    if protocol in {"SASL_PLAINTEXT", "SASL_SSL"}:
        return faust.SASLCredentials(username=str(kafka_config["sasl.username"]),
                                     password=str(kafka_config["sasl.password"]),
                                     mechanism=str(kafka_config["sasl.mechanism"]), ssl_context=context)
    return faust.SSLCredentials(context) if context is not None else None


def create_app(settings: Settings, catalog: Catalog, *, app_id: str = DEFAULT_APP_ID, web_port: int = 6066,
               web_host: str = "127.0.0.1", web_enabled: bool = True) -> faust.App:
    """A faust App on the settings' broker; topics are declared by `streams topics apply`, not by faust."""
    bootstrap = settings.bootstrap_servers()
    settings.check_kafka_login(bootstrap)  # a refused password is one clear error, not aiokafka retrying
    credentials = broker_credentials(settings.kafka_config(bootstrap))  # the clients' security, for aiokafka
    datadir = (settings.data_dir / "faust" / app_id).resolve()
    datadir.mkdir(parents=True, exist_ok=True)
    replication = max((spec.replication_factor for spec in catalog.topics), default=1)
    return faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in bootstrap.split(",")],
        broker_credentials=credentials,
        store="memory://",  # tables are rebuilt from their changelog topics on start
        value_serializer="raw",
        key_serializer="raw",
        topic_replication_factor=replication,
        topic_partitions=max((spec.partitions for spec in catalog.topics), default=1),
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        web_enabled=web_enabled,
        web_port=web_port,
        web_bind=web_host,
        datadir=str(datadir),
        producer_acks=-1,
        stream_wait_empty=False,
        # A worker killed with -9 leaves the group after this long; its partitions then move on.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )


def ensure_changelog_topics(app: faust.App, kafka_config: KafkaConfig, replication: int) -> list[str]:
    """Create the tables' changelog topics before faust starts (compacted, co-partitioned with sources).

    faust creates them itself too, but its agents may look them up before the new topics reach its
    metadata and then crash with PartitionsMismatch; creating them first removes that race.
    """
    return create_missing_topics(AdminClient(kafka_config), [
        NewTopic(table.changelog_topic.get_topic_name(), num_partitions=table.partitions or 1,
                 replication_factor=replication, config={"cleanup.policy": "compact"})
        for table in app.tables.values()
    ])


def agent_context(
    app: faust.App, settings: Settings, catalog: Catalog, *, source: str = "streams-worker"
) -> AgentContext:
    registry = RegistryClient(settings.registry_url())
    return AgentContext(
        app=app,
        settings=settings,
        catalog=catalog,
        decoder=EventDecoder(registry, max_record_bytes=settings.agent_max_record_bytes),
        encoder=EventEncoder(catalog, registry, source=source),
    )
