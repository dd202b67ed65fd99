"""Every event delivered (2xx) or parked after the attempt bound, through a flaky receiver and kill -9s.

The receiver on loopback answers 500 to 30% of requests, times out on some, answers 429 with Retry-After on
some, and is down for 10 s; the runner (a child process) is kill -9'd three times. After each kill the group's
committed offsets are checked: every record below them got a 2xx or is in the DLQ (the bridge's offset rule).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from standardwebhooks.webhooks import Webhook

from streams.webhooks.receiver import Answer, Received, Receiver
from streams.webhooks.signing import webhook_id
from tests.bridge.harness import running, violation_event, wait_for
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.webhooks_harness import SECRET, HooksWorld, headers_of, make_hooks_world

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ROUTE = "partner"
ATTEMPTS = 5
TIMEOUT_S = 1.0
ROUTES = f"""\
{ROUTE}:
  topic: "{{topic}}"
  url: "{{url}}"
  secret: partner
  timeout: {int(TIMEOUT_S * 1000)}ms
  concurrency: 8
  retry: {{{{max_attempts: {ATTEMPTS}, backoff: 100ms, max_backoff: 1s}}}}
  circuit: {{{{failures: 8, cooldown: 500ms, max_cooldown: 2s}}}}
"""
EVENTS = 400
CHUNK, PACE_S = 10, 0.4  # the stream lasts about 16 s


def poison(event: dict[str, Any]) -> bool:
    """Every 50th event is one the receiver always fails (500): it must be parked after the attempt bound."""
    return int(event["message"].rstrip(")").rsplit("(", 1)[1]) % 50 == 7


class Flaky:
    """30% 500, 6% no answer within the time-out, 6% 429 with Retry-After: 1, else 204; poison events: 500."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.answers: Counter[str] = Counter()

    async def __call__(self, got: Received) -> Answer | None:
        if poison(json.loads(got.body)):
            self.answers["poison"] += 1
            return Answer(500, body=b"poison: this event always fails")
        roll = self.rng.random()
        if roll < 0.30:
            self.answers["500"] += 1
            return Answer(500, body=b"flaky: internal error")
        if roll < 0.36:
            self.answers["timeout"] += 1
            return Answer(503, delay_s=TIMEOUT_S + 0.5)
        if roll < 0.42:
            self.answers["429"] += 1
            return Answer(429, headers={"Retry-After": "1"}, body=b"slow down")
        self.answers["2xx"] += 1
        return None


class Stream(threading.Thread):
    def __init__(self, world: HooksWorld, events: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.world, self.events = world, events
        self.ids: dict[str, str] = {}  # violation id -> ce_id
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.world.publisher() as publisher:
                for start in range(0, len(self.events), CHUNK):
                    chunk = self.events[start : start + CHUNK]
                    futures = [publisher.publish(self.world.topic, event) for event in chunk]
                    for event, future in zip(chunk, futures, strict=True):
                        self.ids[event["violation_id"]] = future.result(timeout=30).event_id
                    time.sleep(PACE_S)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc


@pytest.mark.timeout(420)
def test_every_event_is_delivered_or_parked_through_faults_and_kills(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> None:
    flaky = Flaky(seed=16)
    with Receiver(SECRET, respond=flaky) as receiver:
        world = make_hooks_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES, url=receiver.url)
        with running(world):
            runner = world.runner().start()
            events = [violation_event(i, "ERROR" if i % 2 else "WARNING") for i in range(EVENTS)]
            stream = Stream(world, events)
            stream.start()
            checked = 0
            for kill, threshold in enumerate((60, 150, 230), start=1):

                def delivered(t: int = threshold) -> bool:
                    return len(receiver.delivered) >= t

                wait_for(delivered, 90, f"{threshold} deliveries, kill {kill}")
                runner.kill9()
                checked += assert_offset_rule(world, receiver)
                runner.start()
            wait_for(lambda: len(receiver.delivered) >= 280, 90, "280 deliveries before the outage")
            receiver.down()
            time.sleep(10)
            receiver.up()
            stream.join(timeout=120)
            assert stream.error is None, stream.error
            assert len(stream.ids) == EVENTS
            ends = world.end_offsets()
            wait_for(lambda: world.committed() == ends, 180, "every offset committed", 0.5)
            assert runner.alive()
            assert checked > 0  # the rule was exercised: some offsets were committed before a kill

        parked = {headers["ce_id"]: headers for headers in map(headers_of, world.dead_letters())}
        delivered_ids = set(receiver.delivered)
        outcome: Counter[str] = Counter()
        for ce_id in stream.ids.values():
            got, dlq = webhook_id(ROUTE, ce_id) in delivered_ids, ce_id in parked
            outcome["delivered" if got else "parked" if dlq else "lost"] += 1
            assert got or dlq, f"event {ce_id} was neither delivered nor parked"
        for headers in parked.values():
            assert headers["dlq_attempts"] == str(ATTEMPTS)
            assert headers["dlq_route"] == ROUTE
            assert headers["dlq_agent"] == "webhooks"
            assert headers["dlq_http_status"] in {"500", "429", ""}
            assert headers["dlq_http_status"] or headers["dlq_http_error"]  # no answer: why (timeout, reset)
            assert SECRET not in str(headers)
        assert receiver.bad_signatures == []
        for received in receiver.delivered.values():
            Webhook(SECRET).verify(received.body, received.headers)
        duplicates = receiver.answered_2xx - len(receiver.delivered)
        print(  # noqa: T201
            f"\nwebhook faults: {dict(outcome)}; receiver answers {dict(flaky.answers)}; "
            f"{duplicates} duplicate deliveries (kill -9 redeliveries); offset rule checked on {checked} records"
        )
        assert outcome["delivered"] + outcome["parked"] == EVENTS
        poisoned = {stream.ids[e["violation_id"]] for e in events if poison(e)}
        assert poisoned <= set(parked)
        for ce_id in poisoned:
            assert webhook_id(ROUTE, ce_id) not in delivered_ids
            assert (parked[ce_id]["dlq_http_status"], parked[ce_id]["dlq_http_body"]) == (
                "500",
                "poison: this event always fails",
            )
        assert min(flaky.answers.values()) > 0  # every kind of failure happened


def assert_offset_rule(world: HooksWorld, receiver: Receiver) -> int:
    """Right after a kill -9: every record below the committed offsets got a 2xx or sits in the DLQ."""
    committed = world.committed()
    records = world.records(sum(committed.values()))
    parked = {(h["dlq_partition"], h["dlq_offset"]) for h in map(headers_of, world.dead_letters())}
    checked = 0
    for message in records:
        partition, offset = message.partition() or 0, message.offset() or 0
        if offset >= committed.get(partition, 0):
            continue
        ce_id = headers_of(message)["ce_id"]
        assert webhook_id(ROUTE, ce_id) in receiver.delivered or (str(partition), str(offset)) in parked, (
            f"offset {offset} of partition {partition} committed but neither delivered nor parked"
        )
        checked += 1
    return checked
