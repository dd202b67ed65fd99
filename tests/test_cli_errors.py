"""Every CLI command's documented error cases, run as a user runs them: one `error:` line, exit 1, no traceback.

Each case is a real `streams` process (librdkafka writes to the process's stderr, which CliRunner would not
see) in a fresh project directory. Cases that need a live broker are in tests/integration/test_cli_errors_live.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NO_KAFKA = {"STREAMS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # nothing listens on port 1
NO_REGISTRY = {"STREAMS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1"}
NO_REDIS = {"STREAMS_REDIS_URL": "redis://127.0.0.1:1/0"}
BAD_PROFILE = {"STREAMS_PROFILE": "prod"}
BROKEN_CATALOG = {"STREAMS_CATALOG_PATH": "broken.yaml"}
KAFKA_FIX = "(STREAMS_KAFKA_BOOTSTRAP_SERVERS): Connection refused"

# (command line, environment, a piece of the one line that must name the input and the fix)
CASES: list[tuple[str, dict[str, str], str]] = [
    # bad Kafka address: every command that talks to Kafka says so in one line naming the variable
    ("topics plan", NO_KAFKA, KAFKA_FIX),
    ("topics apply", NO_KAFKA, KAFKA_FIX),
    ("topics list", NO_KAFKA, KAFKA_FIX),
    ("consume invoice.created", NO_KAFKA | NO_REGISTRY, KAFKA_FIX),
    ("publish user.action --file events.jsonl", NO_KAFKA | NO_REGISTRY, KAFKA_FIX),
    ("dlq list invoice.created", NO_KAFKA, KAFKA_FIX),
    ("dlq redrive invoice.created", NO_KAFKA, KAFKA_FIX),
    ("audit verify", NO_KAFKA | NO_REGISTRY, KAFKA_FIX),
    ("replay invoice.created --from -1h --dry-run", NO_KAFKA, KAFKA_FIX),
    ("worker", NO_KAFKA | NO_REGISTRY, KAFKA_FIX),
    ("bridge", NO_KAFKA | NO_REDIS | NO_REGISTRY, KAFKA_FIX),
    ("registry serve --port 0 --bootstrap-servers 127.0.0.1:1", {}, "(--bootstrap-servers): Connection refused"),
    ("topics plan", {"STREAMS_KAFKA_BOOTSTRAP_SERVERS": "no-such-host.invalid:9092"}, "no-such-host.invalid:9092"),
    # no local stack and no address
    ("topics plan", {}, "no kafka address: set STREAMS_KAFKA_BOOTSTRAP_SERVERS, or start the local stack"),
    # bad settings
    (
        "topics plan",
        BAD_PROFILE,
        "STREAMS_PROFILE='prod' is not valid: Input should be 'local', 'cluster' or 'production'",
    ),
    ("dev status", BAD_PROFILE, "STREAMS_PROFILE='prod'"),
    ("topics plan", {"STREAMS_KAFKA_SECURITY_PROTOCOL": "BOGUS"}, "STREAMS_KAFKA_SECURITY_PROTOCOL='BOGUS'"),
    ("topics plan", {"STREAMS_KAFKA_CONNECT_TIMEOUT_S": "soon"}, "STREAMS_KAFKA_CONNECT_TIMEOUT_S='soon'"),
    # bad catalog
    ("topics plan", BROKEN_CATALOG | NO_KAFKA, "broken.yaml:3: topic 'a.b' field 'partitions'"),
    ("bridge --check", BROKEN_CATALOG, "broken.yaml:3: topic 'a.b' field 'partitions'"),
    (
        "publish invoice.created --file events.jsonl",
        {"STREAMS_CATALOG_PATH": "missing.yaml"},
        "missing.yaml: cannot read the catalog",
    ),
    # unknown topic (in the catalog; on the cluster is a live case)
    ("publish no.such.topic --file events.jsonl", {}, "unknown topic 'no.such.topic'"),
    ("dlq list no.such.topic", NO_KAFKA, "unknown topic 'no.such.topic'"),
    # unreachable registry
    ("schemas check", NO_REGISTRY, "cannot reach the schema registry at http://127.0.0.1:1"),
    ("schemas apply", NO_REGISTRY | NO_KAFKA, "cannot reach the schema registry at http://127.0.0.1:1"),
    # bad files and values
    ("publish invoice.created --file missing.jsonl", {}, "'missing.jsonl': No such file or directory"),
    (
        "publish invoice.created --file not-json.jsonl",
        {},
        "not-json.jsonl:1: not valid JSON: a trailing comma at column 8",
    ),
    (
        "publish user.action --file numeric-time.jsonl",
        {},
        "numeric-time.jsonl:1: field 'occurred_at': 12 is a number, not a time",
    ),
    ("evidence verify no-bundle", {}, "no-bundle is not an evidence bundle"),
    ("replay invoice.created --export out --sign-key missing.key", NO_KAFKA, "cannot read the signing key missing.key"),
    ("replay invoice.created --from yesterday --dry-run", NO_KAFKA, "--from 'yesterday' is neither an ISO-8601 time"),
    ("topics plan --no-such-option", {}, "No such option: --no-such-option (see `streams topics plan --help`)"),
]

USER_ACTION = (
    '{"user_id": "u-1", "tenant_id": "acme", "action": "invoice.approve", "resource": "INV-1",'
    ' "ip_address": "10.0.0.1", "user_agent": "Mozilla/5.0", "occurred_at": 12}\n'
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory as a new user has it: the catalog, its schemas, a few input files; no stack."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "topics.yaml", root / "topics.yaml")
    shutil.copytree(REPO / "schemas", root / "schemas")
    (root / "broken.yaml").write_text("version: 1\ntopics:\n  a.b: {partitions: nope}\n")
    valid = USER_ACTION.replace('"occurred_at": 12', '"occurred_at": "2026-12-07T10:00:00Z"')
    (root / "events.jsonl").write_text(valid)
    (root / "not-json.jsonl").write_text('{"a": 1,}\n')
    (root / "numeric-time.jsonl").write_text(USER_ACTION)
    (root / "no-bundle").mkdir()
    return root


def run_streams(arguments: str, environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("STREAMS_")}
    env |= {"PYTHONPATH": str(REPO), "STREAMS_KAFKA_CONNECT_TIMEOUT_S": "1", "COLUMNS": "200", **environment}
    # S603: our own CLI with a fixed argument list.
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *arguments.split()],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("arguments", "environment", "expected"),
    CASES,
    ids=[f"{case[0]} [{','.join(case[1]) or 'no env'}]" for case in CASES],
)
def test_each_error_is_one_line_exit_1_no_traceback(
    project: Path, arguments: str, environment: dict[str, str], expected: str
) -> None:
    result = run_streams(arguments, environment, project)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_librdkafka_lines_show_only_with_verbose(project: Path) -> None:
    quiet = run_streams("topics plan", NO_KAFKA, project)
    loud = run_streams("--verbose topics plan", NO_KAFKA, project)
    assert "|FAIL|" not in quiet.stderr
    assert "|FAIL|" in loud.stderr  # librdkafka's own retry lines, for whoever asked for them
    assert loud.stderr.splitlines()[-1] == quiet.stderr.strip()


def test_commands_find_the_project_from_a_subdirectory(project: Path) -> None:
    subdirectory = project / "schemas"
    result = run_streams("topics plan", NO_KAFKA, subdirectory)
    assert "cannot reach Kafka" in result.stderr  # it read ../topics.yaml and got as far as the broker
    missing = run_streams("topics plan", {}, subdirectory)
    assert f"looked for a running kafka in {project / '.streams' / 'local'}" in missing.stderr


def test_version_and_no_authlib_warning(project: Path) -> None:
    result = run_streams("--version", {}, project)
    assert result.returncode == 0
    assert result.stdout.startswith("streams ")
    checked = run_streams("schemas check", NO_REGISTRY, project)
    assert "Deprecat" not in checked.stderr
