"""`streams schemas ...`: check schema evolution, register the catalog's schemas, generate typed models.

Subjects follow TopicNameStrategy (`<topic>-value`); levels come from the catalog (BACKWARD_TRANSITIVE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from streams.catalog import Catalog, load_catalog
from streams.cli_options import CATALOG, OUTPUT_TABLE, PROFILE
from streams.errors import SchemaError
from streams.schemas.compatibility import check_compatibility, parse_schema
from streams.schemas.registry_client import compact_schema
from streams.settings import Settings
from streams.tables import add_name_column

if TYPE_CHECKING:
    from streams.schemas.registry_client import RegisteredSchema, RegistryClient, compact_schema

__all__ = ["schemas"]

REGISTRY_URL = click.option(
    "--registry-url",
    default=None,
    metavar="URL",
    help="Schema registry base URL (default: STREAMS_SCHEMA_REGISTRY_URL, else the local stack's).",
)


@dataclass(frozen=True)
class SubjectSchema:
    """One catalog topic's value schema: the subject it goes to, the file and its level."""

    topic: str
    subject: str
    schema_file: str  # as shown: relative to the catalog's directory
    text: str
    level: str


@dataclass
class Verdict:
    """Whether one subject's .avsc may follow what came before it (`against` names what was checked)."""

    schema: SubjectSchema
    status: str  # new | registered | compatible | incompatible
    against: list[str] = field(default_factory=list)
    messages: tuple[str, ...] = ()
    registered: RegisteredSchema | None = None  # registry checks: the version that already has this schema

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.schema.topic,
            "subject": self.schema.subject,
            "schema_file": self.schema.schema_file,
            "compatibility": self.schema.level,
            "status": self.status,
            "compatible": self.status != "incompatible",
            "checked_against": self.against,
            "messages": list(self.messages),
        }


@click.group(name="schemas")
def schemas() -> None:
    """Avro schemas: check compatibility, register them in the registry, generate typed models.

    \b
    Example:
      streams schemas check && streams schemas apply && streams schemas codegen --check
    """


@schemas.command()
@click.option(
    "--registry/--offline",
    "use_registry",
    default=None,
    help="Compare with the registry's versions (default), or offline with --against directories.",
)
@click.option(
    "--against",
    multiple=True,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Offline: a directory holding the previous release's schema files (a checkout or `git archive` of "
    "it). Repeat for older releases, oldest first; transitive levels check every one.",
)
@REGISTRY_URL
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.pass_obj
def check(
    obj: object,
    use_registry: bool | None,
    against: tuple[Path, ...],
    registry_url: str | None,
    catalog_path: Path | None,
    profile: str | None,
    output: str,
) -> None:
    """Check that every .avsc may follow the versions before it, under the topic's compatibility level.

    Exit code 1 when any schema is incompatible (or a schema file is invalid).

    \b
    Examples:
      streams schemas check
      git worktree add /tmp/prev v1.4.0 && streams schemas check --offline --against /tmp/prev
    """
    if use_registry is None:
        use_registry = not against
    if use_registry and against:
        raise click.UsageError("--against is for offline checks; drop --registry or --against")
    if not use_registry and not against:
        raise click.UsageError("--offline needs --against DIR (the previous release's schema files)")
    settings = _settings(obj)
    catalog = _catalog(settings, catalog_path, profile)
    subjects = catalog_subjects(catalog)
    if use_registry:
        with _client(settings, registry_url) as client:
            verdicts = [registry_verdict(client, subject) for subject in subjects]
    else:
        verdicts = [offline_verdict(subject, against) for subject in subjects]
    _show_verdicts(verdicts, "registry" if use_registry else "offline", output)
    bad = [verdict.schema.subject for verdict in verdicts if verdict.status == "incompatible"]
    if bad:
        raise SchemaError(f"{len(bad)} of {len(verdicts)} schema(s) incompatible: {', '.join(bad)}")


@schemas.command()
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@REGISTRY_URL
@CATALOG
@PROFILE
@OUTPUT_TABLE
@click.pass_obj
def apply(
    obj: object, dry_run: bool, registry_url: str | None, catalog_path: Path | None, profile: str | None, output: str
) -> None:
    """Register every topic's .avsc as `<topic>-value` and set the subject's compatibility level.

    Everything is checked first: if any schema is incompatible, nothing is changed for any subject.
    Idempotent: a schema that is already registered is left alone.

    \b
    Example:
      streams schemas apply --dry-run && streams schemas apply
    """
    settings = _settings(obj)
    with _client(settings, registry_url) as client:
        steps = apply_schemas(_catalog(settings, catalog_path, profile), client, dry_run=dry_run)
    _show_steps(steps, dry_run, output)


