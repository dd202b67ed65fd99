"""`streams dev up | down | status`: the local stack from the command line.

Thin over streams.local.stack; text for people (rich), `--output json` for scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from streams.local.stack import (
    ServiceReady,
    StackEvent,
    StackNote,
    local_dir,
    running_stack,
    service_alive,
    stack_status,
    start_stack,
    stop_stack,
)
from streams.local.state import state_path

if TYPE_CHECKING:
    from streams.local.state import StackState
    from streams.settings import Settings

OUTPUT = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts.",
)
PORT = click.IntRange(1, 65535)


@click.group()
def dev() -> None:
    """Run the local stack: Apache Kafka (KRaft, jars from Maven Central) and redis-server on loopback.

    Its state lives in <data dir>/local (STREAMS_DATA_DIR, default .streams); every other command
    finds the broker and Redis there when STREAMS_KAFKA_BOOTSTRAP_SERVERS / STREAMS_REDIS_URL are unset.

    \b
    Example:
      streams dev up && streams topics apply && streams dev status
    """


@dev.command(short_help="Start Kafka, the schema registry and Redis on loopback (idempotent).")
@click.option("--kafka-port", type=PORT, envvar="STREAMS_LOCAL_KAFKA_PORT", show_envvar=True,
              help="Broker port on 127.0.0.1 [default: a free one].")  # fmt: skip
@click.option("--controller-port", type=PORT, envvar="STREAMS_LOCAL_CONTROLLER_PORT", show_envvar=True,
              help="KRaft controller port on 127.0.0.1 [default: a free one].")  # fmt: skip
@click.option("--redis-port", type=PORT, envvar="STREAMS_LOCAL_REDIS_PORT", show_envvar=True,
              help="redis-server port on 127.0.0.1 [default: a free one].")  # fmt: skip
@click.option("--registry-port", type=PORT, envvar="STREAMS_LOCAL_REGISTRY_PORT", show_envvar=True,
              help="Schema registry port on 127.0.0.1 [default: a free one].")  # fmt: skip
@click.option("--no-redis", is_flag=True, help="Do not start redis-server.")
@click.option("--no-registry", is_flag=True, help="Do not start the schema registry.")
@OUTPUT
@click.pass_obj
def up(
    settings: Settings,
    *,
    kafka_port: int | None,
    controller_port: int | None,
    redis_port: int | None,
    registry_port: int | None,
    no_redis: bool,
    no_registry: bool,
    output: str,
) -> None:
    """Start Kafka, the schema registry and Redis, or say they already run; prints addresses and start times.

    The first run resolves the Kafka jars with Maven into ~/.cache/streams (STREAMS_LOCAL_CACHE_DIR
    overrides it); later runs need no network. Needs java 17+ and mvn on PATH.

    \b
    Example:
      streams dev up --kafka-port 9092
      streams dev up --output json | jq -r .services.kafka.address
    """
    console = Console()
    running = running_stack(settings.data_dir)
    if running is not None:
        _report_up(console, running, output, already_running=True, ready={}, notes=[])
        return
    ready: dict[str, float] = {}
    notes: list[str] = []

    def on_event(event: StackEvent) -> None:
        if isinstance(event, ServiceReady):
            ready[event.name] = event.seconds
            if output == "text":
                console.print(f"[green]{event.name}[/] {event.address} ready in {event.seconds:.1f}s")
        elif isinstance(event, StackNote):
            notes.append(event.message)
            if output == "text":
                console.print(f"[yellow]note:[/] {event.message}", highlight=False)

    with console.status("starting the local stack", spinner="dots"):
        state = start_stack(
            settings.data_dir,
            kafka_port=kafka_port,
            controller_port=controller_port,
            redis_port=redis_port,
            registry_port=registry_port,
            with_redis=not no_redis,
            with_registry=not no_registry,
            catalog=settings.catalog_path,
            notify=on_event,
        )
    _report_up(console, state, output, already_running=False, ready=ready, notes=notes)


def _report_up(
    console: Console,
    state: StackState,
    output: str,
    *,
    already_running: bool,
    ready: dict[str, float],
    notes: list[str],
) -> None:
    if output == "json":
        services = {
            name: {
                "pid": service.pid,
                "address": service.address,
                "log_path": service.log_path,
                "ready_seconds": round(ready[name], 3) if name in ready else None,
            }
            for name, service in state.services.items()
        }
        document = {"data_dir": state.data_dir, "already_running": already_running, "services": services}
        click.echo(json.dumps({**document, "notes": notes}, indent=2))
        return
    if already_running:
        console.print(f"the local stack in {state.data_dir} is already running:", highlight=False)
        for name, service in state.services.items():
            console.print(f"  [green]{name}[/] {service.address} (pid {service.pid})", highlight=False)
    console.print(
        f"state in {state_path(Path(state.data_dir))}; stop it with `streams dev down`",
        highlight=False,
    )


@dev.command(short_help="Stop the local stack; --purge deletes its data.")
@click.option("--purge", is_flag=True, help="Also delete the stack's data: topics, Redis data and logs.")
@OUTPUT
@click.pass_obj
def down(settings: Settings, purge: bool, output: str) -> None:
    """Stop the local stack (SIGTERM, SIGKILL after 30s) and forget it; topics survive unless --purge.

    \b
    Example:
      streams dev down
      streams dev down --purge   # start from an empty cluster next time
    """
    stopped = stop_stack(settings.data_dir, purge=purge)
    if output == "json":
        click.echo(
            json.dumps({"data_dir": str(settings.data_dir.resolve()), "stopped": stopped, "purged": purge})
        )
        return
    where = local_dir(settings.data_dir)
    message = f"stopped {', '.join(stopped)}" if stopped else f"no local stack was running in {where}"
    if purge:
        message += f"; deleted {where}"
    click.echo(message)


@dev.command(short_help="Show each service's pid, address and liveness.")
@OUTPUT
@click.pass_obj
def status(settings: Settings, output: str) -> None:
    """Show the local stack's services: pid, address, and whether each is alive.

    \b
    Example:
      streams dev status
      streams dev status --output json | jq '.services[] | select(.alive | not)'
    """
    state = stack_status(settings.data_dir)
    rows: list[dict[str, Any]] = []
    if state is not None:
        rows = [
            {
                "name": name,
                "pid": service.pid,
                "address": service.address,
                "alive": service_alive(settings.data_dir, service),
                "log_path": service.log_path,
            }
            for name, service in state.services.items()
        ]
    if output == "json":
        click.echo(json.dumps({"data_dir": str(settings.data_dir.resolve()), "services": rows}, indent=2))
        return
    console = Console()
    if not rows:
        console.print(
            f"no local stack recorded in {local_dir(settings.data_dir)}; start one with `streams dev up`",
            highlight=False,
        )
        return
    table = Table("service", "pid", "address", "alive")
    for row in rows:
        alive = "[green]yes[/]" if row["alive"] else "[red]no[/]"
        table.add_row(row["name"], str(row["pid"]), row["address"], alive)
    console.print(table)
