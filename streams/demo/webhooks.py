"""The demo's webhook step: `streams webhooks` posts the run's ERROR violations to a receiver the demo starts.

The receiver listens where the catalog's loopback route points, verifies every signature, and reports.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from streams.demo.worker import child_env
from streams.errors import StreamsError
from streams.webhooks.receiver import Received, Receiver
from streams.webhooks.routes import WebhookRoute, load_webhooks

if TYPE_CHECKING:
    from rich.console import Console

    from streams.catalog import Catalog
    from streams.settings import Settings

__all__ = ["WebhookReport", "run_webhooks_until", "show_webhooks"]


@dataclass(frozen=True)
class WebhookReport:
    route: str
    url: str
    received: int  # this run's events the receiver answered 2xx
    verified: int
    samples: list[Received] = field(default_factory=list)


def _demo_route(catalog: Catalog) -> WebhookRoute:
    for route in load_webhooks(catalog).routes:
        if urlsplit(route.url).hostname in {"127.0.0.1", "localhost"}:
            return route
    raise StreamsError(f"{catalog.path}: no webhook route posts to 127.0.0.1 for the demo's receiver")


def run_webhooks_until(
    settings: Settings, catalog: Catalog, tenants: set[str], expected: int, *, timeout: float
) -> WebhookReport:
    """Start a receiver and `streams webhooks`, wait for `expected` deliveries of `tenants`' events, stop both."""
    route = _demo_route(catalog)
    available = settings.webhook_secret_map()
    given = available.get(route.secret)
    # The demo makes a secret when none is set; it reaches the runner through its environment, never a file.
    secret = given.get_secret_value() if given else "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    known = {name: value.get_secret_value() for name, value in available.items()}
    env = {**child_env(settings), "STREAMS_WEBHOOK_SECRETS": json.dumps({**known, route.secret: secret})}
    parts = urlsplit(route.url)
    ours: dict[str, Received] = {}

    def collect(receiver: Receiver) -> None:
        for msg_id, got in list(receiver.delivered.items()):
            if msg_id not in ours and json.loads(got.body).get("tenant_id") in tenants:
                ours[msg_id] = got

    log_path = settings.data_dir.resolve() / "demo-webhooks.log"
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with Receiver(secret, host=host, port=port, path=parts.path or "/") as receiver:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "webhooks"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            while len(ours) < expected:
                if process.poll() is not None or time.monotonic() > deadline:
                    why = "streams webhooks exited" if process.poll() is not None else f"after {timeout:.0f}s"
                    raise StreamsError(f"{len(ours)} of {expected} webhooks received ({why}); see {log_path}")
                time.sleep(0.3)
                collect(receiver)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    verified = sum(got.verified for got in ours.values())
    return WebhookReport(route.name, route.url, len(ours), verified, list(ours.values())[:3])


def show_webhooks(console: Console, report: WebhookReport) -> None:
    """What the demo's receiver got: how many, whether the signatures verified, and a few of them."""
    console.rule("6b. webhooks: ERROR violations POSTed to a local receiver")
    console.print(
        f"route {report.route} -> {report.url}: received {report.received} signed CloudEvents, "
        f"{report.verified} signatures verified (Standard Webhooks, HMAC-SHA256)",
        highlight=False,
    )
    for got in report.samples:
        body = json.loads(got.body)
        console.print(
            f"  {got.headers.get('webhook-id')} {got.headers.get('ce-type')} {body.get('rule_code')} "
            f"invoice {body.get('invoice_id')}: {body.get('message')}",
            highlight=False,
        )
