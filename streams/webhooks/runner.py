"""The webhook runner: consume routed topics, deliver each event to its endpoints, commit what is settled.

A record's offset is committed only once every route it matched either got a 2xx or parked it in
`<topic>.dlq` (Kafka acknowledged); the bookkeeping is the Celery bridge's (`streams.bridge.inflight`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from streams.bridge.inflight import InFlight, PendingRecord, TopicPartitionKey
from streams.kafka_util import Partitions, member_config, produce_until_acknowledged
from streams.records import (
    DLQ_HEADER_PREFIX,
    EventDecoder,
    SchemaUnavailableError,
    SourceRecord,
    UndecodableRecordError,
    dead_letter,
)
from streams.schemas.registry_client import RegistryClient
from streams.webhooks.delivery import CE_PREFIX, Attempt, Deliverer, DeliveryResult, render
from streams.webhooks.metrics import WebhookMetrics
from streams.webhooks.routes import WebhookError
from streams.webhooks.signing import Signer, webhook_id

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.catalog import Catalog
    from streams.settings import Settings
    from streams.webhooks.routes import WebhookConfig, WebhookRoute

__all__ = ["DeliveryFailedError", "RunnerOptions", "WebhookRunner"]

log = structlog.get_logger("streams.webhooks")
AGENT = "webhooks"  # dlq_agent of what the runner parks


class DeliveryFailedError(WebhookError):
    """An endpoint did not take an event within the route's attempts (or refused it for good)."""


@dataclass(frozen=True)
class RunnerOptions:
    """Tuning of one runner process (the routes come from the catalog)."""

    batch_size: int = 500  # records per consume call at most
    max_in_flight: int = 5_000  # consumed records not yet committable; beyond it every partition pauses
    poll_timeout_s: float = 0.05
    instance_id: str | None = None  # static group membership: a restarted runner keeps its partitions
    session_timeout_ms: int = 10_000
    shutdown_grace_s: float = 10.0  # on SIGTERM, how long deliveries under way may finish
    registry_retry_s: float = 1.0
    lag_interval_s: float = 5.0
    consumer_config: dict[str, Any] = field(default_factory=dict)


