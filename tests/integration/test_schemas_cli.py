"""`streams schemas check/apply` and RegistryClient against a real registry on a real broker.

Each test has its own catalog with unique topic names, so subjects never collide with other tests.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest
from click.testing import CliRunner, Result

from streams.cli import StreamsGroup
from streams.errors import SchemaError
from streams.local.processes import free_port
from streams.schemas import check_compatibility
from streams.schemas.commands import schemas
from streams.schemas.registry_client import RegistryClient, RegistryRequestError
from streams.settings import Settings
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]


@click.group(cls=StreamsGroup)
@click.pass_context
def root(ctx: click.Context) -> None:
    """The `streams` root as the lead wires it: Settings in ctx.obj, StreamsError -> `error: ...`, exit 1."""
    ctx.obj = Settings()


root.add_command(schemas)


class Project:
    """A catalog in a temporary directory: an invoice topic and a workflow topic with unique names."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory, self.url = directory, url
        tag = uuid.uuid4().hex[:8]
        self.invoice, self.workflow = f"t.schemas{tag}.invoice", f"t.schemas{tag}.workflow"
        (directory / "schemas").mkdir()
        shutil.copy(REPO / "schemas/invoice.created.avsc", directory / "schemas/invoice.avsc")
        shutil.copy(REPO / "schemas/workflow.completed.avsc", directory / "schemas/workflow.avsc")
        self.catalog = directory / "topics.yaml"
        self.catalog.write_text(f"""\
version: 1
defaults: {{partitions: 1, replication_factor: 1}}
topics:
  {self.invoice}:
    owner: tests
    key: invoice_id
    schema: schemas/invoice.avsc
  {self.workflow}:
    owner: tests
    schema: schemas/workflow.avsc
    compatibility: FULL
""")

    def run(self, *args: str, url: str | None = None) -> Result:
        env = {"STREAMS_SCHEMA_REGISTRY_URL": url or self.url, "STREAMS_CATALOG_PATH": str(self.catalog)}
        return CliRunner().invoke(root, ["schemas", *args], env=env)

    def json(self, *args: str) -> dict[str, Any]:
        result = self.run(*args, "--output", "json")
        assert result.exit_code == 0, result.output + result.stderr
        return dict(json.loads(result.stdout))

    def schema(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self.directory / "schemas" / f"{name}.avsc").read_text()))

    def edit(self, name: str, extra_field: dict[str, Any]) -> str:
        schema = self.schema(name)
        schema["fields"].append(extra_field)
        text = json.dumps(schema, indent=2)
        (self.directory / "schemas" / f"{name}.avsc").write_text(text)
        return text

    def snapshot(self) -> Path:
        """The schema files as they are now: a stand-in for the previous release's checkout."""
        release = self.directory / f"release-{uuid.uuid4().hex[:6]}"
        shutil.copytree(self.directory / "schemas", release / "schemas")
        return release


@pytest.fixture
def project(tmp_path: Path, registry_url: str) -> Project:  # noqa: F811 - the imported fixture
    return Project(tmp_path, registry_url)


@pytest.fixture
def client(registry_url: str) -> Iterator[RegistryClient]:  # noqa: F811 - the imported fixture
    with RegistryClient(registry_url) as registry:
        yield registry


def by_subject(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["subject"]: row for row in body["subjects"]}


