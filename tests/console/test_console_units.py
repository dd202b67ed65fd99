"""The console's rules without a cluster: passwords, permissions, CSRF and role refusals, masking, input parsing,
the redrive prefix rule, and uploads that are not bundles."""

from __future__ import annotations

import base64
import json
import zipfile
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from itsdangerous import TimestampSigner
from pydantic import SecretStr

from streams.catalog import load_catalog
from streams.console.auth import allowed, authenticate, csrf_matches, hash_password
from streams.console.evidence_jobs import verify_upload
from streams.console.kafka_views import MASK, ConsoleInputError, DeadLetterFilter, mask, parse_browse, parse_dlq_filter
from streams.console.settings import ConsoleSettings, User
from streams.dlq import _prefix_done
from streams.errors import ConfigError
from tests.integration.worker_harness import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from starlette.testclient import TestClient

SECRET = "s" * 40


def users() -> dict[str, User]:
    return {
        name: User(name=name, role=role, password_hash=SecretStr(hash_password(name + "-pw", rounds=4)))
        for name, role in (("vera", "viewer"), ("otto", "operator"), ("aude", "auditor"))
    }


def test_passwords_and_permissions() -> None:
    known = users()
    assert authenticate(known, "otto", "otto-pw") is known["otto"]
    assert authenticate(known, "otto", "vera-pw") is None
    assert authenticate(known, "nobody", "otto-pw") is None
    assert allowed("operator", "redrive")
    assert not allowed("viewer", "redrive")
    assert not allowed("auditor", "redrive")
    assert allowed("auditor", "unmasked_pii")
    assert not allowed("operator", "unmasked_pii")
    assert not allowed(None, "evidence")
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd")
    assert not csrf_matches("abc", None)
    assert not csrf_matches(None, None)
    with pytest.raises(ConfigError, match="1 to 72 bytes"):
        hash_password("x" * 73)


def test_settings_refuse_malformed_users_and_short_keys() -> None:
    with pytest.raises(ConfigError, match="STREAMS_CONSOLE_USERS must be a JSON object") as caught:
        ConsoleSettings(users=SecretStr('{"ana": {"role": "root", "password_hash": "$2b$secret"}}')).user_map()
    assert "$2b$secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="32 or more"):
        ConsoleSettings(session_secret=SecretStr("short")).secret_key()


def test_masking_follows_dotted_paths_and_arrays() -> None:
    value: dict[str, Any] = {
        "buyer": {"name": "Gulf Retail", "vat_number": None, "city": "Riyadh"},
        "lines": [{"note": "a"}],
        "user_id": "u-1",
    }
    masked = mask(value, ("buyer.name", "buyer.vat_number", "lines.note", "user_id", "absent.field"))
    assert masked == {
        "buyer": {"name": MASK, "vat_number": None, "city": "Riyadh"},
        "lines": [{"note": MASK}],
        "user_id": MASK,
    }
    assert value["buyer"]["name"] == "Gulf Retail", "the decoded record itself is left alone"


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"topic": "nope.nope"}, 404, "is not in the catalog"),
        ({"topic": "invoice.created", "partition": "x"}, 400, "partition 'x' is not a whole number"),
        ({"topic": "invoice.created", "partition": "99"}, 400, "partition 99 does not exist"),
        ({"topic": "invoice.created", "offset": "3"}, 400, "an offset needs a partition"),
        ({"topic": "invoice.created", "from": "tuesday"}, 400, "is neither an ISO-8601 time"),
        ({"topic": "invoice.created", "from": "2026-12-07T10:00:00"}, 400, "has no timezone"),
        ({"topic": "invoice.created", "from": "-1h", "to": "-2h"}, 400, "must be after"),
        ({"topic": "invoice.created", "limit": "5000"}, 400, "limit must be between 1 and 1000"),
    ],
)
def test_bad_message_queries_are_named(params: dict[str, str], status: int, message: str) -> None:
    catalog = load_catalog(ROOT / "topics.yaml")
    with pytest.raises(ConsoleInputError, match=message) as caught:
        parse_browse(params, catalog, 1000)
    assert caught.value.status == status


def test_a_good_message_query() -> None:
    query = parse_browse(
        {"topic": "invoice.created", "partition": "1", "offset": "7", "key": "acme", "limit": "20"},
        load_catalog(ROOT / "topics.yaml"),
        1000,
    )
    assert (query.partition, query.offset, query.key, query.limit) == (1, 7, "acme", 20)


def test_dead_letter_filters() -> None:
    assert parse_dlq_filter({}) == DeadLetterFilter()
    with pytest.raises(ConsoleInputError, match="both its partition and its offset"):
        parse_dlq_filter({"partition": "1"})
    one = parse_dlq_filter({"partition": "1", "offset": "4"})
    letter = {
        "dlq_partition": 1,
        "dlq_offset": 4,
        "error_class": "ValueError",
        "agent": "validation",
        "error_message": "Bad VAT",
    }
    assert one.matches(letter)
    assert not one.matches({**letter, "dlq_offset": 5})
    assert parse_dlq_filter({"text": "vat"}).matches(letter)
    assert not parse_dlq_filter({"error_class": "KeyError"}).matches(letter)


