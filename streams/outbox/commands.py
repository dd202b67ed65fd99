"""`streams outbox`: create the outbox table (or print its DDL), run the relay, list pending or parked rows.

Errors (bad DSN, unreachable database) are one line on stderr and exit 1, as everywhere in the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from streams.errors import ConfigError
from streams.outbox.table import DEFAULT_TABLE, Dialect, connect, driver_errors, family_of_dsn, redact

if TYPE_CHECKING:
    from streams.settings import Settings

__all__ = ["outbox"]

DSN_HELP = "The database: sqlite:///path.db, postgresql://user@host:port/db or mysql://user:pw@host:port/db."


@click.group()
def outbox() -> None:
    """The transactional outbox: services add events in their own transaction; the relay publishes them.

    \b
    Example:
      streams outbox init --dsn sqlite:///erp.db
      streams outbox relay --dsn sqlite:///erp.db --metrics-port 9464
      streams outbox list --dsn sqlite:///erp.db --parked
    """


@outbox.command()
@click.option("--dsn", required=True, help=DSN_HELP)
@click.option("--table", default=DEFAULT_TABLE, show_default=True, help="Name of the outbox table.")
@click.option(
    "--print", "print_only", is_flag=True, help="Print the DDL (for the service's migrations); touch nothing."
)
def init(dsn: str, table: str, print_only: bool) -> None:
    """Create the outbox table and its helpers in the database (idempotent), or print their DDL.

    \b
    Example:
      streams outbox init --dsn postgresql://erp@db:5432/erp
      streams outbox init --dsn mysql://erp@db/erp --print > migrations/0042_outbox.sql
    """
    dialect = Dialect(family_of_dsn(dsn), table)
    if print_only:
        for statement in dialect.ddl():
            click.echo(statement + ";")
        return
    create_table(dsn, table)
    click.echo(f"outbox table {table} ready in {redact(dsn)}")


def create_table(dsn: str, table: str = DEFAULT_TABLE) -> None:
    """Run the outbox DDL against `dsn` (every statement is idempotent)."""
    dialect = Dialect(family_of_dsn(dsn), table)
    conn = _connect(dsn)
    try:
        cursor = conn.cursor()
        for statement in dialect.ddl():
            cursor.execute(statement)
        cursor.close()
        if dialect.family != "sqlite":
            conn.commit()
    finally:
        conn.close()


@outbox.command()
@click.option("--dsn", required=True, help=DSN_HELP)
@click.option("--table", default=DEFAULT_TABLE, show_default=True, help="Name of the outbox table.")
@click.option(
    "--batch-size",
    default=5_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows per cycle (one transaction, one flush).",
)
@click.option(
    "--max-idle",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0.001, 60),
    help="Longest pause between polls of an idle SQLite or MariaDB outbox (PostgreSQL waits on NOTIFY).",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Relay threads (PostgreSQL, MariaDB), each with its own connection and producer.",
)
@click.option("--name", default=None, help="This relay's name in logs and the SQLite lease (default: host-pid-random).")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), help="Serve /metrics on this port.")
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Interface of /metrics (0.0.0.0 in a container, so Prometheus can scrape it).",
)
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING"]))
@click.pass_obj
def relay(
    settings: Settings,
    dsn: str,
    table: str,
    batch_size: int,
    max_idle: float,
    workers: int,
    name: str | None,
    metrics_port: int | None,
    metrics_host: str,
    log_level: str,
) -> None:
    """Publish committed outbox rows to Kafka (acks=all, idempotent), in commit order per key.

    Run as many as you like on one database: they share the work without reordering a key. Stops on
    SIGTERM or Ctrl-C after the batch in hand.

    \b
    Example:
      STREAMS_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 streams outbox relay --dsn postgresql://erp@db/erp
    """
    from streams.observability import configure_logging  # noqa: PLC0415
    from streams.outbox.metrics import OutboxMetrics  # noqa: PLC0415
    from streams.outbox.relay import RelayOptions, run_workers  # noqa: PLC0415

    configure_logging(log_level)
    _read_rows(dsn, table, parked=False, limit=1)  # a wrong DSN or a missing table: one clear error now
    options = RelayOptions(dsn=dsn, table=table, batch_size=batch_size, max_idle_s=max_idle)
    if name:
        options = dataclasses.replace(options, name=name)
    metrics = OutboxMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port, metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    relays = run_workers(options, settings, workers, stop, metrics)
    click.echo(
        f"relay stopped: {sum(r.relayed for r in relays)} published, {sum(r.parked for r in relays)} parked", err=True
    )


@outbox.command(name="list")
@click.option("--dsn", required=True, help=DSN_HELP)
@click.option("--table", default=DEFAULT_TABLE, show_default=True, help="Name of the outbox table.")
@click.option("--parked", is_flag=True, help="Rows the relay set aside (with the reason) instead of pending ones.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1), help="At most this many rows.")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_rows(dsn: str, table: str, parked: bool, limit: int, output: str) -> None:
    """Show pending rows, or with --parked the rows the relay could not publish and why.

    \b
    Example:
      streams outbox list --dsn sqlite:///erp.db --parked -o json
    """
    found = [_shown(row) for row in _read_rows(dsn, table, parked=parked, limit=limit)]
    if output == "json":
        click.echo(json.dumps(found, indent=2))
        return
    view = Table(title=f"{'parked' if parked else 'pending'} rows in {table} ({len(found)})")
    for column in ("id", "topic", "key", "event_id", "added", *(("reason",) if parked else ())):
        view.add_column(column)
    for item in found:
        view.add_row(
            *(str(item[c]) for c in ("id", "topic", "key", "event_id", "added")),
            *((str(item["reason"]),) if parked else ()),
        )
    Console().print(view)


def _read_rows(dsn: str, table: str, *, parked: bool, limit: int) -> list[tuple[Any, ...]]:
    dialect = Dialect(family_of_dsn(dsn), table)
    conn = _connect(dsn)
    try:
        cursor = conn.cursor()
        cursor.execute(dialect.rows_sql(parked=parked, limit=limit))
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        cursor.close()
        return rows
    except driver_errors(dialect.family) as exc:
        raise ConfigError(
            f"cannot read outbox table {table} in {redact(dsn)}: {str(exc).strip().splitlines()[0]}"
            f" (create it with `streams outbox init --dsn ...`)"
        ) from exc
    finally:
        conn.close()


def _shown(row: tuple[Any, ...]) -> dict[str, Any]:
    row_id, topic, key, event_id, created_us, reason = row
    raw = bytes(key) if key is not None else None
    return {
        "id": int(row_id),
        "topic": topic,
        "key": raw.decode(errors="replace") if raw is not None else None,
        "event_id": event_id,
        "added": datetime.fromtimestamp(int(created_us) / 1e6, UTC).isoformat(),
        "age_s": round(time.time() - int(created_us) / 1e6, 3),
        "reason": reason,
    }


def _connect(dsn: str) -> Any:
    family = family_of_dsn(dsn)
    try:
        return connect(dsn)
    except driver_errors(family) as exc:
        raise ConfigError(f"cannot connect to {redact(dsn)}: {str(exc).strip().splitlines()[0]}") from exc
