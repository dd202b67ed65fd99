"""The audit agent: each record of an `audit: true` topic becomes one hash-linked audit.trail entry.

A single-writer batch agent on the one runtime (docs/decisions/0022): one elected instance, a fixed fenced
transactional id, and the entries, the chain's tip (its state) and the source offsets committed in one
transaction make the chain exactly-once in effect across kill -9 and rebalances (0010).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient

from streams.agents import DEFAULT_APP_ID
from streams.agents.audit_chain import (
    EPOCH,
    GENESIS_HASH,
    ONE_MS,
    ChainDecoder,
    ChainEntry,
    UnreadableEntry,
    read_chain,
)
from streams.errors import ConfigError, SchemaError, StreamsError
from streams.observability import AgentMetrics
from streams.records import EventDecoder, SchemaSource, UndecodableRecordError
from streams.runtime.app import App
from streams.runtime.contract import EngineConfig
from streams.runtime.single import SingleWriterEngine
from streams.schemas.codec import AvroCodec, split_header
from streams.schemas.registry_client import RegistryClient, compact_schema

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from confluent_kafka import Message
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.catalog import Catalog, TopicSpec
    from streams.runtime.state import Output, PartitionState
    from streams.settings import KafkaConfig, Settings

__all__ = ["AuditAgent", "AuditChainWriter", "ChainState", "PayloadReader", "audit_app", "audit_entry"]

AGENT = "audit"
TIP_KEY = "chain:tip"

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
    """Reads the few payload fields an entry takes (actor, tenant), leniently: any failure means None.

    Decodes with the project's one decoder (streams.records.EventDecoder), only when the record's schema
    has such fields.
    """

    def __init__(self, registry: SchemaSource) -> None:
        self._decoder = EventDecoder(registry, max_record_bytes=sys.maxsize)
        self._fields: dict[int, frozenset[str]] = {}  # schema id -> its top-level field names
        self._unknown: set[int] = set()  # ids the registry says it does not know: the answer will not change

    def fields(self, value: bytes | None, *, need_tenant: bool) -> tuple[str | None, str | None]:
        """(actor, tenant_id) from a wire-format payload, decoding only when its schema has such fields."""
        if not value:
            return None, None
        names = self._names(value)
        wanted = [name for name in ACTOR_FIELDS if name in names]
        if not wanted and not (need_tenant and "tenant_id" in names):
            return None, None
        try:
            _, datum = self._decoder.decode(value)
        except UndecodableRecordError:
            return None, None
        actor = next((str(datum[name]) for name in wanted if datum.get(name) is not None), None)
        tenant = datum.get("tenant_id")
        return actor, tenant if isinstance(tenant, str) else None

    def _names(self, value: bytes) -> frozenset[str]:
        try:
            _, schema_id = split_header(value)
        except SchemaError:
            return frozenset()
        if schema_id in self._fields or schema_id in self._unknown:
            return self._fields.get(schema_id, frozenset())
        try:
            codec = self._decoder.codec(schema_id)
        except UndecodableRecordError:
            self._unknown.add(schema_id)
            return frozenset()
        except SchemaError:
            return frozenset()  # unreachable: this record goes without an actor; ask again for the next one
        names = frozenset(f["name"] for f in codec.schema.get("fields", ()) if isinstance(f, dict))
        self._fields[schema_id] = names
        return names


def audit_entry(
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Sequence[tuple[str, str | bytes | None]] | None,
    timestamp_ms: int,
    *,
    sequence: int,
    previous_hash: str,
    payloads: PayloadReader | None = None,
) -> ChainEntry:
    """The sealed entry for one source record (CloudEvents headers first, payload and record as fallbacks)."""
    ce = {name: raw for name, raw in headers or () if name in _CE_HEADERS and raw is not None}
    tenant = _text(ce.get("ce_tenantid"))
    actor, payload_tenant = (None, None) if payloads is None else payloads.fields(value, need_tenant=not tenant)
    return ChainEntry(
        sequence=sequence,
        tenant_id=tenant or payload_tenant or "",
        topic=topic,
        partition=partition,
        offset=offset,
        event_id=_text(ce.get("ce_id")) or f"{topic}/{partition}/{offset}",
        event_type=_text(ce.get("ce_type")) or topic,
        actor=actor,
        occurred_at=_millis(ce.get("ce_time"), max(timestamp_ms, 0)),
        payload_sha256=hashlib.sha256(value or b"").hexdigest(),
        previous_entry_hash=previous_hash,
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


class AuditAgent:
    """Seals one chain entry per source record, in the order the writer reads them (a batch agent).

    Its state holds the chain's tip, "chain:tip" -> (next sequence, tip hash); an empty state (a first
    start, or a chain written before this agent) is seeded from the chain itself.
    """

    def __init__(
        self, settings: Settings, chain_spec: TopicSpec, sources: tuple[str, ...], metrics: AgentMetrics | None = None
    ) -> None:
        self.settings, self.chain_topic, self.schema_file = settings, chain_spec.name, chain_spec.schema_file
        self.sources = sources
        self._registry: RegistryClient | None = None
        self.payloads: PayloadReader | None = None  # with the registry, on first use
        self.written = 0  # entries in committed transactions, by this process
        self._pending = 0
        self._codec: AvroCodec | None = None
        self._metrics = metrics or AgentMetrics()
        # Signed checkpoints of the committed head (streams.agents.audit_checkpoint), when a key is configured.
        self._head: tuple[int, str] | None = None  # (sequence, entry hash) of the open transaction's last entry
        self._committed_head: tuple[int, str] | None = None
        self._checkpointed: tuple[int, str] | None = None
        self._checkpoint_at = 0.0
        self._embed_at = 0.0  # when the next entry carries a signed checkpoint of itself (in the chain)
        self._key: Ed25519PrivateKey | None = None

    @property
    def registry(self) -> RegistryClient:
        if self._registry is None:
            self._registry = RegistryClient(self.settings.registry_url())
            self.payloads = PayloadReader(self._registry)
        return self._registry

    def codec(self) -> AvroCodec:
        """The chain's encoder; ConfigError/SchemaError if the catalog or the registry lacks its schema."""
        if self._codec is None:
            if self.schema_file is None:
                raise ConfigError(f"the chain topic '{self.chain_topic}' declares no schema in the catalog")
            text = compact_schema(Path(self.schema_file).read_text(encoding="utf-8"))
            schema_id = self.registry.lookup(f"{self.chain_topic}-value", text)
            if schema_id is None:
                raise SchemaError(
                    f"the chain's schema is not registered under subject '{self.chain_topic}-value';"
                    " run `streams schemas apply`"
                )
            self._codec = AvroCodec(json.loads(text), schema_id)
        return self._codec

    def close(self) -> None:
        self.checkpoint()  # the head at shutdown
        if self._registry is not None:
            self._registry.close()

    def check_chain_topic(self, kafka: KafkaConfig) -> None:
        """ConfigError unless the chain topic exists with exactly one partition (one total order)."""
        chain = AdminClient(kafka).list_topics(self.chain_topic, timeout=15).topics.get(self.chain_topic)
        if chain is None or chain.error is not None:
            raise ConfigError(f"the chain topic '{self.chain_topic}' does not exist; run `streams topics apply`")
        if len(chain.partitions) != 1:
            raise ConfigError(
                f"the chain topic '{self.chain_topic}' has {len(chain.partitions)} partitions; a "
                "hash chain needs exactly 1 (one total order)"
            )

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        encode = self.codec().encode
        sequence, tip = state.get(TIP_KEY) or (0, GENESIS_HASH)
        # At the checkpoint interval the batch's last entry carries a signed checkpoint of itself: it commits
        # in the same transaction as the entries it covers, or not at all.
        embed = self.settings.audit_checkpoint_key is not None and time.monotonic() >= self._embed_at
        last = records[-1] if records else None
        for record in records:
            headers = record.headers()
            entry = audit_entry(
                record.topic() or "",
                record.partition() or 0,
                record.offset() or 0,
                record.value(),
                list(headers.items()) if isinstance(headers, dict) else headers,
                record.timestamp()[1],
                sequence=sequence,
                previous_hash=tip,
                payloads=self.payloads,
            )
            if record is last and embed:
                entry = self._with_checkpoint(entry)
            out.send(self.chain_topic, entry.tenant_id.encode() or None, encode(entry.to_json()), [])
            sequence, tip = sequence + 1, entry.entry_hash
        state[TIP_KEY] = (sequence, tip)
        self._pending += len(records)
        self._head = (sequence - 1, tip)

    def seed(self) -> tuple[dict[str, Any], dict[tuple[str, int], int]]:
        """The tip and each source partition's next offset, from the chain itself (empty for a new chain)."""
        kafka = self.settings.kafka_config(self.settings.bootstrap_servers())
        self.check_chain_topic(kafka)
        chain = ChainState()
        for offset, entry in read_chain(kafka, ChainDecoder(self.registry), self.chain_topic):
            if isinstance(entry, UnreadableEntry):
                raise StreamsError(
                    f"audit chain '{self.chain_topic}' offset {offset} is unreadable ({entry.reason});"
                    " run `streams audit verify`"
                )
            chain.apply(entry)
        if not chain.next_sequence:
            return {}, {}
        log.info("audit.seeded", chain=self.chain_topic, next_sequence=chain.next_sequence)
        return (
            {TIP_KEY: (chain.next_sequence, chain.tip_hash)},
            {source: last + 1 for source, last in chain.chained.items()},
        )

    def committed(self) -> None:
        if self._pending:
            self.written += self._pending
            self._metrics.audit_entries.labels(self.chain_topic).inc(self._pending)
            self._pending = 0
        if self._head is not None:
            self._committed_head, self._head = self._head, None
        if time.monotonic() >= self._checkpoint_at:
            self.checkpoint()

    def aborted(self) -> None:
        self._pending = 0
        self._head = None
        self._embed_at = 0.0  # the retried batch carries the checkpoint the aborted one did

    def _signing_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            from streams.replay.signing import load_private_key  # noqa: PLC0415

            path = self.settings.audit_checkpoint_key
            if path is None:
                raise ConfigError("no STREAMS_AUDIT_CHECKPOINT_KEY to sign audit checkpoints with")
            self._key = load_private_key(path)
        return self._key

    def _with_checkpoint(self, entry: ChainEntry) -> ChainEntry:
        """`entry` carrying a signed checkpoint of itself as the head (outside its hash: streams.agents.audit_chain)."""
        from streams.agents.audit_checkpoint import embedded_line, sign_head  # noqa: PLC0415

        self._embed_at = time.monotonic() + self.settings.audit_checkpoint_interval_s
        signed = sign_head(self.chain_topic, entry.sequence, entry.entry_hash, self._signing_key())
        return dataclasses.replace(entry, checkpoint=embedded_line(signed))

    def checkpoint(self) -> None:
        """Sign the committed head and append it to the checkpoint file (at an interval, and on shutdown)."""
        key_path = self.settings.audit_checkpoint_key
        head = self._committed_head
        if key_path is None or head is None or head == self._checkpointed:
            return
        self._checkpoint_at = time.monotonic() + self.settings.audit_checkpoint_interval_s
        from streams.agents.audit_checkpoint import append_checkpoint, sign_head  # noqa: PLC0415

        path = self.settings.audit_checkpoint_file or self.settings.data_dir / "audit.checkpoints"
        path.parent.mkdir(parents=True, exist_ok=True)
        append_checkpoint(path, sign_head(self.chain_topic, head[0], head[1], self._signing_key()))
        self._checkpointed = head
        log.info("audit.checkpoint", chain=self.chain_topic, sequence=head[0], file=str(path))

    def leadership(self, leading: bool, state: PartitionState | None) -> dict[str, Any] | None:
        """Counted in the metrics; on election, the chain's next sequence for the log line.

        Stepping down (a revoke, an error, or the drain of `streams worker` and `streams audit run`) signs
        the head this writer committed last: the engine commits what was open before it calls this.
        """
        self._metrics.audit_leader.labels(self.chain_topic).set(1 if leading else 0)
        if not leading:
            self.checkpoint()
        if not leading or state is None:
            return None
        self._metrics.audit_elections.labels(self.chain_topic).inc()
        return {"chain": self.chain_topic, "next_sequence": (state.get(TIP_KEY) or (0, GENESIS_HASH))[0]}