def message(partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(partition=lambda: partition, offset=lambda: offset)


def test_a_partial_redrive_marks_done_only_the_leading_run() -> None:
    waiting = [message(0, 3), message(0, 4), message(0, 5), message(1, 0), message(1, 1)]
    assert _prefix_done(waiting, waiting) == {0: 6, 1: 2}
    assert _prefix_done([waiting[0]], waiting) == {0: 4}
    assert _prefix_done([waiting[1]], waiting) == {}, "offset 3 was skipped: it stays pending, so 4 does too"
    assert _prefix_done([waiting[0], waiting[2], waiting[3]], waiting) == {0: 4, 1: 1}


def test_uploads_that_are_not_bundles(tmp_path: Path) -> None:
    with pytest.raises(ConsoleInputError, match="choose a bundle"):
        verify_upload(b"", None, tmp_path)
    with pytest.raises(ConsoleInputError, match=r"not a \.zip archive"):
        verify_upload(b"hello", None, tmp_path)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("notes.txt", "hi")
    (tmp_path / "a").mkdir()
    with pytest.raises(ConsoleInputError, match=r"no manifest\.json"):
        verify_upload(empty.read_bytes(), None, tmp_path / "a")
    escaping = tmp_path / "escape.zip"
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../../outside.txt", "x")
    (tmp_path / "b").mkdir()
    with pytest.raises(ConsoleInputError, match="points outside it"):
        verify_upload(escaping.read_bytes(), None, tmp_path / "b")
    assert not (tmp_path / "outside.txt").exists()


def session_cookie(data: dict[str, object]) -> str:
    """A session cookie as Starlette's SessionMiddleware signs it (itsdangerous, base64 JSON)."""
    return TimestampSigner(SECRET).sign(base64.b64encode(json.dumps(data).encode())).decode()


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from starlette.testclient import TestClient  # noqa: PLC0415

    from streams.console.app import create_app  # noqa: PLC0415
    from streams.settings import Settings  # noqa: PLC0415

    monkeypatch.setenv(
        "STREAMS_CONSOLE_USERS",
        json.dumps(
            {
                name: {"role": user.role, "password_hash": user.password_hash.get_secret_value()}
                for name, user in users().items()
            }
        ),
    )
    monkeypatch.setenv("STREAMS_CONSOLE_SESSION_SECRET", SECRET)
    # Nothing listens here: every request below is refused before the console would touch Kafka.
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",
        schema_registry_url="http://127.0.0.1:9",
        catalog_path=ROOT / "topics.yaml",
        data_dir=tmp_path,
    )
    with TestClient(
        create_app(settings, ConsoleSettings()), base_url="https://localhost", follow_redirects=False
    ) as test_client:
        yield test_client


def test_the_server_refuses_what_a_role_or_a_token_does_not_allow(client: TestClient) -> None:
    assert client.get("/messages").status_code == 303, "no session: to the login page"
    assert client.post("/dlq/redrive", data={"topic": "invoice.created"}).status_code == 303
    client.cookies.set(
        "streams_console", session_cookie({"user": {"name": "vera", "role": "viewer"}, "csrf": "token-1"})
    )
    refused = client.post("/dlq/redrive", data={"topic": "invoice.created", "csrf": "token-1"})
    assert refused.status_code == 403
    assert "role viewer may not redrive" in refused.text
    assert client.post("/evidence/build", headers={"X-CSRF-Token": "token-1"}).status_code == 403
    client.cookies.set(
        "streams_console", session_cookie({"user": {"name": "otto", "role": "operator"}, "csrf": "token-2"})
    )
    forged = client.post("/dlq/redrive", data={"topic": "invoice.created"})
    assert forged.status_code == 403
    assert "CSRF token is missing or wrong" in forged.text
    assert client.post("/dlq/redrive", data={"topic": "invoice.created", "csrf": "token-1"}).status_code == 403
    # A role in the cookie that the settings do not give the user is no session at all.
    client.cookies.set("streams_console", session_cookie({"user": {"name": "vera", "role": "auditor"}, "csrf": "t"}))
    assert client.get("/audit").status_code == 303
    metrics = client.get("/metrics").text
    assert 'streams_console_actions_total{action="redrive",outcome="forbidden"}' in metrics
    assert 'streams_console_actions_total{action="redrive",outcome="csrf_refused"}' in metrics


def test_agent_rates_come_from_the_workers_metrics() -> None:
    from streams.console.cluster_views import agent_totals  # noqa: PLC0415

    text = """# HELP streams_agent_events_total Events handled, by agent and outcome.
# TYPE streams_agent_events_total counter
streams_agent_events_total{agent="validation",outcome="ok"} 120.0
streams_agent_events_total{agent="validation",outcome="dlq"} 3.0
streams_agent_events_total{agent="audit",outcome="ok"} 40.0
streams_agent_events_created{agent="audit",outcome="ok"} 1.7e9
"""
    assert agent_totals(text) == {"validation": 123.0, "audit": 40.0}