class WebhookRunner:
    """One `streams webhooks` process: a consumer group member posting events to HTTP endpoints."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        config: WebhookConfig,
        options: RunnerOptions | None = None,
        *,
        metrics: WebhookMetrics | None = None,
        registry: RegistryClient | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.options = options or RunnerOptions()
        self.metrics = metrics or WebhookMetrics()
        secrets = settings.webhook_secret_map()
        config.secrets(secrets)
        self.signers = {
            route.secret: Signer(secrets[route.secret].get_secret_value(), route.secret) for route in config.routes
        }
        kafka = settings.kafka_config(settings.bootstrap_servers())
        self._identity = {key: kafka[key] for key in ("sasl.username",) if key in kafka}  # names it in refusals
        settings.check_kafka_login(settings.bootstrap_servers())
        self._registry = registry or RegistryClient(settings.registry_url())
        # A registry outage holds the partition (SchemaUnavailableError) instead of parking its records.
        self.decoder = EventDecoder(
            self._registry, max_record_bytes=settings.agent_max_record_bytes, hold_when_registry_down=True
        )
        self._routes = config.routes_by_topic()
        self._consumer = Consumer(
            member_config(
                kafka,
                config.group,
                f"streams-webhooks-{self.options.instance_id or 'dynamic'}",
                session_timeout_ms=self.options.session_timeout_ms,
                instance_id=self.options.instance_id,
                # Incremental rebalancing: a runner joining or leaving moves only the partitions that change
                # owner; the others keep their deliveries under way instead of cancelling and redelivering them.
                extra={"partition.assignment.strategy": "cooperative-sticky", **self.options.consumer_config},
            )
        )
        self._producer = Producer({**kafka, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        self._inflight = InFlight()
        self._tasks: dict[TopicPartitionKey, set[asyncio.Task[None]]] = {}
        self._parts = Partitions(
            self._consumer,
            self.metrics.lag,
            self.options.lag_interval_s,
            identity=self._identity,
            group=self.config.group,
        )
        self._deliverer: Deliverer | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self.delivered = 0  # deliveries that got a 2xx, since start (for tests and benchmarks)
        self.first_record_at: float | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] | None = None, *, handle_signals: bool = False) -> None:
        """Deliver until `stop()` (or SIGTERM/SIGINT with handle_signals) or `should_stop()` is true."""
        asyncio.run(self.arun(should_stop, handle_signals=handle_signals))

    def stop(self) -> None:
        self._stopping = True

    @property
    def completed_records(self) -> int:
        """Records settled (every route delivered or parked) and committable, since start."""
        return self._inflight.completed

    async def arun(self, should_stop: Callable[[], bool] | None = None, *, handle_signals: bool = False) -> None:
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        self._deliverer = Deliverer(self.config.routes, self.signers, on_attempt=self._attempted)
        topics = list(self.config.topics())
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info(
            "webhooks started",
            group=self.config.group,
            topics=topics,
            routes=[route.name for route in self.config.routes],
        )
        try:
            while not self._stopping and not (should_stop and should_stop()):
                await self.cycle()
        finally:
            await self._shutdown()
        if self._failure is not None:
            raise WebhookError(f"a delivery failed unexpectedly: {self._failure!r}") from self._failure

    async def cycle(self) -> None:
        """One turn: reconcile pauses, consume a batch, start its deliveries, commit what is settled."""
        self._reconcile_pauses(time.monotonic())
        want = max(1, min(self.options.batch_size, self.options.max_in_flight - self._inflight.outstanding))
        messages = self._consumer.consume(want, 0)
        if messages:
            self._take(messages)
            await asyncio.sleep(0)  # let the deliveries run
        else:
            await asyncio.sleep(self.options.poll_timeout_s)
        self._producer.poll(0)
        self._commit(self._inflight.committable())
        self._observe()

    # ---- consuming ----------------------------------------------------------------------------------

    def _take(self, messages: list[Message]) -> None:
        if self.first_record_at is None:
            self.first_record_at = time.monotonic()
        rewound: set[TopicPartitionKey] = set()
        for message, tp, offset in self._parts.owned(messages, rewound):
            topic = tp[0]
            source = SourceRecord.from_message(message)
            try:
                _, data = self.decoder.decode(source.value)
            except SchemaUnavailableError as exc:
                rewound.add(tp)
                self._hold(tp, offset, exc)
                continue
            except UndecodableRecordError as exc:
                record = self._inflight.add(tp, offset)
                self._inflight.hold(record)
                self.metrics.records.labels(topic, "dead_lettered").inc()
                self._park(record, source, exc, 1, {})
                continue
            record = self._inflight.add(tp, offset)
            attributes = {
                name.removeprefix(CE_PREFIX): raw.decode(errors="replace")
                for name, raw in source.headers
                if name.startswith(CE_PREFIX) and raw is not None
            }
            event_type = attributes.get("type") or topic
            event_id = attributes.setdefault("id", source.event_id)
            matched = [route for route in self._routes.get(topic, ()) if route.matches(event_type, data)]
            self.metrics.records.labels(topic, "routed" if matched else "filtered").inc()
            for route in matched:
                headers, body = render(route, data, attributes, topic)
                self._inflight.hold(record)
                task = asyncio.get_running_loop().create_task(
                    self._deliver(record, source, route, webhook_id(route.name, event_id), headers, body)
                )
                tasks = self._tasks.setdefault(tp, set())
                tasks.add(task)
                task.add_done_callback(functools.partial(self._finished, tasks=tasks))

    def _hold(self, tp: TopicPartitionKey, offset: int, exc: Exception) -> None:
        self._parts.hold(tp, offset, exc, self.options.registry_retry_s)

    # ---- delivering and parking ---------------------------------------------------------------------

    async def _deliver(
        self,
        record: PendingRecord,
        source: SourceRecord,
        route: WebhookRoute,
        msg_id: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        assert self._deliverer is not None  # noqa: S101 - set before the first record is taken
        result = await self._deliverer.deliver(route, msg_id, headers, body)
        if result.delivered:
            self.delivered += 1
            self.metrics.deliveries.labels(route.name, "delivered").inc()
            self._inflight.settle(record)
            return
        self.metrics.deliveries.labels(route.name, "dead_lettered").inc()
        self._park(record, source, _failure(route, result), result.attempts, _http_headers(route, result.last))

    def _park(
        self, record: PendingRecord, source: SourceRecord, error: Exception, attempts: int, extra: dict[str, bytes]
    ) -> None:
        """Send the record to `<topic>.dlq` (the agents' header policy, plus the HTTP outcome); the hold the caller
        has on the record is settled once Kafka acknowledged the dead letter."""
        target, parked = dead_letter(self.catalog, source, AGENT, error, attempts)
        headers: list[tuple[str, str | bytes | None]] = [
            *parked,
            *((f"{DLQ_HEADER_PREFIX}{name}", value) for name, value in extra.items()),
        ]
        self.metrics.dead_letters.labels(source.topic, type(error).__name__).inc()
        produce_until_acknowledged(
            self._producer, target, source.key, source.value, headers, lambda: self._inflight.settle(record)
        )

    def _attempted(self, route: WebhookRoute, attempt: Attempt) -> None:
        self.metrics.attempts.labels(route.name, attempt.label).inc()
        self.metrics.attempt_seconds.labels(route.name).observe(attempt.seconds)

    def _finished(self, task: asyncio.Task[None], *, tasks: set[asyncio.Task[None]]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            # A bug, not an endpoint's failure: stop (nothing unsettled is committed) rather than wedge a partition.
            self._failure = task.exception()
            log.error("delivery crashed; stopping", error=repr(self._failure))
            self._stopping = True

    def _commit(self, offsets: dict[TopicPartitionKey, int], *, sync: bool = False) -> None:
        self._parts.commit(offsets, sync=sync)

    # ---- partitions ---------------------------------------------------------------------------------

    def _reconcile_pauses(self, now: float) -> None:
        parts = self._parts
        parts.release_held(now)
        full = self._inflight.outstanding >= self.options.max_in_flight
        parts.pause_only(set(parts.assigned) if full else set(parts.held) & parts.assigned)

    def _on_assign(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        self._parts.assign(partitions)

    def _on_revoke(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._producer.flush(10)  # dead letters acknowledged now still count
        self._commit(self._inflight.committable(), sync=True)
        self._forget(tps, "revoked")

    def _on_lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget({(p.topic, p.partition) for p in partitions}, "lost")

    def _forget(self, tps: set[TopicPartitionKey], why: str) -> None:
        """Stop the deliveries of partitions we no longer own; their records go to the next owner."""
        for tp in tps:
            for task in self._tasks.pop(tp, set()):
                task.cancel()
        dropped = self._inflight.drop(tps)
        self._parts.forget(tps)
        log.info("partitions given up", why=why, partitions=sorted(tps), dropped_unsettled=dropped)

    # ---- observing and stopping ---------------------------------------------------------------------

    def _observe(self) -> None:
        self.metrics.in_flight.set(self._inflight.outstanding)
        self.metrics.paused.set(len(self._parts.paused))
        if self._parts.report_lag() and self._deliverer is not None:  # the circuits on the lag's interval
            for route in self.config.routes:
                self.metrics.circuit_open.labels(route.name).set(
                    int(self._deliverer.endpoints[route.url].circuit.is_open)
                )

    async def _shutdown(self) -> None:
        """Let deliveries under way finish (briefly), commit what is settled, leave the group."""
        pending = [task for tasks in self._tasks.values() for task in tasks]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.options.shutdown_grace_s)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
        self._producer.flush(10)
        self._commit(self._inflight.committable(), sync=True)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close failed", error=str(exc))
        if self._deliverer is not None:
            await self._deliverer.aclose()
        self._registry.close()
        log.info("webhooks stopped", completed_records=self._inflight.completed, delivered=self.delivered)


def _failure(route: WebhookRoute, result: DeliveryResult) -> DeliveryFailedError:
    host = urlsplit(route.url).hostname or "?"  # the host only: a path or query may carry a token
    verdict = "refused" if not result.last.retriable else f"gave up after {result.attempts} attempts"
    return DeliveryFailedError(f"webhook route '{route.name}' to {host}: {verdict}; last: {result.last.describe()}")


def _http_headers(route: WebhookRoute, attempt: Attempt) -> dict[str, bytes]:
    """What the endpoint said, beside the agents' dlq_* headers."""
    out = {"route": route.name.encode(), "http_status": str(attempt.status or "").encode()}
    if attempt.error:
        out["http_error"] = attempt.error.encode()
    out["http_body"] = attempt.body
    return out