def audited_sources(catalog: Catalog, chain_topic: str) -> tuple[str, ...]:
    sources = tuple(spec.name for spec in catalog.topics if spec.audit)
    if chain_topic in sources:
        raise ConfigError(f"{catalog.path}: the chain topic '{chain_topic}' must not be `audit: true`")
    return sources


def audit_app(
    settings: Settings,
    catalog: Catalog,
    app_id: str,
    *,
    chain_topic: str = "audit.trail",
    metrics: AgentMetrics | None = None,
) -> App:
    """The audit agent as an App: a single-writer batch agent over every audited topic (group `<app id>-audit`,
    elected through `<app id>-audit-leader`, transactional id `<app id>-audit`)."""
    app = App(app_id, settings=settings, catalog=catalog, metrics=metrics)
    app.table("chain")  # "chain:tip" -> (next sequence, tip hash)
    agent = AuditAgent(settings, catalog.topic(chain_topic), audited_sources(catalog, chain_topic), app.metrics)
    agent.check_chain_topic(settings.kafka_config(settings.bootstrap_servers()))  # misconfigured: fail at start
    agent.codec()
    app.agent(agent.sources, name=AGENT, batch=True, single_writer=True)(agent)
    return app


class AuditChainWriter:
    """The audit agent with names of its own, for `streams audit run` and tests: the same single-writer engine.

    Example:
        stop = threading.Event()
        AuditChainWriter(Settings(), load_catalog(Path("topics.yaml"))).run(stop)
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        chain_topic: str = "audit.trail",
        app_id: str = DEFAULT_APP_ID,
        group_id: str | None = None,
        transactional_id: str | None = None,
        leader_topic: str | None = None,
        batch_size: int = 2000,
        session_timeout_ms: int = 6000,
        refresh_interval_s: float = 30.0,
        retry_backoff_s: float = 2.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        """Names default to what `streams worker` uses (`audit_app`): the election group and 1-partition leader
        topic `<app id>-audit-leader`, the offsets' group `<app id>-audit` (`<group id>.sources` when a group
        id is given) and the fixed transactional id `<app id>-audit`. Every writer of one chain must use the
        same names, or they would not fence each other."""
        self.settings, self.chain_topic = settings, chain_topic
        self.sources = audited_sources(catalog, chain_topic)
        self.metrics = metrics or AgentMetrics()
        self.agent = AuditAgent(settings, catalog.topic(chain_topic), self.sources, self.metrics)
        self.group = f"{app_id}-{AGENT}" if group_id is None else f"{group_id}.sources"
        self.election_group = group_id or f"{app_id}-{AGENT}-leader"
        self.leader_topic = leader_topic or self.election_group
        self.transactional_id = transactional_id or f"{app_id}-{AGENT}"
        self.replication = catalog.topic(chain_topic).replication_factor
        self.batch_size, self.session_timeout_ms = batch_size, session_timeout_ms
        self.refresh_interval_s, self.retry_backoff_s = refresh_interval_s, retry_backoff_s
        self.engine: SingleWriterEngine | None = None  # made by run()

    @property
    def leading(self) -> bool:
        return self.engine is not None and self.engine.leading

    @property
    def elections(self) -> int:
        return 0 if self.engine is None else self.engine.elections

    @property
    def entries_written(self) -> int:
        return self.agent.written

    def run(self, stop: threading.Event) -> None:
        """Write the chain whenever elected, until `stop` is set; StreamsError at once if misconfigured."""
        kafka = self.settings.kafka_config(self.settings.bootstrap_servers())
        try:
            self.agent.check_chain_topic(kafka)
            self.agent.codec()
            self.engine = SingleWriterEngine(
                kafka,
                _Named(self.agent),
                group=self.group,
                election_group=self.election_group,
                leader_topic=self.leader_topic,
                transactional_id=self.transactional_id,
                data_dir=self.settings.data_dir,
                replication=self.replication,
                config=EngineConfig(batch_size=self.batch_size),
                refresh_interval_s=self.refresh_interval_s,
                retry_backoff_s=self.retry_backoff_s,
                session_timeout_ms=self.session_timeout_ms,
                log_name=AGENT,
                metrics=self.metrics,
            )
            self.engine.run(stop)
        finally:
            self.agent.close()


class _Named:
    """The agent as the engine sees it: with its name, sources and hooks."""

    name = AGENT

    def __init__(self, agent: AuditAgent) -> None:
        self.sources = agent.sources
        self.handle, self.seed, self.leadership = agent.handle, agent.seed, agent.leadership
        self.committed, self.aborted = agent.committed, agent.aborted
