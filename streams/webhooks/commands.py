"""`streams webhooks`: run the webhook deliveries, or show and check the routes (`--routes`, `--check`).

Every startup problem (routes, topics, schema fields, URLs, missing secrets) is one line on stderr and exit 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams.catalog import load_catalog
from streams.cli_options import CATALOG, METRICS_HOST, METRICS_PORT, OUTPUT_TABLE, PROFILE
from streams.errors import StreamsError
from streams.settings import Settings
from streams.webhooks.routes import WebhookConfig, WebhookError, load_webhooks

if TYPE_CHECKING:
    from streams.catalog import Catalog

__all__ = ["load_checked", "webhooks"]


@click.command(name="webhooks")
@click.option("--routes", "show_routes", is_flag=True, help="Print the checked routes and exit.")
@click.option("--check", "check_only", is_flag=True, help="Check routes, topics, schema fields and secrets; exit.")
@CATALOG
@PROFILE
@click.option("--group", default=None, help="Consumer group (default: the catalog's webhooks.group).")
@click.option(
    "--instance-id",
    default=None,
    help="Static group membership id: a restarted runner gets its partitions back without a rebalance.",
)
@click.option(
    "--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000), help="Records per consume call."
)
@click.option(
    "--max-in-flight",
    default=5_000,
    show_default=True,
    type=click.IntRange(1),
    help="Consumed records not yet delivered or parked before every partition pauses.",
)
@METRICS_PORT
@METRICS_HOST
@OUTPUT_TABLE
@click.pass_obj
def webhooks(
    obj: object,
    show_routes: bool,
    check_only: bool,
    catalog_path: Path | None,
    profile: str | None,
    group: str | None,
    instance_id: str | None,
    batch_size: int,
    max_in_flight: int,
    metrics_port: int | None,
    metrics_host: str,
    output: str,
) -> None:
    """Deliver events to HTTP endpoints: signed CloudEvents POSTs, retried; offsets commit once settled.

    A record's offset is committed only after every matching route got a 2xx or parked the record in
    <topic>.dlq. Secrets come from STREAMS_WEBHOOK_SECRETS (JSON: name -> secret).

    \b
    Example:
      export STREAMS_WEBHOOK_SECRETS='{"compliance-hook": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}'
      streams webhooks --routes                  # what goes where, checked against the catalog
      streams webhooks --instance-id hooks-1 --metrics-port 9320
    """
    settings = obj if isinstance(obj, Settings) else Settings()
    try:
        catalog, config = load_checked(settings, catalog_path, profile)
        if group:
            config = dataclasses.replace(config, group=group)
        if show_routes or check_only:
            _show(config, output, checked_only=check_only)
            return
        _run(
            settings,
            catalog,
            config,
            {"batch_size": batch_size, "max_in_flight": max_in_flight, "instance_id": instance_id},
            metrics_port,
            metrics_host,
        )
    except StreamsError as exc:  # also when run outside the `streams` group (python -m streams.webhooks)
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def load_checked(
    settings: Settings, catalog_path: Path | None = None, profile: str | None = None
) -> tuple[Catalog, WebhookConfig]:
    """The catalog and its webhooks section, with every route's secret present in the settings."""
    catalog = load_catalog(catalog_path or settings.catalog_path, profile or settings.profile)
    config = load_webhooks(catalog)
    if not config.routes:
        raise WebhookError(f"{catalog.path}: no 'webhooks:' routes; declare them under 'webhooks: routes:'")
    config.secrets(settings.webhook_secret_map())
    return catalog, config


def _show(config: WebhookConfig, output: str, *, checked_only: bool) -> None:
    rows: list[dict[str, Any]] = [
        {
            "route": r.name,
            "topic": r.topic,
            "event_type": r.event_type,
            "where": {".".join(f.path): sorted(map(str, f.values)) for f in r.where},
            "url": r.url,
            "secret": r.secret,
            "mode": r.mode,
            "timeout_ms": r.timeout_ms,
            "concurrency": r.concurrency,
            "retry": {
                "max_attempts": r.retry.max_attempts,
                "backoff_ms": r.retry.backoff_ms,
                "max_backoff_ms": r.retry.max_backoff_ms,
                "jitter": r.retry.jitter,
            },
            "circuit": dataclasses.asdict(r.circuit),
            "line": r.line,
        }
        for r in config.routes
    ]
    if output == "json":
        click.echo(json.dumps({"group": config.group, "ok": True, "routes": rows}, indent=2))
        return
    if checked_only:
        click.echo(f"{len(rows)} webhook route(s) OK: topics, schema fields and secrets check out")
        return
    from rich.console import Console  # noqa: PLC0415 - only for the human table
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"webhook routes (group {config.group})")
    for column in ("route", "topic / type", "where", "url", "mode", "retry", "concurrency"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["route"]),
            f"{row['topic']}" + (f" [{row['event_type']}]" if row["event_type"] else ""),
            json.dumps(row["where"]) if row["where"] else "",
            str(row["url"]),
            str(row["mode"]),
            f"{row['retry']['max_attempts']}x from {row['retry']['backoff_ms']} ms",
            str(row["concurrency"]),
        )
    Console().print(table)


def _run(
    settings: Settings,
    catalog: Catalog,
    config: WebhookConfig,
    options: dict[str, Any],
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    from streams.observability import configure_logging  # noqa: PLC0415 - by the command that runs, not at import
    from streams.webhooks.runner import RunnerOptions, WebhookRunner  # noqa: PLC0415 - confluent-kafka on demand

    configure_logging()
    runner = WebhookRunner(settings, catalog, config, RunnerOptions(**options))
    if metrics_port is not None:
        runner.metrics.serve(metrics_port, metrics_host)
    runner.run(handle_signals=True)
