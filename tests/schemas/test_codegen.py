"""The model generator: the checked-in models.py is fresh, output is deterministic, clean and importable.

Edge schemas (every Avro type, defaults, recursion, names pydantic reserves) go through ruff and mypy too.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from streams.catalog import load_catalog
from streams.errors import SchemaError
from streams.schemas.codegen import HEADER, MODELS_PATH, render_models
from streams.schemas.commands import schemas

REPO = Path(__file__).resolve().parents[2]
EDGE = {
    "type": "record",
    "name": "Everything",
    "namespace": "t.edge",
    "doc": 'Every Avro type, "quoted", with a backslash \\ and a doc long enough to be wrapped over more '
    "than one line of the generated module.",
    "fields": [
        {"name": "flag", "type": "boolean", "default": True},
        {"name": "small", "type": "int", "default": -3},
        {"name": "big", "type": "long", "default": 9_000_000_000},
        {"name": "ratio", "type": "float", "default": 1},
        {"name": "raw", "type": "bytes", "default": '\u0000\u00ffa"'},
        {"name": "text", "type": "string", "default": 'it\'s "x"'},
        {"name": "date", "type": {"type": "int", "logicalType": "date"}, "default": 1},
        {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}, "default": 3_600_000},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}, "default": 1000},
        {
            "name": "id",
            "type": {"type": "string", "logicalType": "uuid"},
            "default": "7d444840-9dc0-11d1-b245-5ffdce74fad2",
        },
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
            "default": "\u0001\u0000",
        },
        {"name": "hash", "type": {"type": "fixed", "name": "Md5", "size": 16}},
        {
            "name": "money",
            "type": {
                "type": "fixed",
                "name": "Money",
                "size": 8,
                "logicalType": "decimal",
                "precision": 12,
                "scale": 4,
            },
        },
        {
            "name": "kind",
            "type": {"type": "enum", "name": "Kind", "symbols": ["A", "class", "O", "_x"]},
            "default": "class",
        },
        {"name": "kinds", "type": {"type": "array", "items": "Kind"}, "default": ["A"]},
        {"name": "tags", "type": {"type": "map", "values": "long"}, "default": {"a": 1}},
        {
            "name": "nested",
            "type": {
                "type": "record",
                "name": "Inner",
                "namespace": "t.other",
                "fields": [
                    {"name": "x", "type": "int", "default": 1},
                    {"name": "json", "type": ["null", "string"], "default": None},
                ],
            },
            "default": {"x": 2, "json": None},
        },
        {"name": "choice", "type": ["null", "string", "long", "t.other.Inner"], "default": None},
        {"name": "either", "type": ["string", "null"], "default": "x"},
        {"name": "schema", "type": "string", "doc": "shadows a BaseModel attribute"},
        {"name": "model_x", "type": "string"},
        {"name": "TOPIC", "type": "string"},
    ],
}
NODE = {
    "type": "record",
    "name": "Node",
    "namespace": "t.edge",
    "fields": [
        {"name": "value", "type": "string"},
        {"name": "next", "type": ["null", "Node"], "default": None},
        {"name": "children", "type": {"type": "array", "items": "Node"}, "default": []},
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "Inner",
                "namespace": "t.other",
                "fields": [
                    {"name": "x", "type": "int", "default": 1},
                    {"name": "json", "type": ["null", "string"], "default": None},
                ],
            },
        },
    ],
}


def write_catalog(directory: Path, schemas_by_topic: dict[str, dict[str, Any]]) -> Path:
    (directory / "schemas").mkdir(exist_ok=True)
    lines = ["version: 1", "defaults: {partitions: 1, replication_factor: 1}", "topics:"]
    for topic, schema in schemas_by_topic.items():
        (directory / "schemas" / f"{topic}.avsc").write_text(json.dumps(schema, indent=2))
        lines += [f"  {topic}:", "    owner: tests", f"    schema: schemas/{topic}.avsc"]
    path = directory / "topics.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def import_file(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the recursive Node through the module
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_models_are_what_codegen_generates() -> None:
    fresh = render_models(load_catalog(REPO / "topics.yaml"))
    assert MODELS_PATH.read_text(encoding="utf-8") == fresh, "run `streams schemas codegen` and commit"


def test_generation_is_deterministic_and_independent_of_how_the_catalog_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    absolute = render_models(load_catalog(REPO / "topics.yaml"))
    monkeypatch.chdir(REPO)
    assert render_models(load_catalog(Path("topics.yaml"))) == absolute
    assert absolute.startswith(HEADER)
    compile(absolute, "models.py", "exec")  # syntax only; never executed from a string


def test_edge_schemas_generate_lint_clean_type_clean_importable_models(tmp_path: Path) -> None:
    catalog = load_catalog(write_catalog(tmp_path, {"edge.everything": EDGE, "edge.node": NODE}))
    out = tmp_path / "edge_models.py"
    out.write_text(render_models(catalog))
    config = str(REPO / "pyproject.toml")
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", config, str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", config, "--no-incremental", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    models = import_file(out, "edge_models_under_test")
    node = models.Node(value="a", next={"value": "b", "inner": {}}, inner={"x": 3})
    assert node.next.inner.x == 1
    assert node.children == ()
    event = models.Everything.model_validate(
        {"hash": b"h" * 16, "money": Decimal("1.5"), "schema": "s", "model_x": "m", "TOPIC": "t"}
    )
    assert event.schema_ == "s"
    assert event.field_model_x == "m"
    assert event.amount == Decimal("2.56")  # bytes 0x0100 = 256, scale 2
    assert event.raw == b'\x00\xffa"'
    assert event.kind is models.Kind.class_
    assert event.kinds == (models.Kind.A,)
    assert event.nested == models.Inner(x=2, json=None)
    assert event.date_.isoformat() == "1970-01-02"
    assert event.when.utcoffset() is not None
    assert event.local.tzinfo is None
    dumped = event.model_dump(by_alias=True)
    assert dumped["schema"] == "s"
    assert dumped["date"] == event.date_
    with pytest.raises(ValidationError):
        models.Everything.model_validate({"hash": b"short", "money": 1, "schema": "", "model_x": "", "TOPIC": ""})


def test_a_named_type_shared_by_two_schemas_is_generated_once(tmp_path: Path) -> None:
    catalog = load_catalog(write_catalog(tmp_path, {"edge.everything": EDGE, "edge.node": NODE}))
    assert render_models(catalog).count("class Inner(BaseModel):") == 1


def test_a_shared_named_type_that_differs_is_an_error_naming_both_files(tmp_path: Path) -> None:
    changed = json.loads(json.dumps(NODE))
    changed["fields"][3]["type"]["fields"][0]["doc"] = "now documented"
    catalog = load_catalog(write_catalog(tmp_path, {"edge.everything": EDGE, "edge.node": changed}))
    with pytest.raises(
        SchemaError,
        match=r"schemas/edge.node.avsc: Avro type t.other.Inner differs .* "
        r"schemas/edge.everything.avsc",
    ):
        render_models(catalog)


def test_two_types_with_one_class_name_are_an_error(tmp_path: Path) -> None:
    other = {"type": "record", "name": "Node", "namespace": "t.elsewhere", "fields": []}
    catalog = load_catalog(write_catalog(tmp_path, {"edge.node": NODE, "edge.other": other}))
    with pytest.raises(SchemaError, match=r"t.elsewhere.Node and t.edge.Node would both generate class Node"):
        render_models(catalog)


def test_one_record_for_two_topics_is_an_error(tmp_path: Path) -> None:
    catalog = load_catalog(write_catalog(tmp_path, {"edge.node": NODE, "edge.node2": NODE}))
    with pytest.raises(SchemaError, match=r"record t.edge.Node is also the value of topic 'edge.node'"):
        render_models(catalog)


def test_codegen_command_writes_then_check_passes_and_a_stale_file_fails(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, {"edge.node": NODE})
    out = tmp_path / "models.py"
    runner = CliRunner()
    args = ["--catalog", str(catalog), "--out", str(out)]
    written = runner.invoke(schemas, ["codegen", *args])
    assert written.exit_code == 0, written.output
    assert "wrote" in written.output
    assert out.read_text() == render_models(load_catalog(catalog))
    again = runner.invoke(schemas, ["codegen", *args])
    assert "up to date" in again.output
    assert runner.invoke(schemas, ["codegen", "--check", *args]).exit_code == 0

    out.write_text(out.read_text() + "# a hand edit\n")
    stale = runner.invoke(schemas, ["codegen", "--check", *args])
    assert stale.exit_code == 1
    assert isinstance(stale.exception, SchemaError)
    message = str(stale.exception)
    assert "\n" not in message
    assert "is stale" in message
    assert "streams schemas codegen" in message


def test_codegen_check_through_the_root_group_prints_one_error_line(tmp_path: Path) -> None:
    from streams.cli import StreamsGroup  # noqa: PLC0415 - the root's error handling is what is tested

    root = StreamsGroup(name="streams", commands={"schemas": schemas})
    catalog = write_catalog(tmp_path, {"edge.node": NODE})
    result = CliRunner().invoke(
        root, ["schemas", "codegen", "--check", "--catalog", str(catalog), "--out", str(tmp_path / "missing.py")]
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    assert "missing.py is missing" in result.stderr


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    for command in ("check", "apply", "codegen"):
        result = runner.invoke(schemas, [command, "--help"])
        assert result.exit_code == 0
        assert "streams schemas " + command in result.output