def test_apply_registers_every_schema_once_and_sets_levels(project: Project, client: RegistryClient) -> None:
    invoice, workflow = f"{project.invoice}-value", f"{project.workflow}-value"
    dry = by_subject(project.json("apply", "--dry-run"))
    assert {row["action"] for row in dry.values()} == {"would register"}
    assert client.versions(invoice) == []

    first = by_subject(project.json("apply"))
    assert set(first) == {invoice, workflow}
    assert {row["action"] for row in first.values()} == {"registered"}
    assert first[invoice]["version"] == 1
    assert client.latest(invoice) == (first[invoice]["id"], 1, client.schema_by_id(first[invoice]["id"]))
    assert first[workflow]["compatibility_changed"] is True
    assert client.get_compatibility(workflow) == "FULL"
    assert client.get_compatibility(invoice) == "BACKWARD_TRANSITIVE"

    second = by_subject(project.json("apply"))
    assert {row["action"] for row in second.values()} == {"unchanged"}
    assert {row["compatibility_changed"] for row in second.values()} == {False}
    assert second[invoice]["id"] == first[invoice]["id"]
    assert client.versions(invoice) == [1]

    checked = by_subject(project.json("check"))
    assert {row["status"] for row in checked.values()} == {"registered"}


def test_a_compatible_edit_checks_and_registers_as_a_new_version(project: Project, client: RegistryClient) -> None:
    project.json("apply")
    release = project.snapshot()
    project.edit("invoice", {"name": "note", "type": ["null", "string"], "default": None})
    checked = by_subject(project.json("check"))
    assert checked[f"{project.invoice}-value"]["status"] == "compatible"
    assert checked[f"{project.invoice}-value"]["checked_against"] == ["v1"]
    offline = by_subject(project.json("check", "--offline", "--against", str(release)))
    assert offline[f"{project.invoice}-value"]["status"] == "compatible"
    applied = by_subject(project.json("apply"))
    assert applied[f"{project.invoice}-value"]["action"] == "registered"
    assert applied[f"{project.invoice}-value"]["version"] == 2
    assert applied[f"{project.workflow}-value"]["action"] == "unchanged"


def test_an_incompatible_edit_fails_check_and_apply_changes_nothing(project: Project, client: RegistryClient) -> None:
    invoice = f"{project.invoice}-value"
    project.json("apply")
    release = project.snapshot()
    # A required field without a default: the new schema cannot read events written before it.
    new_text = project.edit("invoice", {"name": "branch_code", "type": "string"})
    # A compatible change elsewhere must not be registered either: apply is all or nothing.
    project.edit("workflow", {"name": "note", "type": ["null", "string"], "default": None})

    checked = project.run("check", "--output", "json")
    assert checked.exit_code == 1
    verdicts = by_subject(json.loads(checked.stdout))
    assert verdicts[invoice]["status"] == "incompatible"
    assert any("branch_code" in message for message in verdicts[invoice]["messages"])
    assert verdicts[f"{project.workflow}-value"]["status"] == "compatible"
    assert checked.stderr.startswith(f"error: 1 of 2 schema(s) incompatible: {invoice}")

    table = project.run("check")
    assert table.exit_code == 1
    assert "incompatible" in table.stdout

    applied = project.run("apply")
    assert applied.exit_code == 1
    assert applied.stderr.count("\n") == 1
    assert f"nothing applied: {invoice}: schemas/invoice.avsc is incompatible under BACKWARD_TRANSITIVE" in (
        applied.stderr
    )
    assert "branch_code" in applied.stderr
    assert client.versions(invoice) == [1]
    assert client.versions(f"{project.workflow}-value") == [1]

    # The offline check, the registry's compatibility endpoint and the library agree on this case.
    offline = project.run("check", "--offline", "--against", str(release), "--output", "json")
    assert offline.exit_code == 1
    assert by_subject(json.loads(offline.stdout))[invoice]["status"] == "incompatible"
    compatible, messages = client.test_compatibility(invoice, new_text)
    assert compatible is False
    assert any("branch_code" in message for message in messages)
    assert client.test_compatibility(invoice, new_text, version=None)[0] is False
    assert not check_compatibility(new_text, [client.get_version(invoice, 1)], "BACKWARD_TRANSITIVE").compatible


