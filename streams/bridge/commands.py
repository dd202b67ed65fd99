"""`streams bridge`: run the Kafka -> Celery bridge, or show and check its routes (`--routes`, `--check`).

Every startup problem (routes, topics, schema fields, task names) is one line on stderr and exit 1.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams.bridge.errors import BridgeError
from streams.bridge.routes import BridgeConfig, check_tasks, load_bridge
from streams.catalog import load_catalog
from streams.cli_options import CATALOG, METRICS_HOST, METRICS_PORT, OUTPUT_TABLE, PROFILE
from streams.errors import StreamsError
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.catalog import Catalog

__all__ = ["bridge", "load_checked"]


@click.command(name="bridge")
@click.option("--routes", "show_routes", is_flag=True, help="Print the checked routes and exit.")
@click.option("--check", "check_only", is_flag=True, help="Check routes, topics, schema fields and task names; exit.")
@CATALOG
@PROFILE
@click.option(
    "--celery-app",
    default=None,
    metavar="MODULE[:ATTR]",
    help="Celery app whose registered tasks the routes must name (default: the catalog's bridge.celery_app).",
)
@click.option("--redis-url", default=None, metavar="URL", help="Celery broker (default: STREAMS_REDIS_URL).")
@click.option("--group", default=None, help="Consumer group (default: the catalog's bridge.group).")
@click.option(
    "--instance-id",
    default=None,
    help="Static group membership id: a restarted bridge gets its partitions back without a rebalance.",
)
@click.option(
    "--batch-size",
    default=2_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Records per consume call and Redis push.",
)
@click.option(
    "--max-in-flight",
    default=20_000,
    show_default=True,
    type=click.IntRange(1),
    help="Consumed records not yet confirmed by Redis before every partition pauses.",
)
@click.option(
    "--redeliver-after",
    default=600.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds after which a pushed task whose effect is not done, in an empty queue, is pushed again.",
)
@click.option(
    "--sweep-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between looks for such lost tasks (0: keep no ledger; kombu's losses stay lost).",
)
@METRICS_PORT
@METRICS_HOST
@OUTPUT_TABLE
@click.pass_obj
def bridge(
    obj: object,
    show_routes: bool,
    check_only: bool,
    catalog_path: Path | None,
    profile: str | None,
    celery_app: str | None,
    redis_url: str | None,
    group: str | None,
    instance_id: str | None,
    batch_size: int,
    max_in_flight: int,
    redeliver_after: float,
    sweep_interval: float,
    metrics_port: int | None,
    metrics_host: str,
    output: str,
) -> None:
    """Feed Celery from Kafka: routed events become tasks in Redis; offsets commit after Redis confirms.

    \b
    Example:
      streams bridge --routes                     # what goes where, checked against the catalog
      streams bridge --instance-id bridge-1 --metrics-port 9310
      celery -A streams.bridge.reference_tasks worker -Q interactive,default,batch
    """
    settings = obj if isinstance(obj, Settings) else Settings()
    try:
        catalog, config = load_checked(settings, catalog_path, profile, celery_app)
        if group:
            config = dataclasses.replace(config, group=group)
        if show_routes or check_only:
            _show(config, output, checked_only=check_only)
            return
        options = {
            "batch_size": batch_size,
            "max_in_flight": max_in_flight,
            "instance_id": instance_id,
            "redeliver_after_s": redeliver_after,
            "sweep_interval_s": sweep_interval,
        }
        _run(settings, catalog, config, redis_url, options, metrics_port, metrics_host)
    except StreamsError as exc:  # also when run outside the `streams` group (python -m streams.bridge)
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def load_checked(
    settings: Settings, catalog_path: Path | None = None, profile: str | None = None, celery_app: str | None = None
) -> tuple[Catalog, BridgeConfig]:
    """The catalog and its bridge section, with every route's task checked against the task registry."""
    catalog = load_catalog(catalog_path or settings.catalog_path, profile or settings.profile)
    config = load_bridge(catalog)
    if not config.routes:
        raise BridgeError(f"{catalog.path}: no 'bridge:' routes; declare them under 'bridge: routes:'")
    app_name = celery_app or config.celery_app
    if app_name:
        check_tasks(config, _registered_tasks(app_name), f"the Celery app {app_name}")
    elif config.tasks:
        check_tasks(config, dict.fromkeys(config.tasks), f"bridge.tasks of {catalog.path.name}")
    else:
        raise BridgeError(
            f"{catalog.path}: cannot check the routes' task names; set bridge.celery_app (or "
            "--celery-app) or list the task names under bridge.tasks"
        )
    return catalog, config


