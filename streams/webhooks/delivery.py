"""Delivering one event to one endpoint: the CloudEvents HTTP request, signed attempts, retries, circuit breaker.

Retries back off exponentially with jitter and honour Retry-After; each endpoint (URL) has a concurrency limit
and a circuit breaker shared by every route that posts to it. Kafka offsets are the runner's business.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from streams.webhooks.signing import Signer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from streams.webhooks.routes import CircuitPolicy, WebhookRoute

__all__ = ["Attempt", "Circuit", "Deliverer", "DeliveryResult", "Endpoint", "render", "retry_after_s"]

BODY_EXCERPT_BYTES = 512  # of an endpoint's answer, kept for logs and dead-letter headers
# Answers worth another attempt: time-out, too early, rate limited, and every server error. Any other 3xx/4xx
# says the request itself is wrong (or the endpoint refuses it); sending it again cannot help, so it is parked.
RETRIABLE_STATUS = frozenset({408, 425, 429})
CE_PREFIX = "ce_"
UNREACHED = frozenset({"connect", "connect-timeout"})  # attempts whose request never reached the endpoint
MAX_RETRY_AFTER_S = 300.0
USER_AGENT = "streams-webhooks/1"
log = structlog.get_logger("streams.webhooks")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST got: an HTTP status (None when no answer: time-out, refused, reset) and why."""

    status: int | None
    error: str | None = None  # "timeout", "connect", ... when there was no answer
    body: bytes = b""
    retry_after_s: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retriable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in RETRIABLE_STATUS

    @property
    def label(self) -> str:
        """For metrics: 2xx, 4xx, 5xx, 429, timeout, connect, ..."""
        if self.status is None:
            return self.error or "error"
        return "429" if self.status == 429 else f"{self.status // 100}xx"

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else f"no answer ({self.error})"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The last attempt of a delivery, how many were made, and whether the endpoint took the event."""

    delivered: bool
    attempts: int
    last: Attempt


class Circuit:
    """One endpoint's breaker: closed; open after `failures` failed attempts in a row; then one probe at a time
    (half-open) until one succeeds. While it is open, deliveries wait here and spend no attempt."""

    def __init__(self, policy: CircuitPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.failures = 0
        self.open_until = 0.0  # 0: closed
        self.cooldown_s = policy.cooldown_ms / 1000
        self.probing = False
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self.open_until > 0

    async def admit(self) -> bool:
        """Wait until a request may go; True when it is the half-open probe (report it with `record`)."""
        while self.open_until:
            changed = self._changed
            wait = self.open_until - self.clock()
            if wait <= 0 and not self.probing:
                self.probing = True
                return True
            try:
                await asyncio.wait_for(changed.wait(), timeout=wait if wait > 0 else None)
            except TimeoutError:
                continue
        return False

    def abandon(self) -> None:
        """The probe was cancelled before it had an outcome: let the next waiting delivery probe."""
        self.probing = False
        self._changed.set()
        self._changed = asyncio.Event()

    def record(self, *, failed: bool, probe: bool) -> None:
        """The outcome of one attempt (`failed`: no answer or a server error)."""
        if probe:
            self.probing = False
        if not failed:
            self.failures, self.open_until = 0, 0.0
            self.cooldown_s = self.policy.cooldown_ms / 1000
        else:
            self.failures += 1
            if probe:  # still down: stay open, longer each time
                self.cooldown_s = min(self.cooldown_s * 2, self.policy.max_cooldown_ms / 1000)
                self.open_until = self.clock() + self.cooldown_s
            elif not self.open_until and self.failures >= self.policy.failures:
                self.open_until = self.clock() + self.cooldown_s
        self._changed.set()
        self._changed = asyncio.Event()


class Endpoint:
    """One URL: at most `concurrency` requests at once, a circuit breaker, and a not-before time set by
    Retry-After (a rate limit holds every delivery to the endpoint, not only the one that was told)."""

    def __init__(self, url: str, concurrency: int, circuit: CircuitPolicy) -> None:
        self.url = url
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.circuit = Circuit(circuit)
        self.not_before = 0.0

    async def ready(self) -> bool:
        """Wait for the rate limit and the breaker; True when this attempt is the breaker's probe."""
        while True:  # not_before may move on while we sleep (another delivery was told to wait longer)
            wait = self.not_before - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        return await self.circuit.admit()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: JSON numbers are doubles to most readers, amounts must not round
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def render(
    route: WebhookRoute, data: Mapping[str, Any], attributes: Mapping[str, str], topic: str
) -> tuple[dict[str, str], bytes]:
    """The CloudEvents HTTP message of one event: (headers, body), before signing.

    `attributes` are the record's `ce_*` Kafka headers without the prefix (the Kafka binding's names). Binary
    mode puts them in `ce-*` headers and the data, as JSON, in the body; structured mode sends the whole event as
    `application/cloudevents+json`. The W3C trace context travels as `traceparent` either way. Decimals are
    JSON strings (exact), timestamps RFC 3339 in UTC, bytes base64.
    """
    attrs = {"specversion": "1.0", "type": topic, **attributes}
    traceparent = attrs.pop("traceparent", None)
    headers: dict[str, str] = {} if traceparent is None else {"traceparent": traceparent}
    if route.mode == "structured":
        event: dict[str, Any] = {**attrs, "datacontenttype": "application/json", "data": data}
        headers["content-type"] = "application/cloudevents+json"
        return headers, orjson.dumps(event, default=_json_default, option=orjson.OPT_UTC_Z)
    headers.update({f"ce-{name}": value for name, value in attrs.items()})
    headers["content-type"] = "application/json"
    return headers, orjson.dumps(data, default=_json_default, option=orjson.OPT_UTC_Z)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Deliverer:
    """Posts events with retries; one per runner, sharing one HTTP connection pool and one endpoint per URL."""

    def __init__(
        self,
        routes: tuple[WebhookRoute, ...],
        signers: Mapping[str, Signer],
        *,
        rng: random.Random | None = None,
        on_attempt: Callable[[WebhookRoute, Attempt], None] | None = None,
    ) -> None:
        self.signers = signers
        self.endpoints: dict[str, Endpoint] = {}
        for route in routes:  # routes sharing a URL share its limit: the smallest any of them asks for
            known = self.endpoints.get(route.url)
            if known is None or route.concurrency < known.concurrency:
                self.endpoints[route.url] = Endpoint(route.url, route.concurrency, route.circuit)
        self._connections = sum(route.concurrency for route in routes) or 1
        self._session: aiohttp.ClientSession | None = None
        self.rng = rng or random.SystemRandom()
        self.on_attempt = on_attempt

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(
        self, route: WebhookRoute, msg_id: str, headers: Mapping[str, str], body: bytes
    ) -> DeliveryResult:
        """Attempts until the endpoint answers 2xx, refuses for good, or the route's attempts are spent."""
        endpoint = self.endpoints[route.url]
        signer = self.signers[route.secret]
        policy = route.retry
        spent = tries = 0
        while True:
            probe = await endpoint.ready()
            try:
                async with endpoint.slots:
                    attempt = await self.post(route, {**headers, **signer.headers(msg_id, body)}, body)
            except asyncio.CancelledError:  # its partition was revoked: another delivery must probe instead
                if probe:
                    endpoint.circuit.abandon()
                raise
            tries += 1
            self._record(endpoint, attempt, probe)
            if self.on_attempt is not None:
                self.on_attempt(route, attempt)
            if attempt.ok:
                return DeliveryResult(True, spent + 1, attempt)
            # A connection that never reached the endpoint says nothing about the event: it feeds the breaker
            # (an endpoint that is down holds its deliveries) but spends no attempt, so an outage parks nothing.
            if attempt.error not in UNREACHED:
                spent += 1
            if not attempt.retriable or spent >= policy.max_attempts:
                return DeliveryResult(False, spent, attempt)
            delay = policy.countdown(min(tries, spent + 1) - 1, self.rng)
            if attempt.retry_after_s is not None:
                # Honoured for the whole endpoint, up to the longer of the route's longest backoff and 5 minutes.
                asked = min(attempt.retry_after_s, max(policy.max_backoff_ms / 1000, MAX_RETRY_AFTER_S))
                endpoint.not_before = max(endpoint.not_before, time.monotonic() + asked)
                delay = max(delay, asked)
            await asyncio.sleep(delay)

    @staticmethod
    def _record(endpoint: Endpoint, attempt: Attempt, probe: bool) -> None:
        was_open = endpoint.circuit.is_open
        endpoint.circuit.record(failed=attempt.status is None or attempt.status >= 500, probe=probe)
        if endpoint.circuit.is_open != was_open:
            host = urlsplit(endpoint.url).hostname  # the host only: a path or query may carry a token
            if was_open:
                log.info("endpoint answers again; circuit closed", endpoint=host)
            else:
                log.warning(
                    "endpoint failing; circuit open",
                    endpoint=host,
                    failures=endpoint.circuit.failures,
                    cooldown_s=endpoint.circuit.cooldown_s,
                    last=attempt.describe(),
                )

    async def post(self, route: WebhookRoute, headers: Mapping[str, str], body: bytes) -> Attempt:
        if self._session is None:  # made on the running loop, as aiohttp wants
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, limit_per_host=0),
                skip_auto_headers=("User-Agent",),
                headers={"user-agent": USER_AGENT},
            )
        started = time.perf_counter()
        try:
            # No redirects: a redirect is a failure (Standard Webhooks); the URL should be updated instead.
            async with self._session.post(
                route.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=route.timeout_ms / 1000),
            ) as response:
                excerpt = await response.content.read(BODY_EXCERPT_BYTES)
                wait = retry_after_s(response.headers.get("retry-after")) if response.status in {429, 503} else None
                return Attempt(response.status, None, excerpt, wait, time.perf_counter() - started)
        except aiohttp.ConnectionTimeoutError:
            return Attempt(None, "connect-timeout", seconds=time.perf_counter() - started)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return Attempt(None, "timeout", seconds=time.perf_counter() - started)
        except aiohttp.ClientConnectorError:
            return Attempt(None, "connect", seconds=time.perf_counter() - started)
        except aiohttp.ClientError as exc:  # reset, protocol errors: no answer we can trust
            return Attempt(None, type(exc).__name__, seconds=time.perf_counter() - started)
