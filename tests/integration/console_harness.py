"""The web console's browser tests share this: one stack with the pipeline's data, a console process, Chromium.

The stack is real (Kafka, registry, Redis from `catalog_stack`), the worker is the real `streams worker`,
the console is `streams console` in its own process, and the browser is Debian's chromium driven by Playwright.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from streams.console.auth import hash_password
from streams.demo.samples import invoice_chain, user_action
from streams.local.processes import free_port
from streams.publish import Publisher
from streams.replay.signing import generate_keypair
from tests.integration.worker_harness import (
    ROOT,
    catalog_stack,
    read_topic,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Page

    from streams.settings import Settings

# The README's screenshots are rewritten only on request (STREAMS_UPDATE_SCREENSHOTS=1): a plain test run
# still takes every one (a page that cannot render fails), into a scratch directory, leaving the tree clean.
DOC_SCREENSHOTS = ROOT / "docs" / "console"
CHROMIUM = "/usr/bin/chromium"
# polyglot.md's flags for a headless Chromium that reaches nothing but the page under test.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORDS = {
    "vera": ("viewer", "viewer-pass-1"),
    "otto": ("operator", "operator-pass-1"),
    "aude": ("auditor", "auditor-pass-1"),
}
TENANT = "console-co"
INVOICES = 12


@dataclass
class ConsoleStack:
    settings: Settings
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    public_key: Path
    invoice_ids: list[str]
    buyer_names: list[str]
    tmp: Path
    bridge_url: str = ""
    dead_relay_url: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _users() -> str:
    # rounds=4: the tests log in often; production hashes use bcrypt's default cost (12).
    return json.dumps(
        {
            name: {"role": role, "password_hash": hash_password(password, rounds=4)}
            for name, (role, password) in PASSWORDS.items()
        }
    )


def _publish(settings: Settings) -> tuple[list[str], list[str]]:
    invoices = invoice_chain(INVOICES, tenant=TENANT)
    invoices[-1]["tax_currency"] = "USD"  # one invoice breaks a rule: its story has a violation
    with Publisher(settings, source="billing-api") as publisher:
        for invoice in invoices:
            publisher.publish("invoice.created", invoice)
        for n in range(5):
            publisher.publish("user.action", user_action(n, tenant=TENANT))
    from confluent_kafka import Producer  # noqa: PLC0415

    # Not an event (no wire-format header): the validation agent parks it in invoice.created.dlq.
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers()})
    producer.produce(
        "invoice.created",
        key=TENANT.encode(),
        value=b"not avro at all",
        headers=[("ce_id", b"console-broken-1"), ("ce_tenantid", TENANT.encode())],
    )
    producer.flush(30)
    return [str(i["invoice_id"]) for i in invoices], [str(i["buyer"]["name"]) for i in invoices if i.get("buyer")]


@pytest.fixture(scope="package", name="console_stack")
def console_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    tmp = tmp_path_factory.mktemp("console")
    with catalog_stack(tmp / "data", with_redis=True) as settings:
        invoice_ids, buyers = _publish(settings)
        worker = start_worker(settings, "validation,audit", free_port(), tmp / "worker.log")
        try:
            wait_for(
                lambda: (
                    bool(read_topic(settings, "invoice.created.dlq"))
                    and len(read_topic(settings, "audit.trail")) >= INVOICES + 5
                ),
                180,
                lambda: f"the worker's outputs ({(tmp / 'worker.log').read_text(errors='replace')[-2000:]})",
            )
        finally:
            stop_worker(worker)
        pair = generate_keypair(tmp / "auditor")
        metric_servers, bridge_url, relay_url = _process_metrics()
        dead_relay_url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the overview shows it down
        port = free_port()
        log = tmp / "console.log"
        env = {
            **worker_env(settings),
            "STREAMS_CONSOLE_USERS": _users(),
            "STREAMS_CONSOLE_SESSION_SECRET": "t" * 40,
            "STREAMS_CONSOLE_EVIDENCE_SIGN_KEY": str(pair.private),
            "STREAMS_CONSOLE_EVIDENCE_DIR": str(tmp / "evidence"),
            "STREAMS_CONSOLE_BRIDGE_URLS": bridge_url,
            "STREAMS_CONSOLE_RELAY_URLS": f"{relay_url},{dead_relay_url}",
        }
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "console", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack = ConsoleStack(
            settings,
            f"http://localhost:{port}",
            process,
            log,
            pair.public,
            invoice_ids,
            buyers,
            tmp,
            bridge_url,
            dead_relay_url,
        )
        try:
            wait_for(lambda: _answers(stack.url), 60, lambda: f"the console ({stack.log_text()[-2000:]})")
            yield stack
        finally:
            process.terminate()
            process.wait(timeout=30)
            for server, thread in metric_servers:
                server.shutdown()
                server.server_close()
                thread.join(5)


def _process_metrics() -> tuple[list[tuple[Any, Any]], str, str]:
    """A bridge's and an outbox relay's /metrics, served over HTTP by their own metrics classes with the values a
    bridge under backpressure (2 paused partitions, 3 push retries on the batch queue) and a relay would report."""
    from prometheus_client import start_http_server  # noqa: PLC0415

    from streams.bridge.metrics import BridgeMetrics  # noqa: PLC0415
    from streams.outbox.metrics import OutboxMetrics  # noqa: PLC0415

    bridge = BridgeMetrics()
    bridge.paused.set(2)
    bridge.redis_up.set(1)
    bridge.published.labels("batch").inc(12)
    bridge.failed.labels("batch").inc(3)
    relay = OutboxMetrics()
    relay.database_up.set(1)
    relay.pending.set(4)
    relay.relayed.labels("invoice.created").inc(9)
    servers, urls = [], []
    for metrics in (bridge.registry, relay.registry):
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=metrics))
        urls.append(f"http://127.0.0.1:{port}")
    return servers, urls[0], urls[1]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="package", name="browser")
def browser_fixture() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install -y chromium (see .ci/run)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def logged_in(browser: Browser, stack: ConsoleStack, user: str) -> Page:
    """A fresh browser context (its own cookies) logged in as `user` through the login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{stack.url}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user][1])
    page.click("#login")
    page.wait_for_url(f"{stack.url}/")
    assert f"{user} ({PASSWORDS[user][0]})" in page.inner_text("header")
    return page