def _registered_tasks(name: str) -> dict[str, Callable[..., Any] | None]:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
        app = getattr(module, attribute or "app")
    except (ImportError, AttributeError) as exc:
        raise BridgeError(f"cannot load the Celery app '{name}': {exc}") from None
    tasks = getattr(app, "tasks", None)
    if tasks is None:
        raise BridgeError(f"'{name}' is not a Celery app (it has no registered tasks)")
    return {task_name: getattr(task, "run", None) for task_name, task in dict(tasks).items()}


def _show(config: BridgeConfig, output: str, *, checked_only: bool) -> None:
    rows: list[dict[str, Any]] = [
        {
            "route": r.name,
            "topic": r.topic,
            "event_type": r.event_type,
            "where": {".".join(f.path): sorted(map(str, f.values)) for f in r.where},
            "task": r.task,
            "queue": r.queue,
            "bound": config.queues[r.queue].bound,
            "priority": r.priority,
            "countdown_ms": r.countdown_ms,
            "retry": r.retry.to_header(),
            "args": None if r.args is None else {k: ".".join(p) for k, p in r.args},
            "soft_time_limit_ms": r.soft_time_limit_ms,
            "time_limit_ms": r.time_limit_ms,
            "line": r.line,
        }
        for r in config.routes
    ]
    if output == "json":
        click.echo(
            json.dumps(
                {"group": config.group, "failed_topic": config.failed_topic, "ok": True, "routes": rows}, indent=2
            )
        )
        return
    if checked_only:
        click.echo(f"{len(rows)} route(s) OK: topics, schema fields and task names check out")
        return
    from rich.console import Console  # noqa: PLC0415 - only for the human table
    from rich.table import Table  # noqa: PLC0415

    from streams.tables import add_name_column  # noqa: PLC0415

    table = Table(title=f"bridge routes (group {config.group})")
    add_name_column(table, "route", (str(row["route"]) for row in rows))
    add_name_column(table, "topic / type", (_topic_cell(row) for row in rows))
    for column in ("where", "task", "queue (bound)", "prio", "retry", "time limits"):
        table.add_column(column)
    for row in rows:
        retry = row["retry"]
        table.add_row(
            str(row["route"]),
            _topic_cell(row),
            json.dumps(row["where"]) if row["where"] else "",
            str(row["task"]),
            f"{row['queue']} ({row['bound'] or 'unbounded'})",
            str(row["priority"]),
            f"{retry['max_attempts']}x from {retry['backoff_ms']} ms",
            f"{row['soft_time_limit_ms'] / 1000:g} s / {row['time_limit_ms'] / 1000:g} s",
        )
    Console().print(table)


def _run(
    settings: Settings,
    catalog: Catalog,
    config: BridgeConfig,
    redis_url: str | None,
    options: dict[str, Any],
    metrics_port: int | None,
    metrics_host: str = "127.0.0.1",
) -> None:
    from streams.bridge.bridge import Bridge, BridgeOptions  # noqa: PLC0415 - confluent-kafka on demand
    from streams.observability import configure_logging  # noqa: PLC0415 - by the command that runs, not at import

    configure_logging()
    runner = Bridge(settings, catalog, config, BridgeOptions(**options), redis_url=redis_url)
    if metrics_port is not None:
        runner.metrics.serve(metrics_port, metrics_host)
    runner.run(handle_signals=True)


def _topic_cell(row: dict[str, Any]) -> str:
    return f"{row['topic']}" + (f" [{row['event_type']}]" if row["event_type"] else "")