def test_the_command_refuses_to_start_without_users_or_a_session_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from streams.cli import main  # noqa: PLC0415

    monkeypatch.delenv("STREAMS_CONSOLE_USERS", raising=False)
    monkeypatch.setenv("STREAMS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setattr("streams.settings.Settings.check_kafka_reachable", lambda *_, **__: None)
    result = CliRunner().invoke(main, ["console", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("error: STREAMS_CONSOLE_USERS is not set")
    monkeypatch.setenv("STREAMS_CONSOLE_USERS", json.dumps({"ana": {"role": "viewer", "password_hash": "x"}}))
    monkeypatch.delenv("STREAMS_CONSOLE_SESSION_SECRET", raising=False)
    result = CliRunner().invoke(main, ["console", "--port", "0"])
    assert result.exit_code == 1
    assert "STREAMS_CONSOLE_SESSION_SECRET must be set to 32 or more" in result.output


def _bridge_metrics_text() -> str:
    """What a bridge's /metrics serves: the bridge's own BridgeMetrics, rendered by prometheus_client."""
    from prometheus_client import generate_latest  # noqa: PLC0415

    from streams.bridge.metrics import BridgeMetrics  # noqa: PLC0415

    metrics = BridgeMetrics()
    metrics.paused.set(3)
    metrics.redis_up.set(0)
    metrics.redelivered.inc(2)
    metrics.published.labels("pdf").inc(10)
    metrics.failed.labels("pdf").inc(4)
    metrics.confirmed.labels("pdf", "invoice-pdf").inc(5)
    metrics.confirmed.labels("pdf", "invoice-pdf-eu").inc(1)
    metrics.queue_depth.labels("notify").set(7)
    return generate_latest(metrics.registry).decode()


def test_bridge_and_relay_metrics_are_summarized() -> None:
    from prometheus_client import generate_latest  # noqa: PLC0415

    from streams.console.cluster_views import bridge_summary, process_checks, relay_summary  # noqa: PLC0415
    from streams.outbox.metrics import OutboxMetrics  # noqa: PLC0415

    bridge = bridge_summary(_bridge_metrics_text())
    assert bridge == {
        "paused": 3,
        "redis_up": False,
        "redelivered": 2,
        "queues": {"pdf": {"pushed": 10, "retries": 4, "confirmed": 6}, "notify": {"depth": 7}},
    }
    relay_metrics = OutboxMetrics()
    relay_metrics.pending.set(5)
    relay_metrics.parked.set(1)
    relay_metrics.database_up.set(1)
    relay_metrics.relayed.labels("invoice.created").inc(8)
    relay_metrics.relayed.labels("user.action").inc(2)
    relay = relay_summary(generate_latest(relay_metrics.registry).decode())
    assert relay == {"pending": 5, "parked": 1, "database_up": True, "relayed": 10, "pauses": 0}
    checks = process_checks(
        [{"url": "http://b:1", "ok": True, "detail": "", **bridge}, {"url": "http://b:2", "ok": False, "detail": "X"}],
        [{"url": "http://r:1", "ok": True, "detail": "", **relay}],
    )
    assert checks["bridge http://b:1"] == {
        "ok": False,
        "detail": "Redis down, 3 paused partition(s), 2 redelivered",
    }
    assert checks["bridge http://b:2"] == {"ok": False, "detail": "X"}
    assert checks["relay http://r:1"]["ok"] is True
    assert "5 pending, 1 parked row(s), 10 relayed" in checks["relay http://r:1"]["detail"]


def test_bridge_urls_are_scraped_over_http() -> None:
    from prometheus_client import start_http_server  # noqa: PLC0415

    from streams.bridge.metrics import BridgeMetrics  # noqa: PLC0415
    from streams.console.cluster_views import bridge_summary, scrape, tasks_page  # noqa: PLC0415
    from streams.local.processes import free_port  # noqa: PLC0415

    metrics = BridgeMetrics()
    metrics.paused.set(2)
    metrics.redis_up.set(1)
    metrics.failed.labels("pdf").inc(3)
    port, dead = free_port(), free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        settings = ConsoleSettings(bridge_urls=f" http://127.0.0.1:{port}/metrics/ ,http://127.0.0.1:{dead}")
        assert settings.bridges() == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dead}"]
        up, down = scrape(settings.bridges(), bridge_summary)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert up["ok"] is True
    assert (up["paused"], up["redis_up"], up["queues"]["pdf"]["retries"]) == (2, True, 3)
    assert down == {"url": f"http://127.0.0.1:{dead}", "ok": False, "detail": "ConnectError"}
    page = tasks_page(None, {"pdf": 100, "notify": None}, {}, None, None, [up, down])  # type: ignore[arg-type]
    assert [(q["name"], q["pushed"], q["retries"]) for q in page["queues"]] == [("pdf", 0, 3), ("notify", 0, 0)]
    assert page["bridges"] == [up, down]
