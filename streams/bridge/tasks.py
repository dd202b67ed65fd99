"""The task side: a Celery Task base class giving bridge-fed tasks idempotent effects and a bounded life.

Dedupe on the event id in Redis (done only after the effect), acks_late with a redelivery bound, retries
with jittered exponential backoff, and a `task.failed` event to Kafka when a task gives up.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import redis
from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from streams.bridge.celery_wire import EFFECTS_PREFIX, HEADER_PREFIX, PENDING_MESSAGES, PENDING_SET, effect_key
from streams.bridge.errors import BridgeError
from streams.bridge.retry import RetryPolicy
from streams.errors import StreamsError

if TYPE_CHECKING:
    from collections.abc import Callable

    from celery import Celery

    from streams.publish import Publisher

__all__ = ["BridgeTask", "EffectLedger", "TaskGaveUpError", "bridge_task"]

log = logging.getLogger("streams.bridge.tasks")
KEY_PREFIX = EFFECTS_PREFIX
FAILED_NAMESPACE = uuid.UUID("3d8f2b61-7c3e-5a9d-8e41-5f2a9c0b7d33")
# Release the claim only if it is still ours (it may have expired and been taken by another run).
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# Forget a failed effect in one step, so a run finishing meanwhile (marking it ok) is never undone.
FORGET_FAILURE = (
    "if redis.call('GET', KEYS[1]) == 'failed' then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) return 1 end return 0"
)


class TaskGaveUpError(BridgeError):
    """A task stopped for good (attempts or redeliveries exhausted); a task.failed event says why."""


class EffectLedger:
    """Per-effect state in Redis: done markers, claims (one run at a time), delivery and failure counts."""

    def __init__(self, client: redis.Redis, *, ttl_s: int, claim_ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.claim_ttl_s = claim_ttl_s
        self._release = client.register_script(RELEASE)

    def done(self, key: str) -> str | None:
        value = self.client.get(f"{KEY_PREFIX}done:{key}")
        return value.decode() if isinstance(value, bytes) else None

    def count_delivery(self, key: str) -> int:
        return self._incr(f"{KEY_PREFIX}deliveries:{key}")

    def count_failure(self, key: str) -> int:
        return self._incr(f"{KEY_PREFIX}failures:{key}")

    def claim(self, key: str, token: str) -> bool:
        """Take the claim; a claim left by a dead process on this host is taken over at once."""
        name = f"{KEY_PREFIX}claim:{key}"
        if self.client.set(name, token, nx=True, ex=self.claim_ttl_s):
            return True
        holder = self.client.get(name)
        if isinstance(holder, bytes) and _dead_here(holder.decode()):
            self._release(keys=[name], args=[holder])
            return bool(self.client.set(name, token, nx=True, ex=self.claim_ttl_s))
        return False

    def claim_left_s(self, key: str) -> int:
        return max(1, int(self.client.ttl(f"{KEY_PREFIX}claim:{key}")))

    def finish(self, key: str, token: str, outcome: str, task_id: str) -> None:
        """Mark the effect done (`ok` or `failed`), take the task off the bridge's ledger, release the claim."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(f"{KEY_PREFIX}done:{key}", outcome, ex=self.ttl_s)
            pipe.zrem(PENDING_SET, task_id)
            pipe.hdel(PENDING_MESSAGES, task_id)
            pipe.execute()
        self.release(key, token)

    def release(self, key: str, token: str) -> None:
        self._release(keys=[f"{KEY_PREFIX}claim:{key}"], args=[token])

    def forget_failure(self, key: str) -> bool:
        """Let a failed effect run again (the console's task re-drive): drop its `failed` marker and its
        delivery and failure counts. False, changing nothing, when the effect is not marked failed."""
        names = [f"{KEY_PREFIX}{kind}:{key}" for kind in ("done", "deliveries", "failures")]
        return bool(self.client.eval(FORGET_FAILURE, len(names), *names))

    def _incr(self, name: str) -> int:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, self.ttl_s)
            count, _ = pipe.execute()
        return int(count)