def test_check_against_releases_is_transitive(project: Project) -> None:
    invoice = f"{project.invoice}-value"
    oldest = project.snapshot()
    project.edit("invoice", {"name": "branch_code", "type": "string", "default": "HQ"})
    middle = project.snapshot()
    # Dropping the default is fine against `middle` (which writes branch_code), not against `oldest`.
    schema = project.schema("invoice")
    del schema["fields"][-1]["default"]
    (project.directory / "schemas/invoice.avsc").write_text(json.dumps(schema))

    latest_only = project.run("check", "--against", str(middle), "--output", "json")
    assert latest_only.exit_code == 0, latest_only.stderr
    both = project.run("check", "--against", str(oldest), "--against", str(middle), "--output", "json")
    assert both.exit_code == 1
    verdict = by_subject(json.loads(both.stdout))[invoice]
    assert verdict["checked_against"] == [str(oldest / "schemas/invoice.avsc"), str(middle / "schemas/invoice.avsc")]
    assert any("existing schema #1 of 2" in message for message in verdict["messages"])


def test_invalid_schema_files_are_one_error_naming_the_file(project: Project) -> None:
    release = project.snapshot()
    (release / "schemas/workflow.avsc").write_text('{"type": "record", "name": "W", "fields": [')
    result = project.run("check", "--offline", "--against", str(release))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {release / 'schemas/workflow.avsc'}: invalid Avro schema: not JSON")

    (project.directory / "schemas/invoice.avsc").write_text('{"type": "record", "name": "I", "fields": 3}')
    current = project.run("check", "--offline", "--against", str(project.snapshot()))
    assert current.exit_code == 1
    assert "schemas/invoice.avsc" in current.stderr
    assert current.stderr.count("\n") == 1


def test_offline_needs_a_directory(project: Project) -> None:
    result = project.run("check", "--offline")
    assert result.exit_code == 1  # a usage error is one line and exit 1 like any bad input (decision 0019)
    assert "--offline needs --against DIR" in result.stderr
    assert result.stderr.count("\n") == 1


def test_registry_down_is_one_clear_error(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    project = Project(tmp_path, down)
    for command in ("check", "apply"):
        result = project.run(command)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: cannot reach the schema registry at {down}: ")
        assert result.stderr.count("\n") == 1
    with RegistryClient(down, timeout=2) as registry, pytest.raises(SchemaError, match="cannot reach"):
        registry.latest("anything-value")


def test_client_calls_and_confluent_errors(client: RegistryClient) -> None:
    subject = f"t.client.{uuid.uuid4().hex[:8]}-value"
    v1 = json.dumps(
        {"type": "record", "name": "R", "namespace": "t.client", "fields": [{"name": "id", "type": "string"}]}
    )
    v2 = json.dumps(
        {
            "type": "record",
            "name": "R",
            "namespace": "t.client",
            "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "long", "default": 0}],
        }
    )
    assert client.lookup(subject, v1) is None
    assert client.latest(subject) is None
    assert client.versions(subject) == []
    assert client.test_compatibility(subject, v1) == (True, ())
    first = client.register(subject, v1)
    assert client.register(subject, v1) == first
    assert client.lookup(subject, v1) == first
    assert client.lookup(subject, v2) is None
    second = client.register(subject, v2)
    assert client.versions(subject) == [1, 2]
    assert client.latest(subject) == (second, 2, client.get_version(subject, 2))
    assert json.loads(client.schema_by_id(first)) == json.loads(v1)
    assert client.get_version(subject, "latest") == client.get_version(subject, 2)
    assert client.set_compatibility(subject, "forward") == "FORWARD"
    assert client.get_compatibility(subject) == "FORWARD"
    with pytest.raises(RegistryRequestError) as missing:
        client.get_version(subject, 9)
    assert missing.value.error_code == 40402
    assert missing.value.status == 404
    assert "error_code 40402" in str(missing.value)
    with pytest.raises(RegistryRequestError) as refused:
        client.set_compatibility(subject, "SIDEWAYS")
    assert refused.value.error_code == 42203
    with pytest.raises(RegistryRequestError) as invalid:
        client.register(subject, '{"type": "nonsense"}')
    assert invalid.value.error_code == 42201