def apply_schemas(catalog: Catalog, client: RegistryClient, *, dry_run: bool = False) -> list[_Step]:
    """Plan every subject, refuse all if any is incompatible, else set levels and register what is new."""
    steps = [_plan_subject(client, subject) for subject in catalog_subjects(catalog)]
    refused = [step for step in steps if step.verdict.status == "incompatible"]
    if refused:
        raise SchemaError(
            "nothing applied: "
            + "; ".join(
                f"{step.verdict.schema.subject}: {step.verdict.schema.schema_file} is incompatible under "
                f"{step.verdict.schema.level}: {' | '.join(step.verdict.messages)}"
                for step in refused
            )
        )
    if not dry_run:
        for step in steps:
            _apply_step(client, step)
    return steps


@schemas.command()
@click.option("--check", "check_only", is_flag=True, help="Exit 1 if the file differs from a fresh generation.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write (default: streams/schemas/models.py in this package).",
)
@CATALOG
@PROFILE
@click.pass_obj
def codegen(
    obj: object, check_only: bool, out_path: Path | None, catalog_path: Path | None, profile: str | None
) -> None:
    """Generate typed pydantic event models from the catalog's .avsc files (streams/schemas/models.py).

    \b
    Examples:
      streams schemas codegen
      streams schemas codegen --check   # in CI: fails when models.py is stale
    """
    from streams.schemas.codegen import MODELS_PATH, render_models, write_models  # noqa: PLC0415 - fast CLI

    settings = _settings(obj)
    catalog = _catalog(settings, catalog_path, profile)
    path = out_path or MODELS_PATH
    shown = _shown(path)
    if check_only:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != render_models(catalog):
            state = "missing" if current is None else "stale"
            raise SchemaError(
                f"{shown} is {state}: it does not match {catalog.path}'s schemas; run "
                "`streams schemas codegen` and commit the result"
            )
        click.echo(f"{shown} is up to date")
        return
    changed = write_models(catalog, path)
    click.echo(f"wrote {shown}" if changed else f"{shown} is up to date")


# ---- the work, usable without the CLI -----------------------------------------------------------------


def catalog_subjects(catalog: Catalog) -> list[SubjectSchema]:
    """Every catalog topic with a schema, its file read and parsed; SchemaError naming a bad file."""
    found = []
    for spec in catalog.topics:
        if spec.schema_file is None:
            continue
        shown = _relative(spec.schema_file, catalog.path.parent)
        text = _read_schema(spec.schema_file, shown)
        found.append(SubjectSchema(spec.name, f"{spec.name}-value", shown, text, spec.compatibility))
    return found


def registry_verdict(client: RegistryClient, schema: SubjectSchema) -> Verdict:
    """`schema` against its subject's versions in the registry (all of them for transitive levels)."""
    registered = client.lookup_version(schema.subject, schema.text)
    if registered is not None:
        return Verdict(schema, "registered", [f"v{registered.version}"], registered=registered)
    versions = client.versions(schema.subject)
    if not versions:
        return Verdict(schema, "new")
    if not schema.level.endswith("_TRANSITIVE"):
        versions = versions[-1:]
    texts = [client.get_version(schema.subject, version) for version in versions]
    return _verdict(schema, texts, [f"v{version}" for version in versions])


def offline_verdict(schema: SubjectSchema, releases: tuple[Path, ...]) -> Verdict:
    """`schema` against the same file (catalog-relative path, else file name) in each of `releases`."""
    texts, labels = [], []
    for release in releases:
        for candidate in (release / schema.schema_file, release / Path(schema.schema_file).name):
            if candidate.is_file():
                texts.append(_read_schema(candidate, str(candidate)))
                labels.append(str(candidate))
                break
    if not texts:
        return Verdict(schema, "new")
    return _verdict(schema, texts, labels)


def _verdict(schema: SubjectSchema, texts: list[str], labels: list[str]) -> Verdict:
    result = check_compatibility(schema.text, texts, schema.level)
    checked = labels if schema.level.endswith("_TRANSITIVE") else labels[-1:]
    return Verdict(schema, "compatible" if result.compatible else "incompatible", checked, result.messages)


