"""`streams webhooks` against the real broker and registry and a real HTTP receiver on loopback: routed events
arrive signed, refused and undecodable ones are parked with the HTTP outcome, offsets follow what is settled."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Producer
from rich.console import Console
from standardwebhooks.webhooks import Webhook

from streams.demo.webhooks import run_webhooks_until, show_webhooks
from streams.local.processes import free_port
from streams.schemas.registry_client import RegistryClient
from streams.webhooks.commands import load_checked
from streams.webhooks.receiver import Answer, Received, Receiver
from streams.webhooks.runner import RunnerOptions, WebhookRunner
from streams.webhooks.signing import webhook_id
from tests.bridge.harness import violation_event, wait_for
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.webhooks_harness import SECRET, headers_of, make_hooks_world

if TYPE_CHECKING:
    from collections.abc import Callable

ROUTES = """\
errors:
  topic: "{topic}"
  where: {{severity: ERROR}}
  url: "{url}"
  secret: partner
  retry: {{max_attempts: 3, backoff: 50ms, max_backoff: 200ms}}
warnings:
  topic: "{topic}"
  where: {{severity: WARNING}}
  url: "{url}"
  mode: structured
  secret: partner
  retry: {{max_attempts: 3, backoff: 50ms, max_backoff: 200ms}}