def claim_token() -> str:
    """Who holds a claim: host, pid (to spot a dead holder on this host) and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def _dead_here(token: str) -> bool:
    host, _, rest = token.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class BridgeTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """Base class for tasks the bridge feeds: `@app.task(base=BridgeTask, name=...)` or `bridge_task(app)`.

    The task body is the effect. It runs at most once to completion per (event, task): a done marker is
    set only after it returns, a claim keeps two deliveries from running it at once, and effects should
    still be idempotent themselves (the marker is set after the effect, so a crash in between re-runs it).
    """

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the retry policy below bounds attempts, not Celery's counter
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()  # when the message carries none (not from a bridge)
    failed_topic: ClassVar[str | None] = None  # when the message names none
    effect_ttl_s: ClassVar[int] = 7 * 86_400  # how long done markers (and counters) are kept
    # A claim outlives a crashed run by at most this long; a run longer than it may overlap another
    # delivery's run (the effect must be idempotent anyway). Overridden by app.conf.streams_claim_ttl_s.
    claim_ttl_s: ClassVar[int] = 60
    _lock = threading.Lock()
    _ledgers: ClassVar[dict[str, EffectLedger]] = {}
    _publisher: ClassVar[Publisher | None] = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return self.run(*args, **kwargs)
        try:
            return self._run_once(args, kwargs)
        except redis.RedisError as exc:
            # The ledger is unreachable: hand the message back rather than fail it (a failed acks_late
            # task is acknowledged, and its effect would never happen).
            raise Reject(exc, requeue=True) from exc

    def _run_once(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        request = self.request
        key = self.effect_key()
        ledger = self.ledger()
        if (outcome := ledger.done(key)) is not None:
            log.info("skipping %s[%s]: effect already %s", self.name, request.id, outcome)
            return None
        policy = self.policy()
        deliveries = ledger.count_delivery(key)
        unexplained = deliveries - (int(request.retries or 0) + 1)
        if unexplained > policy.max_redeliveries:
            error = TaskGaveUpError(
                f"{self.name}[{request.id}] was delivered {deliveries} times without "
                f"finishing ({unexplained} redeliveries, bound {policy.max_redeliveries}); "
                "the worker running it was probably lost each time"
            )
            self.give_up(key, "redelivery_limit", error, deliveries=deliveries)
            raise error
        token = claim_token()
        if not ledger.claim(key, token):
            log.info("%s[%s] is running elsewhere; looking again later", self.name, request.id)
            raise self.retry(countdown=ledger.claim_left_s(key))
        try:
            result = self.run(*args, **kwargs)
        except (Retry, Reject, Ignore):  # the body chose its own outcome: not a failure of ours to count
            ledger.release(key, token)
            raise
        except Exception as exc:
            ledger.release(key, token)
            failures = ledger.count_failure(key)
            if failures >= policy.max_attempts:
                self.give_up(key, "retries_exhausted", exc, deliveries=deliveries, attempts=failures)
                raise
            countdown = policy.countdown(failures - 1)
            log.warning(
                "%s[%s] failed (attempt %d of %d); retrying in %.1fs: %s",
                self.name,
                request.id,
                failures,
                policy.max_attempts,
                countdown,
                exc,
            )
            raise self.retry(exc=exc, countdown=countdown) from exc
        # If Redis fails here, the message comes back and reruns the (idempotent) effect.
        ledger.finish(key, token, "ok", str(request.id))
        return result

    # ---- what the message says ----------------------------------------------------------------------

    def header(self, name: str) -> Any:
        headers = self.request.headers or {}
        return headers.get(HEADER_PREFIX + name, getattr(self.request, HEADER_PREFIX + name, None))

    def effect_key(self) -> str:
        """What makes an effect unique: this task and the event it is for (the task id outside a bridge)."""
        return effect_key(self.name, self.header("event_id") or self.request.id)

    def policy(self) -> RetryPolicy:
        return RetryPolicy.from_header(self.header("retry")) or self.retry_policy

    # ---- giving up ----------------------------------------------------------------------------------

    def give_up(self, key: str, reason: str, error: BaseException, *, deliveries: int, attempts: int = 0) -> None:
        """Emit task.failed (when a topic is configured), then mark the effect failed so it never runs again."""
        topic = self.header("failed_topic") or self.failed_topic
        request = self.request
        log.error("%s[%s] gave up (%s): %s", self.name, request.id, reason, error)
        if topic:
            payload = {
                "task_id": str(request.id),
                "task_name": self.name,
                "event_id": self.header("event_id"),
                "route": self.header("route"),
                "reason": reason,
                "attempts": attempts,
                "deliveries": deliveries,
                "error_class": type(error).__name__,
                "error_message": str(error)[:2000],
                "source_topic": self.header("topic"),
                "source_partition": self.header("partition"),
                "source_offset": self.header("offset"),
                "tenant_id": self.header("tenant"),
                "worker": str(request.hostname or socket.gethostname()),
                "failed_at": datetime.now(UTC),
            }
            event_id = str(uuid.uuid5(FAILED_NAMESPACE, f"{request.id}\n{reason}"))
            try:
                self.publisher().publish(topic, payload, event_id=event_id).result(timeout=30)
            except StreamsError as exc:  # Kafka or the registry is down: keep the task, try again later
                log.warning("cannot publish %s to %s yet (%s); retrying in 30s", reason, topic, exc)
                raise self.retry(exc=exc, countdown=30) from exc
        else:
            log.error("no failed_topic configured for %s; the failure is only in this log", self.name)
        self.ledger().finish(key, "-", "failed", str(request.id))

    # ---- per-process clients ------------------------------------------------------------------------

    def ledger(self) -> EffectLedger:
        url = str(self.app.conf.get("streams_effects_url") or self.app.conf.broker_url)
        with self._lock:
            ledger = BridgeTask._ledgers.get(url)
            if ledger is None:
                client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
                claim_ttl = int(self.app.conf.get("streams_claim_ttl_s") or self.claim_ttl_s)
                ledger = BridgeTask._ledgers[url] = EffectLedger(client, ttl_s=self.effect_ttl_s, claim_ttl_s=claim_ttl)
        return ledger

    def publisher(self) -> Publisher:
        from streams.publish import Publisher  # noqa: PLC0415 - only a failing task needs Kafka

        with self._lock:
            if BridgeTask._publisher is None:
                BridgeTask._publisher = Publisher(source=f"celery-worker/{socket.gethostname()}")
            return BridgeTask._publisher


def bridge_task(app: Celery, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`@bridge_task(app, name="billing.generate_invoice_pdf")`: app.task with BridgeTask as the base."""
    decorator: Callable[[Callable[..., Any]], Any] = app.task(base=BridgeTask, **options)
    return decorator
