"""`streams topics ...`: lint the catalog offline, plan and apply it against a cluster, list topics.

Exit codes: 0 nothing to do or applied, 2 plan has changes, 1 error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from streams.admin import ChangeKind, Plan, TopicChange, apply_plan, plan_changes
from streams.catalog import Catalog, lint_catalog, load_catalog
from streams.cli_options import CATALOG, OUTPUT_TABLE, PROFILE
from streams.errors import AdminError
from streams.settings import KafkaConfig, Settings
from streams.tables import add_name_column

if TYPE_CHECKING:
    from streams.export import ExportFormat


def _catalog(settings: Settings, catalog_path: Path | None, profile: str | None) -> Catalog:
    path = catalog_path or settings.catalog_path
    return load_catalog(path, profile or settings.profile)


def _kafka_config(settings: Settings) -> KafkaConfig:
    return settings.kafka_config(settings.bootstrap_servers())


@click.group()
def topics() -> None:
    """Topics as code: lint, plan and apply topics.yaml.

    \b
    Example:
      streams topics lint && streams topics plan && streams topics apply
    """


@topics.command()
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.pass_obj
def lint(settings: Settings, catalog_path: Path | None, profile: str | None, output: str) -> None:
    """Check topics.yaml and its schemas offline; every problem on its own line.

    \b
    Example:
      streams topics lint --profile production
    """
    path = catalog_path or settings.catalog_path
    problems = [str(problem) for problem in lint_catalog(path, profile or settings.profile)]
    if output == "json":
        click.echo(json.dumps({"catalog": str(path), "problems": problems}, indent=2))
    else:
        for problem in problems:
            click.echo(problem, err=True)
        if not problems:
            click.echo(f"{path}: ok")
    if problems:
        sys.exit(1)


@topics.command()
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.option("--allow-delete", multiple=True, metavar="TOPIC", help="Also plan deleting this undeclared topic.")
@click.pass_obj
def plan(
    settings: Settings, catalog_path: Path | None, profile: str | None, output: str, allow_delete: tuple[str, ...]
) -> None:
    """Show what apply would change on the cluster, and drift made outside the catalog.

    Exit code 0 when there is nothing to do, 2 when there are changes, 1 on errors.

    \b
    Example:
      streams topics plan --output json
    """
    catalog = _catalog(settings, catalog_path, profile)
    result = plan_changes(catalog, _kafka_config(settings), allow_delete=allow_delete)
    _show(result, output)
    if result.errors:
        sys.exit(1)
    if result.has_changes:
        sys.exit(2)


@topics.command()
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.option(
    "--allow-delete",
    multiple=True,
    metavar="TOPIC",
    help="Delete this topic, which must exist on the cluster and not be declared. Repeat per topic.",
)
@click.pass_obj
def apply(
    settings: Settings, catalog_path: Path | None, profile: str | None, output: str, allow_delete: tuple[str, ...]
) -> None:
    """Create, alter and grow topics so the cluster matches the catalog. Idempotent.

    Never lowers partitions; deletes a topic only when named with --allow-delete.

    \b
    Example:
      streams topics apply
      streams topics apply --allow-delete invoice.legacy
    """
    catalog = _catalog(settings, catalog_path, profile)
    kafka_config = _kafka_config(settings)
    result = plan_changes(catalog, kafka_config, allow_delete=allow_delete)
    _show(result, output)
    if result.errors:
        raise AdminError(f"nothing applied: {len(result.errors)} error(s) in the plan")
    apply_plan(result, catalog, kafka_config)
    if output == "table":
        verb = f"applied {len(result.changes)} change(s)" if result.has_changes else "no changes"
        click.echo(f"{verb}; cluster matches {catalog.path} (profile {catalog.profile})")


@topics.command(name="list")
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.pass_obj
def list_topics(settings: Settings, catalog_path: Path | None, profile: str | None, output: str) -> None:
    """List the catalog's topics as they are on the cluster.

    \b
    Example:
      streams topics list
    """
    catalog = _catalog(settings, catalog_path, profile)
    admin = AdminClient(_kafka_config(settings))
    try:
        metadata = admin.list_topics(timeout=10)
    except Exception as exc:
        raise AdminError(f"cannot reach the Kafka cluster: {exc}") from exc
    rows = []
    for spec in catalog.topics:
        found = metadata.topics.get(spec.name)
        rows.append(
            {
                "topic": spec.name,
                "exists": found is not None,
                "partitions": len(found.partitions) if found is not None else None,
                "key": spec.key_field,
                "owner": spec.owner,
                "audit": spec.audit,
            }
        )
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"topics ({catalog.profile})")
    add_name_column(table, "topic", (str(row["topic"]) for row in rows))
    for column in ("on cluster", "partitions", "key", "owner", "audit"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["topic"]),
            "yes" if row["exists"] else "MISSING",
            str(row["partitions"] or "-"),
            str(row["key"] or "-"),
            str(row["owner"]),
            "yes" if row["audit"] else "",
        )
    Console().print(table)


@topics.command()
@CATALOG
@PROFILE
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["strimzi", "acls", "asyncapi"]),
    required=True,
    help="strimzi: KafkaTopic resources; acls: KafkaUser resources with ACLs; asyncapi: AsyncAPI 3.",
)
@click.option(
    "--output",
    "-o",
    "output_file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of stdout.",
)
@click.option("--cluster", default="streams", show_default=True, help="Strimzi cluster (strimzi.io/cluster label).")
@click.option(
    "--server",
    default="localhost:9092",
    show_default=True,
    help="AsyncAPI: the Kafka bootstrap address documented as the server.",
)
@click.option(
    "--registry-url",
    default="http://localhost:8081",
    show_default=True,
    help="AsyncAPI: the schema registry documented in the server bindings.",
)
@click.option("--secure", is_flag=True, help="AsyncAPI: the server uses TLS and SASL (protocol kafka-secure).")
@click.pass_obj
def export(
    settings: Settings,
    catalog_path: Path | None,
    profile: str | None,
    fmt: str,
    output_file: str | None,
    cluster: str,
    server: str,
    registry_url: str,
    secure: bool,
) -> None:
    """Generate deployment documents from topics.yaml: Strimzi topics, ACLs, or an AsyncAPI catalog.

    \b
    Example:
      streams topics export --format strimzi --profile production -o kafka-topics.yaml
      streams topics export --format acls
      streams topics export --format asyncapi --server kafka:9093 --secure
    """
    from streams.export import export_catalog  # noqa: PLC0415 - keeps `streams --help` fast

    catalog = _catalog(settings, catalog_path, profile)
    text = export_catalog(
        catalog, cast("ExportFormat", fmt), cluster=cluster, server=server, registry_url=registry_url, secure=secure
    )
    if output_file is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output_file).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AdminError(f"cannot write {output_file}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {output_file} ({fmt}, profile {catalog.profile})", err=True)


def _show(result: Plan, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    console = Console(stderr=False)
    if result.changes:
        table = Table(title="plan")
        table.add_column("action", no_wrap=True)
        add_name_column(table, "topic", (change.topic for change in result.changes))
        table.add_column("details", overflow="fold")
        for change in result.changes:
            table.add_row(change.kind.value, change.topic, _details(change))
        console.print(table)
    else:
        console.print("plan: no changes")
    for change in result.changes:
        if change.warning:
            console.print(f"[bold red]WARNING[/]: {change.warning}")
    for note in result.notes:
        console.print(f"note: {note}")
    for error in result.errors:
        click.echo(f"error: {error}", err=True)


def _details(change: TopicChange) -> str:
    if change.kind is ChangeKind.CREATE:
        configs = ", ".join(f"{k}={v}" for k, v in sorted(change.configs.items()))
        return f"partitions={change.partitions} replication={change.replication_factor} {configs}"
    if change.kind is ChangeKind.ADD_PARTITIONS:
        return f"partitions {change.current_partitions} -> {change.partitions}"
    if change.kind is ChangeKind.ALTER_CONFIG:
        return "; ".join(
            f"{d.key}: {d.current} -> {d.desired}" + (" (DRIFT: changed outside streams)" if d.drift else "")
            for d in change.diffs
        )
    return "delete topic and all its data"
