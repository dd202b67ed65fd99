"""The audit chain writer: each record of an `audit: true` topic becomes one hash-linked audit.trail entry.

One elected writer, a fenced transactional producer and source offsets kept in the entries make the chain
exactly-once in effect across kill -9 and rebalances (docs/decisions/0010-audit-chain-exactly-once.md).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import SchemaParseException
from prometheus_client import Counter, Gauge, Histogram

from streams.agents import DEFAULT_APP_ID
from streams.agents.audit_chain import (
    DECODE_ERRORS,
    EPOCH,
    GENESIS_HASH,
    ONE_MS,
    ChainDecoder,
    ChainEntry,
    UnreadableEntry,
    read_chain,
)
from streams.errors import ConfigError, SchemaError, StreamsError
from streams.schemas.codec import HEADER, AvroCodec, split_header
from streams.schemas.registry_client import RegistryClient, RegistryRequestError, compact_schema

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from streams.catalog import Catalog
    from streams.settings import KafkaConfig, Settings

__all__ = ["AuditChainWriter", "ChainState", "PayloadReader", "audit_entry"]

log = structlog.get_logger("streams.agents.audit")

ACTOR_FIELDS = ("actor", "user_id")  # payload fields that name who acted, first non-null wins
_CE_HEADERS = frozenset({"ce_id", "ce_type", "ce_time", "ce_tenantid"})


@dataclass
class ChainState:
    """What the committed chain says: next sequence, tip hash, highest chained offset per source partition."""

    next_sequence: int = 0
    tip_hash: str = GENESIS_HASH
    chained: dict[tuple[str, int], int] = field(default_factory=dict)
    read_offset: int = 0  # chain-topic offset to continue reading from (everything before is applied)

    def apply(self, entry: ChainEntry) -> None:
        self.next_sequence = entry.sequence + 1
        self.tip_hash = entry.entry_hash
        key = (entry.topic, entry.partition)
        self.chained[key] = max(entry.offset, self.chained.get(key, -1))

    def resume_offset(self, topic: str, partition: int) -> int:
        """Where auditing of a source partition continues: after its highest chained offset."""
        last = self.chained.get((topic, partition))
        return OFFSET_BEGINNING if last is None else last + 1


class PayloadReader:
    """Reads the few payload fields an entry takes (actor, tenant), leniently: any failure means None."""

    def __init__(self, registry: RegistryClient) -> None:
        self._registry = registry
        self._readers: dict[int, tuple[Any, frozenset[str]] | None] = {}  # schema id -> (parsed schema, fields)

    def fields(self, value: bytes | None, *, need_tenant: bool) -> tuple[str | None, str | None]:
        """(actor, tenant_id) from a wire-format payload, decoding only when its schema has such fields."""
        if not value:
            return None, None
        try:
            _, schema_id = split_header(value)
        except SchemaError:
            return None, None
        known = self._reader(schema_id)
        if known is None:
            return None, None
        schema, names = known
        wanted = [name for name in ACTOR_FIELDS if name in names]
        if not wanted and not (need_tenant and "tenant_id" in names):
            return None, None
        try:
            datum = schemaless_reader(io.BytesIO(value[HEADER.size:]), schema, None)
        except (SchemaParseException, *DECODE_ERRORS):
            return None, None
        if not isinstance(datum, dict):
            return None, None
        actor = next((str(datum[name]) for name in wanted if datum.get(name) is not None), None)
        tenant = datum.get("tenant_id")
        return actor, tenant if isinstance(tenant, str) else None

    def _reader(self, schema_id: int) -> tuple[Any, frozenset[str]] | None:
        if schema_id in self._readers:
            return self._readers[schema_id]
        try:
            text = self._registry.schema_by_id(schema_id)
        except RegistryRequestError:
            self._readers[schema_id] = None  # the registry says no such id: the answer will not change
            return None
        except SchemaError:
            return None  # unreachable: this record goes without an actor; ask again for the next one
        try:
            raw = json.loads(text)
            names = frozenset(f["name"] for f in raw.get("fields", ()) if isinstance(f, dict))
            # Without logical types: the fields read here are strings, and decimals/timestamps cost 2-3x.
            self._readers[schema_id] = (parse_schema(_physical(raw), _write_hint=False), names)
        except (SchemaParseException, *DECODE_ERRORS, AttributeError):
            self._readers[schema_id] = None
        return self._readers[schema_id]


def _physical(schema: Any) -> Any:
    """`schema` with every logicalType annotation dropped (the physical types stay)."""
    if isinstance(schema, list):
        return [_physical(branch) for branch in schema]
    if isinstance(schema, dict):
        return {key: _physical(value) for key, value in schema.items() if key != "logicalType"}
    return schema


def audit_entry(
    topic: str, partition: int, offset: int, value: bytes | None,
    headers: Sequence[tuple[str, str | bytes | None]] | None, timestamp_ms: int, *,
    sequence: int, previous_hash: str, payloads: PayloadReader | None = None,
) -> ChainEntry:
    """The sealed entry for one source record (CloudEvents headers first, payload and record as fallbacks)."""
    ce = {name: raw for name, raw in headers or () if name in _CE_HEADERS and raw is not None}
    tenant = _text(ce.get("ce_tenantid"))
    actor, payload_tenant = (None, None) if payloads is None else payloads.fields(value, need_tenant=not tenant)
    return ChainEntry(
        sequence=sequence, tenant_id=tenant or payload_tenant or "", topic=topic, partition=partition,
        offset=offset, event_id=_text(ce.get("ce_id")) or f"{topic}/{partition}/{offset}",
        event_type=_text(ce.get("ce_type")) or topic, actor=actor,
        occurred_at=_millis(ce.get("ce_time"), max(timestamp_ms, 0)),
        payload_sha256=hashlib.sha256(value or b"").hexdigest(), previous_entry_hash=previous_hash,
    ).sealed()


def _text(raw: str | bytes | None) -> str | None:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def _millis(ce_time: str | bytes | None, fallback: int) -> int:
    if not ce_time:
        return fallback
    try:
        moment = datetime.fromisoformat(ce_time.decode("ascii") if isinstance(ce_time, bytes) else ce_time)
    except (UnicodeDecodeError, ValueError):
        return fallback
    return (moment.replace(tzinfo=moment.tzinfo or UTC) - EPOCH) // ONE_MS


class _Metrics(NamedTuple):
    entries: Counter
    leader: Gauge
    elections: Counter
    commit_seconds: Histogram


@functools.cache
def _metrics() -> _Metrics:
    """Created on first use (not at import), once per process."""
    return _Metrics(
        Counter("streams_audit_entries_total", "Audit chain entries committed.", ["chain"]),
        Gauge("streams_audit_leader", "1 while this process is the audit chain writer.", ["chain"]),
        Counter("streams_audit_elections_total", "Times this process became the chain writer.", ["chain"]),
        Histogram("streams_audit_commit_seconds", "Time to write and commit one batch of entries.", ["chain"],
                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)),
    )


@dataclass
class _Links:
    """What one run of the writer talks through."""

    kafka: KafkaConfig
    registry: RegistryClient
    codec: AvroCodec
    decoder: ChainDecoder
    payloads: PayloadReader
    sources: Consumer


class AuditChainWriter:
    """Appends one entry per record of every `audit: true` topic; only the elected leader writes.

    Example (`streams worker` runs it in a thread, `streams audit run` alone):
        stop = threading.Event()
        AuditChainWriter(Settings(), load_catalog(Path("topics.yaml"))).run(stop)
    """

    def __init__(
        self, settings: Settings, catalog: Catalog, *, chain_topic: str = "audit.trail",
        app_id: str = DEFAULT_APP_ID, group_id: str | None = None, transactional_id: str | None = None,
        leader_topic: str | None = None, batch_size: int = 2000, session_timeout_ms: int = 6000,
        refresh_interval_s: float = 30.0, retry_backoff_s: float = 2.0,
    ) -> None:
        """The writer's names start with `app_id`, the principal's ACL prefix (decision 0014): the group that
        elects it (`<app id>-audit-leader`, also its 1-partition leader topic, whose owner in the group is the
        one chain writer) and its fixed transactional id (`<app id>-audit-chain`). Every writer of one chain
        must use the same names, or they would not fence each other."""
        self.settings = settings
        self.chain_topic = chain_topic
        self.group_id = group_id or f"{app_id}-audit-leader"
        self.leader_topic = leader_topic or f"{app_id}-audit-leader"
        self.transactional_id = transactional_id or f"{app_id}-audit-chain"
        self.batch_size, self.session_timeout_ms = batch_size, session_timeout_ms
        self.refresh_interval_s, self.retry_backoff_s = refresh_interval_s, retry_backoff_s
        self.chain_spec = catalog.topic(chain_topic)
        self.sources = tuple(spec.name for spec in catalog.topics if spec.audit)
        if chain_topic in self.sources:
            raise ConfigError(f"{catalog.path}: the chain topic '{chain_topic}' must not be `audit: true`")
        self.state = ChainState()
        self.entries_written = 0  # by this process, committed
        self.elections = 0  # times this process became the writer
        self._assigned = False  # the leader partition is ours (the group says so)
        self._producer: Producer | None = None  # set while we are the fenced-in writer
        self._source_partitions: set[tuple[str, int]] = set()
        self._next_refresh = 0.0
        self._last_delivered = -1

    @property
    def leading(self) -> bool:
        return self._producer is not None

    def run(self, stop: threading.Event) -> None:
        """Write the chain whenever elected, until `stop` is set; StreamsError at once if misconfigured."""
        links = self._open()
        election = Consumer({
            **links.kafka, "group.id": self.group_id, "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.session_timeout_ms // 4), "enable.auto.commit": False,
        })
        retry_at = 0.0
        try:
            election.subscribe([self.leader_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_revoke)
            log.info("audit.writer.started", chain=self.chain_topic, sources=list(self.sources), group=self.group_id)
            while not stop.is_set():
                election.poll(0 if self.leading else 0.2)  # serves the group: heartbeats and (re)assignments
                if not self._assigned:
                    self._step_down(links, "revoked")
                    continue
                if time.monotonic() < retry_at:
                    stop.wait(0.05)
                    continue
                try:
                    if not self.leading:
                        self._take_over(links)
                    self._write_batch(links)
                except (KafkaException, StreamsError) as exc:
                    log.warning("audit.writer.error", error=str(exc), chain=self.chain_topic)
                    self._step_down(links, "error")
                    retry_at = time.monotonic() + self.retry_backoff_s
        finally:
            self._step_down(links, "stopped")
            election.close()
            links.sources.close()
            links.registry.close()

    def _open(self) -> _Links:
        kafka = self.settings.kafka_config(self.settings.bootstrap_servers())
        if self.chain_spec.schema_file is None:
            raise ConfigError(f"the chain topic '{self.chain_topic}' declares no schema in the catalog")
        schema_text = compact_schema(Path(self.chain_spec.schema_file).read_text(encoding="utf-8"))
        registry = RegistryClient(self.settings.registry_url())
        try:
            schema_id = registry.lookup(f"{self.chain_topic}-value", schema_text)
            if schema_id is None:
                raise SchemaError(f"schema {self.chain_spec.schema_file} is not registered under subject "
                                  f"'{self.chain_topic}-value'; run `streams schemas apply`")
            self._prepare_topics(kafka)
        except KafkaException as exc:
            registry.close()
            raise StreamsError(f"preparing the audit chain writer for '{self.chain_topic}': {exc.args[0]}") from exc
        except StreamsError:
            registry.close()
            raise
        sources = Consumer({
            **kafka, "group.id": f"{self.group_id}.sources", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        })  # assigned, never subscribed nor committed: the chain holds the offsets
        return _Links(kafka, registry, AvroCodec(json.loads(schema_text), schema_id), ChainDecoder(registry),
                      PayloadReader(registry), sources)

    def _prepare_topics(self, kafka: KafkaConfig) -> None:
        admin = AdminClient(kafka)
        topics = admin.list_topics(timeout=15).topics
        chain = topics.get(self.chain_topic)
        if chain is None or chain.error is not None:
            raise ConfigError(f"the chain topic '{self.chain_topic}' does not exist; run `streams topics apply`")
        if len(chain.partitions) != 1:
            raise ConfigError(f"the chain topic '{self.chain_topic}' has {len(chain.partitions)} partitions; a "
                              "hash chain needs exactly 1 (one total order)")
        if self.leader_topic not in topics:
            created = admin.create_topics([NewTopic(self.leader_topic, 1, self.chain_spec.replication_factor)])
            try:
                created[self.leader_topic].result(timeout=15)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = bool(partitions)

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._assigned = False

    def _take_over(self, links: _Links) -> None:
        """Fence every earlier writer, then read the chain to its end: only then is the tip final."""
        producer = Producer({
            **links.kafka, "transactional.id": self.transactional_id, "enable.idempotence": True,
            "acks": "all", "linger.ms": 2, "transaction.timeout.ms": 15_000,
            "queue.buffering.max.messages": max(100_000, 2 * self.batch_size),  # a whole batch always fits
        })
        before = self.state.next_sequence
        try:
            producer.init_transactions(30)  # bumps the epoch: a zombie's open transaction is aborted
            self._catch_up(links)
        except BaseException:
            self._close(producer)
            raise
        self._producer = producer
        self.elections += 1
        self._assign_sources(links, [(t, p) for t in self.sources for p in self._partitions(links, t)])
        metrics = _metrics()
        metrics.leader.labels(self.chain_topic).set(1)
        metrics.elections.labels(self.chain_topic).inc()
        log.info("audit.leader.elected", chain=self.chain_topic, next_sequence=self.state.next_sequence,
                 caught_up=self.state.next_sequence - before, sources=len(self._source_partitions))

    def _catch_up(self, links: _Links) -> None:
        """Apply every committed entry after what this process already knows (all of them, the first time)."""
        for offset, entry in read_chain(links.kafka, links.decoder, self.chain_topic, start=self.state.read_offset):
            if isinstance(entry, UnreadableEntry):
                raise StreamsError(f"audit chain '{self.chain_topic}' offset {offset} is unreadable ({entry.reason});"
                                   " run `streams audit verify`")
            if entry.sequence != self.state.next_sequence:
                log.error("audit.chain.discontinuity", offset=offset, sequence=entry.sequence,
                          expected=self.state.next_sequence, chain=self.chain_topic)
            self.state.apply(entry)
            self.state.read_offset = offset + 1

    def _partitions(self, links: _Links, topic: str) -> list[int]:
        found = links.sources.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            log.warning("audit.source.missing", topic=topic, chain=self.chain_topic)
            return []
        return sorted(found.partitions)

    def _assign_sources(self, links: _Links, partitions: list[tuple[str, int]]) -> None:
        """Start every source partition right after its highest chained offset (the chain is the truth)."""
        new = [(t, p) for t, p in partitions if (t, p) not in self._source_partitions]
        if new:
            links.sources.incremental_assign([TopicPartition(t, p, self.state.resume_offset(t, p)) for t, p in new])
            self._source_partitions.update(new)
        self._next_refresh = time.monotonic() + self.refresh_interval_s

    def _step_down(self, links: _Links, reason: str) -> None:
        """Stop writing now: drop the producer (its open transaction, if any, is aborted) and the sources."""
        if self._producer is None:
            return
        producer, self._producer = self._producer, None
        self._close(producer)
        try:
            links.sources.unassign()
        except KafkaException as exc:
            log.warning("audit.step_down.error", error=str(exc), chain=self.chain_topic)
        self._source_partitions.clear()
        _metrics().leader.labels(self.chain_topic).set(0)
        log.info("audit.leader.stepped_down", reason=reason, chain=self.chain_topic,
                 next_sequence=self.state.next_sequence)

    def _close(self, producer: Producer) -> None:
        """Close a producer that may be fenced; nothing it could still do matters to the chain."""
        try:
            producer.close()
        except (KafkaException, SystemError) as exc:
            # confluent-kafka 2.16: close() of a fenced producer fails its internal abort and surfaces
            # as SystemError ("returned a result with an exception set"); the handle is freed by GC.
            log.warning("audit.producer.close_error", error=str(exc), chain=self.chain_topic)

    def _write_batch(self, links: _Links) -> None:
        if time.monotonic() >= self._next_refresh:  # partitions added to an audited topic
            self._assign_sources(links, [(t, p) for t in self.sources for p in self._partitions(links, t)])
        records: list[Message] = []
        for message in links.sources.consume(self.batch_size, 0.2):
            if (error := message.error()) is None:
                records.append(message)
            elif error.fatal():
                raise KafkaException(error)
            else:
                log.warning("audit.source.error", error=error.str(), topic=message.topic(), chain=self.chain_topic)
        if not records:
            return
        producer = self._producer
        if producer is None:  # only called while leading
            return
        started = time.perf_counter()
        entries = self._seal(records, links.payloads)
        self._last_delivered = -1
        producer.begin_transaction()
        for entry in entries:
            value = links.codec.encode(entry.to_json())
            producer.produce(self.chain_topic, value=value, key=entry.tenant_id.encode() or None,
                             partition=0, on_delivery=self._delivered)
        try:
            producer.commit_transaction(30)
        except KafkaException as exc:
            if exc.args[0].txn_requires_abort():
                producer.abort_transaction(30)
            raise  # fenced or failed: step down; the next take-over rereads the chain and re-seeks the sources
        producer.poll(0)
        for entry in entries:
            self.state.apply(entry)
        if self._last_delivered >= 0:
            self.state.read_offset = self._last_delivered + 1
        self.entries_written += len(entries)
        metrics = _metrics()
        metrics.entries.labels(self.chain_topic).inc(len(entries))
        metrics.commit_seconds.labels(self.chain_topic).observe(time.perf_counter() - started)

    def _seal(self, records: list[Message], payloads: PayloadReader) -> list[ChainEntry]:
        sequence, previous = self.state.next_sequence, self.state.tip_hash
        entries = []
        for record in records:
            headers = record.headers()
            entry = audit_entry(
                record.topic() or "", record.partition() or 0, record.offset() or 0, record.value(),
                list(headers.items()) if isinstance(headers, dict) else headers, record.timestamp()[1],
                sequence=sequence, previous_hash=previous, payloads=payloads,
            )
            entries.append(entry)
            sequence, previous = sequence + 1, entry.entry_hash
        return entries

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self._last_delivered = max(self._last_delivered, message.offset() or 0)
