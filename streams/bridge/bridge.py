"""The bridge loop: consume routed topics, push task messages to Redis in batches, commit what Redis confirmed.

Offsets are committed only up to the first record with work outstanding; outages and full queues pause
partitions (the consumer keeps polling, so it stays in its group) instead of blocking or dropping.
"""

from __future__ import annotations

import random
import signal
import time
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from streams.bridge.enqueue import RedisQueues
from streams.bridge.errors import RedisUnavailableError
from streams.bridge.inflight import (
    InFlight,
    PendingRecord,
    PendingTask,
    QueueSlot,
    TopicPartitionKey,
    first_tasks,
)
from streams.bridge.metrics import BridgeMetrics
from streams.bridge.router import Router, UnroutableRecordError
from streams.errors import StreamsError
from streams.gc_tuning import throughput_gc
from streams.kafka_util import Partitions, member_config, produce_until_acknowledged
from streams.records import SchemaUnavailableError, SourceRecord, UndecodableRecordError, dead_letter
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.bridge.routes import BridgeConfig
    from streams.catalog import Catalog
    from streams.settings import Settings

__all__ = ["AGENT", "Bridge", "BridgeOptions"]

log = structlog.get_logger("streams.bridge")
AGENT = "bridge"  # dlq_agent of what the bridge parks


@dataclass(frozen=True)
class BridgeOptions:
    """Tuning of one bridge process (the routes come from the catalog)."""

    batch_size: int = 2_000  # records per consume call, and tasks per Redis push at most
    max_in_flight: int = 20_000  # consumed records not yet committable; beyond it every partition pauses
    poll_timeout_s: float = 0.05
    redis_backoff_s: float = 0.2  # first retry after an outage; doubles up to redis_backoff_max_s
    redis_backoff_max_s: float = 5.0
    full_queue_retry_s: float = 0.2  # how often a full queue's depth is looked at again
    instance_id: str | None = None  # static group membership: a restarted bridge keeps its partitions
    session_timeout_ms: int = 10_000
    lag_interval_s: float = 5.0
    redeliver_after_s: float = 600.0  # a pushed task not done after this, with its queue empty, is pushed again
    sweep_interval_s: float = 30.0  # how often the ledger is swept for such tasks (0: no ledger, no sweeps)
    consumer_config: dict[str, Any] = field(default_factory=dict)


