"""What every agent and edge reads and parks: the source record, the event decoder, dead-letter headers.

Values are Confluent wire format; `EventDecoder` reads them with writer schemas from the registry, and
`dead_letter` gives the `<topic>.dlq` record of something that cannot be processed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import structlog

from streams.errors import SchemaError, StreamsError
from streams.schemas.codec import HEADER, AvroCodec, split_header
from streams.schemas.registry_client import RegistryRequestError

if TYPE_CHECKING:
    from confluent_kafka import Message

    from streams.catalog import Catalog
    from streams.observability import AgentMetrics

log = structlog.get_logger("streams.records")

DLQ_HEADER_PREFIX = "dlq_"
DEFAULT_MAX_RECORD_BYTES = 1_048_576


class UndecodableRecordError(StreamsError):
    """A record that is not a decodable event for its topic (bad bytes, unknown schema, too large)."""


class SchemaUnavailableError(StreamsError):
    """The registry could not be asked for a record's schema right now: hold the record and retry, never park it."""


class SchemaSource(Protocol):
    def schema_by_id(self, schema_id: int) -> str: ...


class EventDecoder:
    """Decodes Confluent wire-format values, fetching and caching writer schemas by id: the one Avro decode
    path of the Python side (the native decoder, `AvroCodec`), for agents, the bridge and webhooks.

    With `hold_when_registry_down`, a registry that cannot be reached raises SchemaUnavailableError (the
    caller pauses the partition) instead of UndecodableRecordError; an id the registry does not know is
    undecodable either way.
    """

    def __init__(
        self,
        registry: SchemaSource,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        hold_when_registry_down: bool = False,
    ) -> None:
        self.registry = registry
        self.max_record_bytes = max_record_bytes
        self.hold_when_registry_down = hold_when_registry_down
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
            codec = self._codecs.get(schema_id) or self.codec(schema_id)
            datum = value[HEADER.size :]
            record = codec.decode_datum(datum)
            text = codec.canonical_json_datum(datum) if canonical and codec.has_canonical_json else None
        except SchemaError as exc:
            raise UndecodableRecordError(str(exc)) from exc
        return schema_id, record, text

    def codec(self, schema_id: int) -> AvroCodec:
        """The codec of a writer schema id (cached); UndecodableRecordError when the registry does not know the
        id or the schema is invalid, SchemaUnavailableError (holding) or SchemaError when it cannot be asked."""
        if (known := self._codecs.get(schema_id)) is not None:
            return known
        try:
            text = self.registry.schema_by_id(schema_id)
        except RegistryRequestError as exc:
            if 400 <= exc.status < 500:
                raise UndecodableRecordError(
                    f"schema id {schema_id} is unknown to the registry: {exc.message}"
                ) from None
            if self.hold_when_registry_down:
                raise SchemaUnavailableError(str(exc)) from None
            raise
        except SchemaError as exc:  # the client's "cannot reach the registry"
            if self.hold_when_registry_down:
                raise SchemaUnavailableError(str(exc)) from None
            raise
        try:
            codec = self._codecs[schema_id] = AvroCodec(text, schema_id)
        except SchemaError as exc:
            raise UndecodableRecordError(f"schema id {schema_id}: {exc}") from exc
        return codec


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
    def from_message(cls, message: Message) -> SourceRecord:
        """The same from a confluent-kafka message (its headers are already (str, bytes | None) pairs)."""
        return cls(
            message.topic() or "",
            message.partition() or 0,
            message.offset() or 0,
            message.timestamp()[1],
            message.key(),
            message.value(),
            cast("Sequence[tuple[str, bytes | None]]", message.headers() or []),
        )  # consumed: a list


def dlq_headers(
    source: SourceRecord, agent: str, error: BaseException, attempts: int
) -> list[tuple[str, bytes | None]]:
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


def dead_letter(
    catalog: Catalog,
    source: SourceRecord,
    agent: str,
    error: BaseException,
    attempts: int = 1,
    metrics: AgentMetrics | None = None,
) -> tuple[str, list[tuple[str, bytes | None]]]:
    """(dead-letter topic, headers) for a record an agent gives up on; logged here, counted in `metrics`
    (streams_agent_dlq_total; the bridge and webhooks count in their own), sent by the caller.

    StreamsError when the catalog declares no `<topic>.dlq`: the record must then stay uncommitted.
    """
    log.warning(
        "dead-lettered",
        agent=agent,
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        event_id=source.event_id,
        error=f"{type(error).__name__}: {error}",
    )
    target = f"{source.topic}.dlq"
    if target not in catalog.names():
        raise StreamsError(
            f"topic '{source.topic}' has no dead-letter topic in the catalog; cannot park offset {source.offset}"
        ) from error
    if metrics is not None:
        metrics.dlq.labels(agent=agent, topic=source.topic).inc()
    return target, dlq_headers(source, agent, error, attempts)
