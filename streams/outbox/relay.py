"""The outbox relay: publishes committed outbox rows to Kafka in id order per bucket, then deletes them.

Relays share a database by locking buckets (PostgreSQL, MariaDB) or one lease (SQLite); a row leaves
the table only after acks=all; a row Kafka can never take is parked with its reason (decision 0020).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from streams.errors import SchemaError, StreamsError
from streams.kafka_util import denial
from streams.outbox.metrics import OutboxMetrics
from streams.outbox.table import (
    BUCKETS,
    DEFAULT_TABLE,
    NOTIFY_CHANNEL,
    Dialect,
    Row,
    connect,
    driver_errors,
    family_of_dsn,
    redact,
    unpack_headers,
)
from streams.publish import _producer_config
from streams.schemas.registry_client import RegistryClient, RegistryRequestError

if TYPE_CHECKING:
    from streams.settings import Settings

__all__ = ["Relay", "RelayOptions", "run_workers"]

log = structlog.get_logger("streams.outbox")

# Kafka will never take these records as they are: the row is parked instead of retried forever.
PERMANENT = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_ID,
}
RECORD_OVERHEAD = 128  # bytes a record batch adds around one record (header, varints), rounded up
# How long what the cluster said about a topic (exists, size limit) is trusted. Long: a topic deleted or
# shrunk meanwhile makes the broker refuse the record, which parks it just the same.
TOPIC_TTL_S = 300.0
STATS_EVERY_S = 1.0
SCHEMA_RECHECK_S = 10.0  # an id the registry did not know is asked about again after this


class TransientError(StreamsError):
    """Kafka or the registry is unreachable for now: the cycle is rolled back and retried after a pause."""


@dataclass(frozen=True)
class RelayOptions:
    """How one relay runs."""

    dsn: str
    table: str = DEFAULT_TABLE
    batch_size: int = 5_000
    max_idle_s: float = 0.25  # the adaptive poll's ceiling (SQLite, MariaDB); PostgreSQL waits on NOTIFY
    lease_s: float = 10.0  # SQLite only: how long a silent relay's lease keeps others out
    # PostgreSQL, MariaDB: buckets one cycle takes at most; less than all lets two workers (or relays)
    # overlap one's database round trips with the other's wait for Kafka.
    buckets_per_cycle: int = BUCKETS // 2
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


@dataclass
class _Topic:
    exists: bool
    max_bytes: int
    checked: float
    refused: str | None = None  # the ACL refusal (no Describe on it), in streams.kafka_util.denial's words


class Relay:
    """Moves committed outbox rows to Kafka; `run` until `stop` is set, `cycle` for one batch."""

    def __init__(
        self,
        options: RelayOptions,
        settings: Settings,
        *,
        metrics: OutboxMetrics | None = None,
        registry: RegistryClient | None = None,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        self.options = options
        self.dialect = Dialect(family_of_dsn(options.dsn), options.table)
        self.metrics = metrics or OutboxMetrics()
        self.errors = driver_errors(self.dialect.family)
        bootstrap = settings.bootstrap_servers()
        kafka = settings.kafka_config(bootstrap)
        # A refused login or TLS handshake is one line now, not a relay paused forever as if Kafka were down.
        settings.check_kafka_login(bootstrap)
        self._identity = {key: kafka[key] for key in ("sasl.username",) if key in kafka}  # names it in refusals
        # No message time-out: a record waits out a Kafka outage in the producer instead of failing and
        # leaving a gap in its key's order; the relay is paused meanwhile (decision 0020).
        self._config = _producer_config(settings, {"message.timeout.ms": 0, **(producer_config or {})})
        self._producer = Producer(self._config)
        self._admin = AdminClient(kafka)
        self.registry = registry or RegistryClient(settings.registry_url())
        self._topics: dict[str, _Topic] = {}
        self._schemas: dict[int, float] = {}  # schema id -> when the registry knew it (<0: did not)
        self._conn: Any = None
        self._listen: Any = None
        self._stats_at = 0.0
        self._offset = random.randrange(BUCKETS)  # noqa: S311 - spreads relays over buckets, nothing secret
        # Buckets found drained (or another relay's) since one last held a full batch: at BUCKETS, wait.
        self._drained = BUCKETS
        self.relayed = 0
        self.parked = 0

    # ---- the loop ------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Relay until `stop` is set; a database or Kafka outage pauses the loop, which then resumes."""
        idle, backoff = 0.001, 0.1
        log.info("relay started", dsn=redact(self.options.dsn), table=self.options.table, name=self.options.name)
        try:
            while not stop.is_set():
                try:
                    handled = self.cycle()
                    self._stats()
                    # Wait only once every bucket was found drained: a busy cycle covers part of them.
                    if self._drained >= BUCKETS:
                        self._wait(idle, stop)
                except self.errors as exc:
                    self._pause("database", exc, backoff, stop)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except (KafkaException, TransientError) as exc:
                    self._pause("kafka", exc, backoff, stop)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                # Adaptive polling: straight on while there is work, then ever longer pauses up to the ceiling.
                idle = 0.001 if handled else min(idle * 2, self.options.max_idle_s)
            with contextlib.suppress(*self.errors):
                self._stats(force=True)  # the gauges as the relay leaves the table
        finally:
            self.close()

    def _pause(self, cause: str, exc: BaseException, seconds: float, stop: threading.Event) -> None:
        log.warning(
            "relay paused",
            cause=cause,
            error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            retry_in_s=round(seconds, 2),
        )
        self.metrics.paused_total.labels(cause).inc()
        if cause == "database":
            self.metrics.database_up.set(0)
            self._disconnect()
        stop.wait(seconds)

    def _wait(self, idle: float, stop: threading.Event) -> None:
        """Until rows may be there: a NOTIFY (PostgreSQL, or a 1 s fallback poll), else the adaptive poll."""
        if self.dialect.family != "postgresql":
            stop.wait(idle)
            return
        if self._listen is None:
            import psycopg  # noqa: PLC0415

            self._listen = psycopg.connect(_libpq_url(self.options.dsn), autocommit=True, connect_timeout=10)
            self._listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        for _ in self._listen.notifies(timeout=1.0, stop_after=1):
            break

    # ---- one cycle -----------------------------------------------------------------------------------

    def cycle(self) -> int:
        """Publish up to one batch of pending rows; how many rows it published or parked."""
        conn = self._connection()
        if self.dialect.family == "sqlite":
            return self._sqlite_cycle(conn)
        cursor = conn.cursor()
        try:
            # A trickle (the last cycle drained its buckets): take every bucket, one cycle drains the table.
            # A backlog: take part, so the other workers' cycles overlap this one's wait for Kafka.
            want = self.options.buckets_per_cycle if self._drained == 0 else BUCKETS
            buckets = self._lock_buckets(cursor, want)
            if not buckets:
                conn.rollback()  # every bucket is another relay's right now
                self._drained += want
                return 0
            cursor.execute(
                self.dialect.pending_sql(None if len(buckets) == BUCKETS else buckets, self.options.batch_size)
            )
            rows: list[Row] = cursor.fetchall()
            self._drained = 0 if len(rows) >= self.options.batch_size else self._drained + want
            if not rows:
                conn.rollback()
                return 0
            published, parked = self._publish(rows, keepalive=None)
            self._settle(cursor, published, parked)
            conn.commit()  # the bucket locks go with it
        except BaseException:
            _quietly(conn.rollback)
            raise
        finally:
            cursor.close()
        return self._count(rows, published, parked)

    def _lock_buckets(self, cursor: Any, want: int) -> list[int]:
        """Lock up to `want` free buckets, starting where the last cycle stopped (round robin, so a relay
        that takes part of the buckets still serves all of them in turn)."""
        start = self._offset
        cursor.execute(self.dialect.lock_buckets_sql(wrapped=False, limit=want), (start,))
        buckets = [int(row[0]) for row in cursor.fetchall()]
        if len(buckets) < want and start > 0:
            cursor.execute(self.dialect.lock_buckets_sql(wrapped=True, limit=want - len(buckets)), (start,))
            buckets += [int(row[0]) for row in cursor.fetchall()]
        if buckets:
            self._offset = (buckets[-1] + 1) % BUCKETS if len(buckets) < BUCKETS else 0
        return sorted(buckets)

    def _sqlite_cycle(self, conn: Any) -> int:
        self._drained = BUCKETS
        if not self._lease(conn):
            return 0
        rows: list[Row] = conn.execute(self.dialect.pending_sql(None, self.options.batch_size)).fetchall()
        if len(rows) >= self.options.batch_size:
            self._drained = 0
        if not rows:
            return 0
        published, parked = self._publish(rows, keepalive=lambda: self._lease(conn))
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._lease(conn):
                # Another relay took over while Kafka was slow: it publishes these rows again; ours stay.
                conn.execute("ROLLBACK")
                return 0
            self._settle(conn.cursor(), published, parked)
            conn.execute("COMMIT")
        except BaseException:
            _quietly(lambda: conn.execute("ROLLBACK"))
            raise
        return self._count(rows, published, parked)

    def _lease(self, conn: Any) -> bool:
        now = time.time_ns() // 1000
        cursor = conn.execute(
            self.dialect.lease_sql("?"),
            (self.options.name, now + int(self.options.lease_s * 1e6), self.options.name, now),
        )
        return bool(cursor.rowcount == 1)

    def _settle(self, cursor: Any, published: list[int], parked: list[tuple[int, str]]) -> None:
        if published:
            cursor.execute(*self.dialect.delete_sql(published))
        mark = "?" if self.dialect.family == "sqlite" else "%s"
        now = time.time_ns() // 1000
        for row_id, reason in parked:
            cursor.execute(self.dialect.park_sql(mark), (reason[:2000], now, row_id))

    def _count(self, rows: list[Row], published: list[int], parked: list[tuple[int, str]]) -> int:
        self.relayed += len(published)
        self.parked += len(parked)
        topics = {row[0]: row[1] for row in rows}
        counts: dict[str, int] = {}
        for row_id in published:
            counts[topics[row_id]] = counts.get(topics[row_id], 0) + 1
        for topic, count in counts.items():
            self.metrics.relayed.labels(topic).inc(count)
        for row_id, reason in parked:
            log.warning("row parked", id=row_id, topic=topics[row_id], reason=reason)
        return len(published) + len(parked)

    # ---- Kafka ---------------------------------------------------------------------------------------

    def _publish(self, rows: list[Row], keepalive: Any) -> tuple[list[int], list[tuple[int, str]]]:
        """Produce `rows` in order and wait for every acknowledgement: (published ids, parked (id, reason))."""
        failed: dict[int, KafkaError] = {}
        acked: list[int] = []
        parked: list[tuple[int, str]] = []
        observe = self.metrics.latency.observe

        def report(row_id: int, created_us: int, error: KafkaError | None, _message: Message) -> None:
            if error is None:
                acked.append(row_id)
                observe(max(0.0, time.time() - created_us / 1e6))
            else:
                failed[row_id] = error

        for row_id, topic, key, value, packed, _event_id, created_us in rows:
            headers = unpack_headers(bytes(packed))
            reason = self._check(topic, key, bytes(value), packed)
            if reason is not None:
                parked.append((row_id, reason))
                continue
            refused = self._produce(
                topic,
                None if key is None else bytes(key),
                bytes(value),
                headers,
                functools.partial(report, row_id, created_us),
            )
            if refused is not None:
                parked.append((row_id, refused))
        while len(self._producer) > 0:
            self._producer.flush(1.0)
            if keepalive is not None:
                keepalive()
        for row_id, error in failed.items():
            if error.fatal():
                self._producer = Producer(self._config)  # the idempotent session is over; nothing was deleted
                raise TransientError(f"the producer failed fatally: {error.str()}")
            if error.code() in PERMANENT:
                parked.append((row_id, f"Kafka refused the record: {error.str()}"))
            else:
                log.warning("delivery failed; the row stays for the next cycle", id=row_id, error=error.str())
        for _, reason in parked:
            self.metrics.parked_total.labels(_reason_kind(reason)).inc()
        return acked, parked

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], on_delivery: Any
    ) -> str | None:
        """Queue one record; the reason when the client refuses it for good (None: queued)."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=on_delivery,
                )
                return None
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: serve deliveries, then retry
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() not in PERMANENT:
                    raise
                return f"Kafka refused the record: {error.str()}"

    def _check(self, topic: str, key: bytes | None, value: bytes, packed: bytes) -> str | None:
        """Why Kafka would refuse this record for good (None: it would take it)."""
        known = self._topic(topic)
        if known.refused is not None:
            return known.refused
        if not known.exists:
            return f"topic '{topic}' does not exist on the cluster"
        size = len(value) + len(key or b"") + len(packed) + RECORD_OVERHEAD  # packed: a bound on the headers' size
        if size > known.max_bytes:
            return f"record of {size} bytes is over topic '{topic}' max.message.bytes {known.max_bytes}"
        if len(value) >= 5 and value[0] == 0:
            schema_id = int.from_bytes(value[1:5], "big")
            if not self._schema_known(schema_id):
                return f"schema id {schema_id} is unknown to the registry"
        return None

    def _topic(self, name: str) -> _Topic:
        now = time.monotonic()
        known = self._topics.get(name)
        if known is not None and now - known.checked < TOPIC_TTL_S:
            return known
        try:
            metadata = self._producer.list_topics(name, timeout=10)
        except KafkaException as exc:
            raise TransientError(f"cannot read the cluster's metadata: {exc.args[0]}") from exc
        found = metadata.topics.get(name)
        refused = denial(found.error if found is not None else None, self._identity, "Write", topic=name)
        if found is None or found.error is not None:
            known = _Topic(False, 0, now, str(refused) if refused is not None else None)
        else:
            known = _Topic(True, self._max_bytes(name), now)
        self._topics[name] = known
        return known

    def _max_bytes(self, topic: str) -> int:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            configs = self._admin.describe_configs([resource])[resource].result(timeout=10)
        except KafkaException as exc:
            refused = denial(exc.args[0], self._identity, "DescribeConfigs", topic=topic)
            raise TransientError(
                str(refused) if refused is not None else f"cannot read topic '{topic}' configs: {exc.args[0]}"
            ) from exc
        entry = configs.get("max.message.bytes")
        return int(entry.value) if entry is not None and entry.value else 1_048_588

    def _schema_known(self, schema_id: int) -> bool:
        seen = self._schemas.get(schema_id)
        now = time.monotonic()
        if seen is not None and (seen > 0 or now + seen < SCHEMA_RECHECK_S):
            return seen > 0
        try:
            self.registry.schema_by_id(schema_id)
        except RegistryRequestError as exc:
            if exc.status != 404:
                raise TransientError(str(exc)) from exc
            self._schemas[schema_id] = -now
            return False
        except SchemaError as exc:
            raise TransientError(str(exc)) from exc
        self._schemas[schema_id] = now
        return True

    # ---- the database --------------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = connect(self.options.dsn)
            if self.dialect.family == "mysql":
                with self._conn.cursor() as cursor:
                    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                self._conn.commit()
            self.metrics.database_up.set(1)
        return self._conn

    def _stats(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._stats_at < STATS_EVERY_S and not force:
            return
        self._stats_at = now
        conn = self._connection()
        cursor = conn.cursor()
        try:
            cursor.execute(self.dialect.stats_sql())
            pending, oldest, parked = cursor.fetchone()
        finally:
            cursor.close()
            if self.dialect.family != "sqlite":
                conn.rollback()
        self.metrics.pending.set(int(pending or 0))
        self.metrics.parked.set(int(parked or 0))
        self.metrics.oldest_age.set(max(0.0, time.time() - int(oldest) / 1e6) if oldest else 0.0)

    def _disconnect(self) -> None:
        for conn in (self._conn, self._listen):
            if conn is not None:
                _quietly(conn.close)
        self._conn = self._listen = None

    def close(self) -> None:
        """Release the SQLite lease (others need not wait it out), flush, close connections."""
        if self._conn is not None and self.dialect.family == "sqlite":
            _quietly(lambda: self._conn.execute(self.dialect.release_sql("?"), (self.options.name,)))
        self._disconnect()
        self._producer.flush(5.0)
        self.registry.close()


def run_workers(
    options: RelayOptions, settings: Settings, workers: int, stop: threading.Event, metrics: OutboxMetrics | None = None
) -> list[Relay]:
    """Run `workers` relays (threads, one connection and producer each, one set of metrics) until `stop`.

    They share the buckets like separate relays would; SQLite gets one (its lease admits one at a time)."""
    metrics = metrics or OutboxMetrics()
    count = 1 if family_of_dsn(options.dsn) == "sqlite" else workers
    relays = [
        Relay(
            options if count == 1 else dataclasses.replace(options, name=f"{options.name}-{i}"),
            settings,
            metrics=metrics,
        )
        for i in range(count)
    ]
    threads = [
        threading.Thread(target=relay.run, args=(stop,), name=f"outbox-relay-{i}", daemon=True)
        for i, relay in enumerate(relays)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
            if not all(t.is_alive() for t in threads):
                stop.set()  # one worker died of a bug: stop the others rather than run short-handed
    return relays


def _libpq_url(dsn: str) -> str:
    return "postgresql://" + dsn.split("://", 1)[1]


def _reason_kind(reason: str) -> str:
    if "does not exist" in reason:
        return "topic_missing"
    if "max.message.bytes" in reason or "too large" in reason.lower():
        return "too_large"
    if "schema id" in reason:
        return "unknown_schema"
    return "refused"


def _quietly(call: Any) -> None:
    try:
        call()
    except Exception:  # cleanup of a connection that may be gone already
        log.debug("cleanup failed", exc_info=True)