class Bridge:
    """One bridge process: a Kafka consumer group member feeding Celery queues in Redis."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        config: BridgeConfig,
        options: BridgeOptions | None = None,
        *,
        metrics: BridgeMetrics | None = None,
        redis_url: str | None = None,
        registry: RegistryClient | None = None,
    ) -> None:
        self.config = config
        self.options = options or BridgeOptions()
        self.metrics = metrics or BridgeMetrics()
        self.catalog = catalog
        kafka = settings.kafka_config(settings.bootstrap_servers())
        self._identity = {key: kafka[key] for key in ("sasl.username",) if key in kafka}  # names it in refusals
        settings.check_kafka_login(settings.bootstrap_servers())  # a refused login: one clear error, not retries
        self._registry = registry or RegistryClient(settings.registry_url())
        self.router = Router(config, catalog, self._registry)
        self.queues = RedisQueues(
            redis_url or settings.redis(),
            {name: spec.bound for name, spec in config.queues.items()},
            ledger=self.options.sweep_interval_s > 0,
        )
        self._consumer = Consumer(
            member_config(
                kafka,
                config.group,
                f"streams-bridge-{self.options.instance_id or 'dynamic'}",
                session_timeout_ms=self.options.session_timeout_ms,
                instance_id=self.options.instance_id,
                extra=self.options.consumer_config,
            )
        )
        self._producer = Producer({**kafka, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        self._inflight = InFlight()
        # owned, paused and held partitions; `committed`: the next offset Redis confirmed everything before
        self._parts = Partitions(
            self._consumer,
            self.metrics.lag,
            self.options.lag_interval_s,
            identity=self._identity,
            group=self.config.group,
        )
        self._redis_down = False
        self._redis_backoff = self.options.redis_backoff_s
        self._push_at = 0.0
        self._push_turn = 0
        self._pusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-push")
        self._push: tuple[Future[dict[QueueSlot, int]], dict[QueueSlot, list[PendingTask]], float] | None = None
        self._rng = random.SystemRandom()
        self._full: dict[str, float] = {}  # queue -> when to look at its depth again
        self._sweep_at = time.monotonic() + self.options.sweep_interval_s
        self._stopping = False
        self.first_record_at: float | None = None  # monotonic, for benchmarks

    # ---- lifecycle ----------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] | None = None, *, handle_signals: bool = False) -> None:
        """Consume until `stop()` (or SIGTERM/SIGINT with handle_signals) or `should_stop()` is true."""
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        topics = list(self.config.topics())
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("bridge started", group=self.config.group, topics=topics, redis=self.queues.url)
        self.metrics.redis_up.set(1)
        with throughput_gc():
            try:
                while not self._stopping and not (should_stop and should_stop()):
                    self.cycle()
            finally:
                self._shutdown()

    def stop(self) -> None:
        self._stopping = True

    @property
    def completed_records(self) -> int:
        """Records whose every task Redis confirmed (or that went to the DLQ), since start."""
        return self._inflight.completed

    def cycle(self) -> None:
        """One turn: reconcile pauses, consume a batch, route it, push what can go, commit, serve callbacks."""
        now = time.monotonic()
        self._reconcile_pauses(now)
        want = max(1, min(self.options.batch_size, self.options.max_in_flight - self._inflight.outstanding))
        # Take what is already fetched without waiting; wait (briefly) only when there is nothing: for the push in
        # flight if there is one (its outcome is applied, and the next push sent, the moment Redis answers, not
        # when the broker next has something), else for the broker.
        messages = self._consumer.consume(want, 0)
        if not messages:
            if self._push is not None:
                futures.wait([self._push[0]], timeout=self.options.poll_timeout_s)
                messages = self._consumer.consume(want, 0)
            else:
                messages = self._consumer.consume(want, self.options.poll_timeout_s)
        if messages:
            self._take(messages)
        self._collect(block=False)
        if self._push is None and self._inflight.tasks_waiting and time.monotonic() >= self._push_at:
            self._start_push()
        self._commit(self._inflight.committable())
        self._producer.poll(0)
        self._sweep()
        self._observe()

    def _sweep(self) -> None:
        """Now and then, push again the tasks Redis or a worker lost after the push was confirmed."""
        now = time.monotonic()
        if not self.options.sweep_interval_s or now < self._sweep_at or self._redis_down:
            return
        self._sweep_at = now + self.options.sweep_interval_s
        try:
            sent = self.queues.sweep(self.options.redeliver_after_s)
        except RedisUnavailableError as exc:
            log.warning("ledger sweep failed", error=str(exc))
            return
        if sent:
            self.metrics.redelivered.inc(sent)
            log.warning("tasks lost after their push were pushed again", tasks=sent)

    # ---- consuming ----------------------------------------------------------------------------------

    def _take(self, messages: list[Message]) -> None:
        if self.first_record_at is None:
            self.first_record_at = time.monotonic()
        rewound: set[TopicPartitionKey] = set()
        counts: dict[tuple[str, str], int] = {}
        route, add, enqueue = self.router.route, self._inflight.add, self._inflight.enqueue
        for message, tp, offset in self._parts.owned(messages, rewound):
            topic, partition = tp
            try:
                routed = route(topic, partition, offset, message.value(), message.headers())
            except SchemaUnavailableError as exc:
                rewound.add(tp)
                self._hold(tp, offset, exc)
                continue
            except (UndecodableRecordError, UnroutableRecordError) as exc:
                record = self._inflight.add(tp, offset)
                self._dead_letter(record, message, exc)
                continue
            enqueue(add(tp, offset), routed)
            key = (topic, "routed" if routed else "filtered")
            counts[key] = counts.get(key, 0) + 1
        for (topic, outcome), count in counts.items():
            self.metrics.records.labels(topic, outcome).inc(count)

    def _hold(self, tp: TopicPartitionKey, offset: int, exc: Exception) -> None:
        """The registry is unreachable: rewind the partition to `offset` and pause it for a while."""
        self._parts.hold(tp, offset, exc, min(self.options.redis_backoff_max_s, 1.0))

    # ---- pushing and committing ---------------------------------------------------------------------

    def _start_push(self) -> None:
        """Send what can go to Redis on the push thread; the loop consumes the next batch meanwhile."""
        try:
            eligible = self._eligible(self._inflight.waiting, time.monotonic())
        except RedisUnavailableError as exc:
            self._redis_failed(exc, self._inflight.waiting)
            return
        if not eligible:
            return
        self._push_turn += 1
        eligible = first_tasks(eligible, self.options.batch_size, self._push_turn)
        for (queue, _), tasks in eligible.items():
            self.metrics.published.labels(queue).inc(len(tasks))
        self._push = (self._pusher.submit(self.queues.push, eligible), eligible, time.perf_counter())

    def _collect(self, *, block: bool) -> None:
        """Apply the outcome of the push in flight, if it is done (or wait for it with `block`)."""
        if self._push is None or not (block or self._push[0].done()):
            return
        future, eligible, started = self._push
        self._push = None
        try:
            taken = future.result()
        except RedisUnavailableError as exc:
            self._redis_failed(exc, eligible)
            return
        now = time.monotonic()
        self.metrics.push_seconds.observe(time.perf_counter() - started)
        if self._redis_down:
            log.info("redis is back; resuming", redis=self.queues.url)
        self._redis_down = False
        self._redis_backoff = self.options.redis_backoff_s
        self.metrics.redis_up.set(1)
        for group, count in taken.items():
            queue = group[0]
            by_route: dict[str, int] = {}
            for task in self._inflight.confirm(group, count):
                label = task.task.route
                by_route[label] = by_route.get(label, 0) + 1
            for route, n in by_route.items():
                self.metrics.confirmed.labels(queue, route).inc(n)
            if count < len(eligible[group]):
                self._full[queue] = now + self.options.full_queue_retry_s
            elif queue in self._full and not any(g[0] == queue for g in self._inflight.waiting):
                del self._full[queue]

    def _eligible(self, waiting: dict[QueueSlot, list[PendingTask]], now: float) -> dict[QueueSlot, list[PendingTask]]:
        """What to send now: a queue that was full is sent only what its current depth has room for."""
        eligible = {group: list(tasks) for group, tasks in waiting.items() if group[0] not in self._full}
        recheck = sorted({queue for queue, _ in waiting if queue in self._full and self._full[queue] <= now})
        if not recheck:
            return eligible
        depths = self.queues.depths(recheck)
        for queue in recheck:
            self.metrics.queue_depth.labels(queue).set(depths[queue])
            spec = self.config.queues.get(queue)
            room = None if spec is None or spec.bound is None else spec.bound - depths[queue]
            for group in [g for g in waiting if g[0] == queue]:
                tasks = waiting[group] if room is None else waiting[group][: max(0, room)]
                if tasks:
                    eligible[group] = tasks
                    room = None if room is None else room - len(tasks)
            if not any(g[0] == queue for g in eligible):
                self._full[queue] = now + self.options.full_queue_retry_s
        return eligible

    def _redis_failed(self, exc: RedisUnavailableError, waiting: dict[QueueSlot, list[PendingTask]]) -> None:
        if not self._redis_down:
            log.warning("redis unreachable; pausing partitions", error=str(exc))
        for (queue, _), tasks in waiting.items():
            self.metrics.failed.labels(queue).inc(len(tasks))
        self._redis_down = True
        self.metrics.redis_up.set(0)
        self._push_at = time.monotonic() + self._rng.uniform(self._redis_backoff / 2, self._redis_backoff)
        self._redis_backoff = min(self._redis_backoff * 2, self.options.redis_backoff_max_s)

    def _commit(self, offsets: dict[TopicPartitionKey, int], *, sync: bool = False) -> None:
        self._parts.commit(offsets, sync=sync)

    # ---- dead letters -------------------------------------------------------------------------------

    def _dead_letter(self, record: PendingRecord, message: Message, error: StreamsError) -> None:
        """Park the record in `<topic>.dlq` with the agents' header policy; settled once Kafka acknowledged it."""
        source = SourceRecord.from_message(message)
        target, headers = dead_letter(self.catalog, source, AGENT, error)
        self.metrics.dead_letters.labels(source.topic, type(error).__name__).inc()
        self.metrics.records.labels(source.topic, "dead_lettered").inc()
        self._inflight.hold(record)
        produce_until_acknowledged(
            self._producer, target, source.key, source.value, headers, lambda: self._inflight.settle(record)
        )

    # ---- partitions ---------------------------------------------------------------------------------

    def _reconcile_pauses(self, now: float) -> None:
        parts = self._parts
        parts.release_held(now)
        if self._redis_down or self._inflight.outstanding >= self.options.max_in_flight:
            desired = set(parts.assigned)
        else:  # only partitions whose tasks wait for a full queue; tasks being pushed are not blocked
            desired = self._inflight.blocked_partitions(set(self._full)) if self._full else set()
            desired = (desired & parts.assigned) | set(parts.held)
        pause, resume = parts.pause_only(desired)
        if pause or resume:
            log.info(
                "partitions paused" if pause else "partitions resumed",
                paused=len(desired),
                redis_down=self._redis_down,
                in_flight=self._inflight.outstanding,
            )

    def _on_assign(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        self._parts.assign(partitions)

    def _on_revoke(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._collect(block=True)  # what Redis confirms now may still be committed by us
        self._commit(self._inflight.committable())
        committed = self._parts.committed
        confirmed = {tp: committed[tp] for tp in tps if tp in committed}
        self._commit(confirmed, sync=True)
        self._forget(tps, "revoked")

    def _on_lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        self._collect(block=True)  # keep the waiting lists and the push in flight consistent
        self._forget({(p.topic, p.partition) for p in partitions}, "lost")

    def _forget(self, tps: set[TopicPartitionKey], why: str) -> None:
        dropped = self._inflight.drop(tps)
        self._parts.forget(tps)
        log.info("partitions given up", why=why, partitions=sorted(tps), dropped_unconfirmed=dropped)

    # ---- observing and stopping ---------------------------------------------------------------------

    def _observe(self) -> None:
        self.metrics.in_flight.set(self._inflight.tasks_waiting)
        self.metrics.in_flight_records.set(self._inflight.outstanding)
        self.metrics.paused.set(len(self._parts.paused))
        self._parts.report_lag()

    def _shutdown(self, push_deadline_s: float = 10.0) -> None:
        """Push what is waiting (briefly), commit what Redis confirmed, leave the group, flush dead letters."""
        deadline = time.monotonic() + push_deadline_s
        self._collect(block=True)
        while self._inflight.tasks_waiting and not self._redis_down and time.monotonic() < deadline:
            before = self._inflight.tasks_waiting
            self._start_push()
            self._collect(block=True)
            if self._inflight.tasks_waiting == before:
                break  # full queues: leave them to the next owner
        self._producer.flush(10)
        self._commit(self._inflight.committable(), sync=True)
        try:
            self._consumer.close()  # revokes: commits confirmed offsets synchronously
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close failed", error=str(exc))
        self._pusher.shutdown(wait=True)
        self.queues.close()
        self._registry.close()
        log.info("bridge stopped", completed_records=self._inflight.completed)