@functools.cache
def screenshot_dir() -> Path:
    if os.environ.get("STREAMS_UPDATE_SCREENSHOTS") == "1":
        DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOC_SCREENSHOTS
    return Path(tempfile.mkdtemp(prefix="streams-console-screenshots-"))


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=str(screenshot_dir() / f"{name}.png"), full_page=False)


def post_from_page(page: Page, path: str, fields: dict[str, str]) -> dict[str, Any]:
    """POST a form with fetch() from inside the page (the session cookie goes along, as in a forged request)."""
    return dict(
        page.evaluate(
            """async ([path, fields]) => {
        const body = new URLSearchParams(fields);
        const answer = await fetch(path, {method: "POST", body});
        return {status: answer.status, text: await answer.text()};
    }""",
            [path, fields],
        )
    )


def csrf_of(page: Page) -> str:
    return str(page.get_attribute("input[name=csrf]", "value"))


def env_for_cli(stack: ConsoleStack) -> dict[str, str]:
    return {**os.environ, **worker_env(stack.settings)}


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def park_dead_letter(stack: ConsoleStack, event_id: str, reason: str) -> None:
    """Park one undecodable invoice.created record in its dead-letter topic, as the validation agent would: a
    test that redrives or refuses to redrive has its own, whatever the tests before it redrove."""
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.records import SourceRecord, dlq_headers  # noqa: PLC0415

    source = SourceRecord(
        "invoice.created", 0, 999, 0, b"console-co", b"still not avro", [("ce_id", event_id.encode())]
    )
    producer = Producer({"bootstrap.servers": stack.settings.bootstrap_servers()})
    producer.produce(
        "invoice.created.dlq",
        key=source.key,
        value=source.value,
        headers=list(dlq_headers(source, "validation", ValueError(reason), 1)),
    )
    assert producer.flush(30) == 0, "the dead letter was not acknowledged"
