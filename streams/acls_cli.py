"""`streams acls plan | apply`: the catalog's ACLs on any Kafka cluster, shown as a diff and applied idempotently.

Exit codes: 0 in sync or applied; 1 on error, and with `plan --check` when the cluster differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from streams.acls_admin import AclPlan, apply_acls, plan_acls
from streams.admin_cli import _catalog, _kafka_config
from streams.cli_options import CATALOG, OUTPUT_TABLE, PROFILE
from streams.settings import Settings
from streams.tables import add_name_column


@click.group()
def acls() -> None:
    """ACLs from the catalog: plan and apply who may read, write and join what.

    \b
    Example:
      streams acls plan && streams acls apply
    """


@acls.command()
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.option("--check", is_flag=True, help="Exit 1 when the cluster's ACLs differ from the catalog (for CI).")
@click.pass_obj
def plan(settings: Settings, catalog_path: Path | None, profile: str | None, output: str, check: bool) -> None:
    """Show the ACL bindings apply would add or remove for the principals the catalog manages.

    A binding to remove is drift: someone granted it outside the catalog. Other principals' ACLs are
    noted and left alone.

    \b
    Example:
      streams acls plan --check
    """
    catalog = _catalog(settings, catalog_path, profile)
    result = plan_acls(catalog, _kafka_config(settings))
    _show(result, output)
    if check and result.has_changes:
        click.echo(
            f"error: the cluster's ACLs differ from {catalog.path} in {len(result.add) + len(result.remove)}"
            " binding(s); run `streams acls apply`",
            err=True,
        )
        sys.exit(1)


@acls.command()
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.pass_obj
def apply(settings: Settings, catalog_path: Path | None, profile: str | None, output: str) -> None:
    """Add the missing bindings and remove the extra ones of managed principals. Idempotent.

    \b
    Example:
      streams acls apply
    """
    catalog = _catalog(settings, catalog_path, profile)
    kafka_config = _kafka_config(settings)
    result = plan_acls(catalog, kafka_config)
    _show(result, output)
    apply_acls(result, kafka_config)
    if output == "table":
        verb = (
            f"applied {len(result.add)} addition(s) and {len(result.remove)} removal(s)"
            if result.has_changes
            else "no changes"
        )
        click.echo(f"{verb}; the ACLs of {result.principals} principal(s) match {catalog.path}")


def _show(result: AclPlan, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    console = Console(stderr=False)
    rows = [("add", b) for b in result.add] + [("remove", b) for b in result.remove]
    if rows:
        table = Table(title="acl plan")
        table.add_column("action", no_wrap=True)
        add_name_column(table, "principal", (b.principal for _, b in rows))
        table.add_column("resource", overflow="fold")
        table.add_column("operation", no_wrap=True)
        for action, binding in rows:
            detail = binding.access + (" (DRIFT: granted outside the catalog)" if action == "remove" else "")
            table.add_row(action, binding.principal, binding.resource, detail)
        console.print(table)
    else:
        console.print(f"acl plan: no changes ({result.principals} principal(s) managed)")
    for note in result.notes:
        console.print(f"note: {note}")
