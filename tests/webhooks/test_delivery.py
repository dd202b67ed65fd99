"""Delivery against a real HTTP receiver on loopback: the CloudEvents message, retries, Retry-After, the
attempt bound, permanent refusals, the circuit breaker and the per-endpoint concurrency limit."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from streams.bridge.retry import RetryPolicy
from streams.webhooks.delivery import Circuit, Deliverer, render, retry_after_s
from streams.webhooks.receiver import Answer, Received, Receiver
from streams.webhooks.routes import CircuitPolicy, WebhookRoute
from streams.webhooks.signing import Signer

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
FAST = RetryPolicy(max_attempts=4, backoff_ms=20, max_backoff_ms=100, jitter=True)
EVENT = {
    "violation_id": "v-1",
    "amount": Decimal("115.50"),
    "raw": b"\x00\x01",
    "detected_at": datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
    "nested": {"severity": "ERROR"},
}
ATTRS = {
    "id": "e-1",
    "source": "billing",
    "type": "compliance.violation",
    "time": "2026-11-01T12:00:00.000Z",
    "tenantid": "acme",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        yield running


def route_to(receiver: Receiver, **changes: object) -> WebhookRoute:
    route = WebhookRoute(
        name="hook",
        topic="compliance.violation",
        url=receiver.url,
        secret="s",  # noqa: S106
        retry=FAST,
        timeout_ms=2_000,
        circuit=CircuitPolicy(failures=100),
    )
    return replace(route, **changes)  # type: ignore[arg-type]


async def deliver(route: WebhookRoute, msg_id: str = "msg_1") -> tuple[bool, int, int | None]:
    deliverer = Deliverer((route,), {"s": Signer(SECRET)}, rng=random.Random(1))
    try:
        headers, body = render(route, EVENT, ATTRS, route.topic)
        result = await deliverer.deliver(route, msg_id, headers, body)
        return result.delivered, result.attempts, result.last.status
    finally:
        await deliverer.aclose()


async def test_binary_mode_sends_ce_headers_and_the_data_as_json(receiver: Receiver) -> None:
    assert await deliver(route_to(receiver)) == (True, 1, 204)
    got = receiver.delivered["msg_1"]
    assert got.verified
    assert json.loads(got.body) == {
        "violation_id": "v-1",
        "amount": "115.50",
        "raw": "AAE=",
        "detected_at": "2026-11-01T12:00:00Z",
        "nested": {"severity": "ERROR"},
    }
    assert got.headers["content-type"] == "application/json"
    assert {k: v for k, v in got.headers.items() if k.startswith("ce-")} == {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "billing",
        "ce-type": "compliance.violation",
        "ce-time": "2026-11-01T12:00:00.000Z",
        "ce-tenantid": "acme",
    }
    assert got.headers["traceparent"] == ATTRS["traceparent"]


async def test_structured_mode_sends_the_whole_cloudevent(receiver: Receiver) -> None:
    assert await deliver(route_to(receiver, mode="structured")) == (True, 1, 204)
    got = receiver.delivered["msg_1"]
    assert got.headers["content-type"] == "application/cloudevents+json"
    event = json.loads(got.body)
    assert {k: event[k] for k in ("specversion", "id", "source", "type", "tenantid", "datacontenttype")} == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "billing",
        "type": "compliance.violation",
        "tenantid": "acme",
        "datacontenttype": "application/json",
    }
    assert event["data"]["amount"] == "115.50"
    assert not any(k.startswith("ce-") for k in got.headers)


async def test_server_errors_are_retried_until_a_2xx(receiver: Receiver) -> None:
    answers = iter([Answer(500), Answer(503), Answer(200)])

    async def flaky(_: Received) -> Answer | None:
        return next(answers)

    receiver.respond = flaky
    assert await deliver(route_to(receiver)) == (True, 3, 200)
    assert receiver.requests == 3


async def test_the_attempt_bound_ends_a_delivery_that_never_succeeds(receiver: Receiver) -> None:
    async def broken(_: Received) -> Answer | None:
        return Answer(502, body=b"upstream down")

    receiver.respond = broken
    assert await deliver(route_to(receiver)) == (False, FAST.max_attempts, 502)
    assert receiver.requests == FAST.max_attempts


async def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    async def refuse(_: Received) -> Answer | None:
        return Answer(422, body=b"unknown invoice")

    receiver.respond = refuse
    assert await deliver(route_to(receiver)) == (False, 1, 422)


async def test_a_time_out_is_retried(receiver: Receiver) -> None:
    calls: list[float] = []

    async def slow_once(_: Received) -> Answer | None:
        calls.append(1)
        return Answer(200, delay_s=1.0) if len(calls) == 1 else Answer(200)

    receiver.respond = slow_once
    assert await deliver(route_to(receiver, timeout_ms=200)) == (True, 2, 200)


async def test_retry_after_is_honoured_for_the_whole_endpoint(receiver: Receiver) -> None:
    arrivals: list[float] = []

    async def limited(got: Received) -> Answer | None:
        arrivals.append(got.at)
        return Answer(429, headers={"Retry-After": "1"}) if len(arrivals) == 1 else Answer(200)

    receiver.respond = limited
    assert await deliver(route_to(receiver)) == (True, 2, 200)
    assert arrivals[1] - arrivals[0] >= 0.95  # the route's own backoff is 20-100 ms; the server asked for 1 s


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


async def test_an_open_circuit_holds_deliveries_without_spending_their_attempts(receiver: Receiver) -> None:
    receiver.down()
    route = route_to(
        receiver,
        retry=RetryPolicy(max_attempts=3, backoff_ms=10, max_backoff_ms=20),
        circuit=CircuitPolicy(failures=2, cooldown_ms=200, max_cooldown_ms=400),
    )
    delivery = asyncio.create_task(deliver(route))
    await asyncio.sleep(1.5)  # 3 attempts 10-20 ms apart would have been spent long ago
    assert not delivery.done()
    await asyncio.to_thread(receiver.up)
    delivered, attempts, status = await asyncio.wait_for(delivery, 10)
    assert (delivered, status) == (True, 204)
    assert attempts == 1  # refused connections opened the breaker but spent no attempt; a probe got through


async def test_concurrency_per_endpoint_is_bounded(receiver: Receiver) -> None:
    current, peak = 0, 0

    async def slow(_: Received) -> Answer | None:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.05)
        current -= 1
        return Answer(200)

    receiver.respond = slow
    route = route_to(receiver, concurrency=3)
    deliverer = Deliverer((route,), {"s": Signer(SECRET)})
    try:
        headers, body = render(route, EVENT, ATTRS, route.topic)
        results = await asyncio.gather(*(deliverer.deliver(route, f"msg_{i}", headers, body) for i in range(12)))
    finally:
        await deliverer.aclose()
    assert all(result.delivered for result in results)
    assert peak == 3
    assert len(receiver.delivered) == 12


async def test_a_cancelled_probe_lets_another_delivery_probe(receiver: Receiver) -> None:
    seen: list[str] = []

    async def fail_then_hang(got: Received) -> Answer | None:
        seen.append(got.webhook_id)
        if len(seen) == 1:
            return Answer(500)  # opens the breaker (failures=1)
        return Answer(200, delay_s=3) if len(seen) == 2 else Answer(200)  # the probe hangs (for the test)

    receiver.respond = fail_then_hang
    route = route_to(
        receiver, timeout_ms=60_000, circuit=CircuitPolicy(failures=1, cooldown_ms=100, max_cooldown_ms=100)
    )
    deliverer = Deliverer((route,), {"s": Signer(SECRET)})
    circuit = deliverer.endpoints[route.url].circuit
    try:
        headers, body = render(route, EVENT, ATTRS, route.topic)
        first = asyncio.create_task(deliverer.deliver(route, "msg_a", headers, body))
        while True:
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert circuit.probing
        first.cancel()  # as a revoked partition's delivery is
        with pytest.raises(asyncio.CancelledError):
            await first
        second = await asyncio.wait_for(deliverer.deliver(route, "msg_b", headers, body), 10)
    finally:
        await deliverer.aclose()
    assert second.delivered
    assert not circuit.is_open


async def test_the_breaker_opens_probes_backs_off_and_closes() -> None:
    now = [100.0]
    circuit = Circuit(CircuitPolicy(failures=3, cooldown_ms=1_000, max_cooldown_ms=3_000), clock=lambda: now[0])
    for _ in range(2):
        circuit.record(failed=True, probe=False)
    assert not circuit.is_open
    circuit.record(failed=True, probe=False)
    assert (circuit.is_open, circuit.open_until) == (True, 101.0)
    now[0] = 101.5  # the cooldown is over: the next request is the probe, the others wait for its outcome
    assert await circuit.admit() is True
    waiting = asyncio.create_task(circuit.admit())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    circuit.record(failed=True, probe=True)  # still down: open again, twice as long
    assert (circuit.open_until, circuit.cooldown_s) == (103.5, 2.0)
    now[0] = 104.0
    assert await asyncio.wait_for(waiting, 1) is True  # the waiter becomes the next probe
    circuit.record(failed=True, probe=True)
    assert circuit.cooldown_s == 3.0  # capped at max_cooldown
    circuit.record(failed=False, probe=False)  # a request that was already under way got through
    assert (circuit.is_open, circuit.failures, circuit.cooldown_s) == (False, 0, 1.0)
    assert await circuit.admit() is False  # closed: no probe