"""


async def refuse_odd_warnings(got: Received) -> Answer | None:
    """Warnings whose message ends in an odd number are refused for good (422); everything else is taken."""
    if got.headers.get("content-type") == "application/cloudevents+json":
        message = json.loads(got.body)["data"]["message"]
        if int(message.rstrip(")").rsplit("(", 1)[1]) % 2:
            return Answer(422, body=b'{"error": "unknown invoice"}')
    return None


def test_routed_events_arrive_signed_and_refused_or_bad_records_are_parked(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Receiver(SECRET, respond=refuse_odd_warnings) as receiver:
        world = make_hooks_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES, url=receiver.url)
        events = [violation_event(i, "ERROR" if i % 3 else "WARNING") for i in range(60)]
        ids: dict[str, str] = {}
        with world.publisher() as publisher:
            for event in events:
                ids[event["violation_id"]] = publisher.publish(world.topic, event).result(timeout=30).event_id
        produce_garbage(kafka_bootstrap, world.topic)

        catalog, config = load_checked(world.settings())
        runner = WebhookRunner(world.settings(), catalog, config, RunnerOptions(batch_size=16))
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            ends = world.end_offsets()
            wait_for(lambda: world.committed() == ends, 60, "every offset committed")
        finally:
            runner.stop()
            thread.join(30)

    errors = [e for e in events if e["severity"] == "ERROR"]
    warnings = [e for e in events if e["severity"] == "WARNING"]
    refused = [e for e in warnings if int(e["message"].rstrip(")").rsplit("(", 1)[1]) % 2]
    taken = [e for e in warnings if e not in refused]
    expected = {webhook_id("errors", ids[e["violation_id"]]) for e in errors} | {
        webhook_id("warnings", ids[e["violation_id"]]) for e in taken
    }
    assert set(receiver.delivered) == expected
    assert receiver.bad_signatures == []
    for msg_id, got in receiver.delivered.items():  # the spec's reference library agrees
        Webhook(SECRET).verify(got.body, got.headers)
        if got.headers["content-type"] == "application/json":
            body = json.loads(got.body)
            assert got.headers["ce-id"] == ids[body["violation_id"]]
            assert msg_id == webhook_id("errors", got.headers["ce-id"])
            assert body["severity"] == "ERROR"

    parked = world.dead_letters()
    assert len(parked) == len(refused) + 1
    by_class: dict[str, list[dict[str, str]]] = {}
    for message in parked:
        headers = headers_of(message)
        by_class.setdefault(headers["dlq_error_class"], []).append(headers)
        assert headers["dlq_agent"] == "webhooks"
        assert SECRET not in json.dumps(headers)
    assert len(by_class["UndecodableRecordError"]) == 1
    assert by_class["UndecodableRecordError"][0]["dlq_partition"] == "0"
    refusals = by_class["DeliveryFailedError"]
    assert {h["ce_id"] for h in refusals} == {ids[e["violation_id"]] for e in refused}
    for headers in refusals:
        assert (headers["dlq_route"], headers["dlq_http_status"], headers["dlq_attempts"]) == ("warnings", "422", "1")
        assert headers["dlq_http_body"] == '{"error": "unknown invoice"}'
        assert "refused; last: HTTP 422" in headers["dlq_error_message"]
    logged = capsys.readouterr()
    assert SECRET not in logged.out + logged.err  # nor in anything the runner logged
    assert runner.delivered == len(expected)
    assert_metrics(runner, world.topic, len(errors), len(refused))


def produce_garbage(bootstrap: str, topic: str) -> None:
    """A record no schema decodes (magic byte, a schema id, then junk) on partition 0."""
    garbage = Producer({"bootstrap.servers": bootstrap})
    garbage.produce(topic, key=b"k", value=b"\x00\x00\x00\x00\x07 not avro", partition=0)
    garbage.flush(10)


def assert_metrics(runner: WebhookRunner, topic: str, delivered: int, refused: int) -> None:
    sample = runner.metrics.registry.get_sample_value
    assert sample("streams_webhooks_deliveries_total", {"route": "errors", "outcome": "delivered"}) == delivered
    assert sample("streams_webhooks_deliveries_total", {"route": "warnings", "outcome": "dead_lettered"}) == refused
    assert sample("streams_webhooks_attempts_total", {"route": "warnings", "result": "4xx"}) == refused
    assert sample("streams_webhooks_records_total", {"topic": topic, "outcome": "dead_lettered"}) == 1


def test_an_unreachable_registry_holds_records_instead_of_parking_them(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> None:
    with Receiver(SECRET) as receiver:
        world = make_hooks_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES, url=receiver.url)
        with world.publisher() as publisher:
            for i in range(12):
                publisher.publish(world.topic, violation_event(i, "ERROR")).result(timeout=30)
        catalog, config = load_checked(world.settings())

        def run(registry: RegistryClient, until: Callable[[WebhookRunner], bool]) -> WebhookRunner:
            runner = WebhookRunner(
                world.settings(), catalog, config, RunnerOptions(registry_retry_s=0.2), registry=registry
            )
            thread = threading.Thread(target=runner.run, args=(lambda: until(runner),), daemon=True)
            thread.start()
            thread.join(90)
            return runner

        started = time.monotonic()
        down = run(
            RegistryClient(f"http://127.0.0.1:{free_port()}", timeout=1.0), lambda _: time.monotonic() - started > 6
        )
        assert (down.delivered, down.completed_records, receiver.requests) == (0, 0, 0)
        assert world.committed() == dict.fromkeys(world.end_offsets(), 0)
        assert world.dead_letters() == []
        up = run(RegistryClient(registry_url), lambda r: r.completed_records >= 12)
        assert (up.delivered, len(receiver.delivered)) == (12, 12)


def test_the_demo_step_prints_what_its_receiver_got(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/compliance"
    routes = 'compliance:\n  topic: "{topic}"\n  where: {{severity: ERROR}}\n  url: "{url}"\n  secret: partner\n'
    world = make_hooks_world(tmp_path, unique_name, kafka_bootstrap, registry_url, routes, url=url)
    events = [violation_event(i, "ERROR" if i % 3 else "WARNING", tenant="demo-run") for i in range(9)]
    with world.publisher() as publisher:
        for event in [*events, violation_event(99, "ERROR", tenant="another-run")]:
            publisher.publish(world.topic, event).result(timeout=30)
    monkeypatch.setenv("STREAMS_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("STREAMS_SCHEMA_REGISTRY_URL", registry_url)
    settings = world.settings().model_copy(update={"webhook_secrets": None})  # the demo makes its own secret
    (tmp_path / "data").mkdir(exist_ok=True)

    report = run_webhooks_until(settings, world.catalog(), {"demo-run"}, 6, timeout=90)
    assert (report.route, report.url, report.received, report.verified) == ("compliance", url, 6, 6)
    console = Console(record=True, width=200)
    show_webhooks(console, report)
    text = console.export_text()
    assert "received 6 signed CloudEvents, 6 signatures verified" in text
    assert all(json.loads(got.body)["severity"] == "ERROR" for got in report.samples)
    assert sum("BR-KSA-39" in line for line in text.splitlines()) == len(report.samples) == 3