@dataclass
class _Step:
    """What apply does for one subject, decided before anything is changed."""

    verdict: Verdict
    current_level: str
    registered: RegisteredSchema | None
    action: str = ""

    @property
    def level_changes(self) -> bool:
        return self.current_level != self.verdict.schema.level


def _plan_subject(client: RegistryClient, schema: SubjectSchema) -> _Step:
    current_level = client.get_compatibility(schema.subject)
    verdict = registry_verdict(client, schema)
    return _Step(verdict, current_level, verdict.registered, "unchanged" if verdict.registered else "register")


def _apply_step(client: RegistryClient, step: _Step) -> None:
    schema = step.verdict.schema
    if step.level_changes:
        client.set_compatibility(schema.subject, schema.level)
    if step.registered is not None:
        return
    try:
        client.register(schema.subject, schema.text)
    except SchemaError as exc:
        if step.level_changes:  # leave the subject as it was: nothing partial
            client.set_compatibility(schema.subject, step.current_level)
        raise SchemaError(f"{schema.subject}: registering {schema.schema_file} failed: {exc}") from None
    step.registered = client.lookup_version(schema.subject, schema.text)
    step.action = "registered"


# ---- output -------------------------------------------------------------------------------------------


def _show_verdicts(verdicts: list[Verdict], mode: str, output: str) -> None:
    if output == "json":
        compatible = all(verdict.status != "incompatible" for verdict in verdicts)
        body = {"mode": mode, "compatible": compatible, "subjects": [v.to_json() for v in verdicts]}
        click.echo(json.dumps(body, indent=2))
        return
    table = Table(title=f"schema compatibility ({mode})")
    add_name_column(table, "subject", (verdict.schema.subject for verdict in verdicts))
    table.add_column("level", overflow="fold")
    table.add_column("checked against", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    styles = {"incompatible": "[bold red]incompatible[/]", "compatible": "[green]compatible[/]"}
    for verdict in verdicts:
        checked = ", ".join(verdict.against) or "-"
        table.add_row(verdict.schema.subject, verdict.schema.level, checked, styles.get(verdict.status, verdict.status))
    console = Console()
    console.print(table)
    for verdict in verdicts:  # below the table, so long reasons stay readable in a narrow terminal
        for message in verdict.messages:
            console.print(f"{verdict.schema.subject} ({verdict.schema.schema_file}): {message}", markup=False)


def _show_steps(steps: list[_Step], dry_run: bool, output: str) -> None:
    rows = []
    for step in steps:
        schema, registered = step.verdict.schema, step.registered
        action = f"would {step.action}" if dry_run and step.action == "register" else step.action
        rows.append(
            {
                "topic": schema.topic,
                "subject": schema.subject,
                "schema_file": schema.schema_file,
                "id": None if registered is None else registered.id,
                "version": None if registered is None else registered.version,
                "action": action,
                "compatibility": schema.level,
                "previous_compatibility": step.current_level,
                "compatibility_changed": step.level_changes,
            }
        )
    if output == "json":
        click.echo(json.dumps({"dry_run": dry_run, "subjects": rows}, indent=2))
        return
    table = Table(title="schemas apply" + (" (dry run: nothing changed)" if dry_run else ""))
    add_name_column(table, "subject", (str(row["subject"]) for row in rows))
    for column in ("id", "version", "action", "compatibility"):
        table.add_column(column)
    for row in rows:
        level = str(row["compatibility"])
        if row["compatibility_changed"]:
            verb = "would set" if dry_run else "set"
            level = f"{verb} {level} (was {row['previous_compatibility']})"
        table.add_row(str(row["subject"]), str(row["id"] or "-"), str(row["version"] or "-"), str(row["action"]), level)
    Console().print(table)


# ---- helpers ------------------------------------------------------------------------------------------


def _settings(obj: object) -> Settings:
    return obj if isinstance(obj, Settings) else Settings()


def _catalog(settings: Settings, catalog_path: Path | None, profile: str | None) -> Catalog:
    return load_catalog(catalog_path or settings.catalog_path, profile or settings.profile)


def _client(settings: Settings, registry_url: str | None) -> RegistryClient:
    from streams.schemas.registry_client import RegistryClient  # noqa: PLC0415 - httpx only when needed

    return RegistryClient(registry_url or settings.registry_url())


def _read_schema(path: Path, shown: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{shown}: cannot read the schema file: {exc}") from None
    try:
        parse_schema(text)
    except SchemaError as exc:
        raise SchemaError(f"{shown}: {exc}") from None
    return compact_schema(text)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
