"""The `webhooks:` section of topics.yaml: loaded into routes, every mistake reported at its file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.catalog import load_catalog
from streams.cli import main
from streams.errors import ConfigError
from streams.webhooks.routes import WebhookRouteError, lint_webhooks, load_webhooks

REPO = Path(__file__).resolve().parents[2]
HEAD = """\
version: 1
defaults: {partitions: 1, replication_factor: 1}
topics:
  compliance.violation: {owner: c, key: invoice_id, schema: schemas/compliance.violation.avsc}
  invoice.cleared: {owner: c, key: invoice_id, schema: schemas/invoice.cleared.avsc, dlq: false}
webhooks:
"""

BLOCK = "    r:\n      topic: compliance.violation\n      url: http://h/x\n      secret: s\n"


def catalog_with(tmp_path: Path, section: str) -> Path:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas", dirs_exist_ok=True)
    path = tmp_path / "topics.yaml"
    path.write_text(HEAD + section)
    return path


def test_the_repository_catalog_declares_valid_webhooks() -> None:
    catalog = load_catalog(REPO / "topics.yaml")
    assert lint_webhooks(catalog) == []
    config = load_webhooks(catalog)
    assert [route.topic for route in config.routes] == ["compliance.violation"]


def test_a_route_loads_with_its_defaults_and_options(tmp_path: Path) -> None:
    path = catalog_with(
        tmp_path,
        """\
  group: hooks
  routes:
    errors:
      topic: compliance.violation
      where: {severity: {in: [ERROR]}}
      url: https://partner.example/hooks/violations
      secret: partner
      timeout: 5s
      mode: structured
      concurrency: 4
      retry: {max_attempts: 3, backoff: 200ms, max_backoff: 2s, jitter: false}
      circuit: {failures: 2, cooldown: 1s, max_cooldown: 8s}
    all:
      event_type: compliance.violation
      url: http://127.0.0.1:9/hook
      secret: partner
""",
    )
    config = load_webhooks(load_catalog(path))
    errors, every = config.routes
    assert config.group == "hooks"
    assert (errors.name, errors.topic, errors.mode, errors.timeout_ms, errors.concurrency) == (
        "errors",
        "compliance.violation",
        "structured",
        5_000,
        4,
    )
    assert (errors.retry.max_attempts, errors.retry.backoff_ms, errors.retry.max_backoff_ms, errors.retry.jitter) == (
        3,
        200,
        2_000,
        False,
    )
    assert (errors.circuit.failures, errors.circuit.cooldown_ms, errors.circuit.max_cooldown_ms) == (2, 1_000, 8_000)
    assert errors.matches("compliance.violation", {"severity": "ERROR"})
    assert not errors.matches("compliance.violation", {"severity": "WARNING"})
    assert (every.topic, every.event_type, every.mode, every.retry.max_attempts, every.line) == (
        "compliance.violation",
        "compliance.violation",
        "binary",
        8,
        19,
    )


@pytest.mark.parametrize(
    ("route", "line", "expected"),
    [
        ("    r: {topic: no.such, url: 'http://h/x', secret: s}\n", 8, "topic 'no.such' is not in the catalog"),
        ("    r: {topic: compliance.violation, url: 'ftp://h/x', secret: s}\n", 8, "field 'url': must be an http"),
        ("    r: {topic: compliance.violation, url: 'https://u:pw@h/x', secret: s}\n", 8, "must not carry a password"),
        (BLOCK + "      where: {sev: ERROR}\n", 12, "'sev' is not in the schema of 'compliance.violation'"),
        (BLOCK + "      where: {severity: FATAL}\n", 12, "'FATAL' is not a symbol of severity"),
        ("    r: {topic: compliance.violation, url: 'http://h/x', secret: s, mode: json}\n", 8, "field 'mode'"),
        ("    r: {topic: compliance.violation, url: 'http://h/x', secret: s, timeout: 0}\n", 8, "positive duration"),
        (
            "    r: {topic: compliance.violation, url: 'http://h/x', secret: s, retries: 3}\n",
            8,
            "unknown field; did you mean 'retry'?",
        ),
        (BLOCK + "      retry: {backoff: 5s, max_backoff: 1s}\n", 12, "1000 ms is below backoff 5000 ms"),
        ("    r: {topic: compliance.violation, url: 'http://h/x'}\n", 8, "field 'secret': missing"),
        ("    r: {topic: invoice.cleared, url: 'http://h/x', secret: s}\n", 8, "has 'dlq: false'"),
    ],
)
def test_every_mistake_is_reported_at_its_line(tmp_path: Path, route: str, line: int, expected: str) -> None:
    path = catalog_with(tmp_path, "  routes:\n" + route)
    with pytest.raises(WebhookRouteError) as caught:
        load_webhooks(load_catalog(path))
    assert f"{path}:{line}: webhook route 'r'" in str(caught.value)
    assert expected in str(caught.value)


def test_a_missing_secret_names_the_variable_never_a_value(tmp_path: Path) -> None:
    path = catalog_with(tmp_path, "  routes:\n    r: {topic: compliance.violation, url: 'http://h/x', secret: s}\n")
    config = load_webhooks(load_catalog(path))
    with pytest.raises(
        ConfigError,
        match=r"topics.yaml:8: webhook route 'r' field 'secret': no secret 's' in "
        r"STREAMS_WEBHOOK_SECRETS \(known: other\)",
    ):
        config.secrets({"other": "whsec_hidden"})


def test_the_command_checks_routes_and_fails_in_one_line(tmp_path: Path) -> None:
    path = catalog_with(tmp_path, "  routes:\n    r: {topic: compliance.violation, url: 'http://h/x', secret: s}\n")
    runner = CliRunner()
    env = {"STREAMS_CATALOG_PATH": str(path), "STREAMS_WEBHOOK_SECRETS": '{"s": "' + "k" * 32 + '"}'}
    ok = runner.invoke(main, ["webhooks", "--check"], env=env)
    assert ok.exit_code == 0
    assert ok.output.strip() == "1 webhook route(s) OK: topics, schema fields and secrets check out"
    shown = runner.invoke(main, ["webhooks", "--routes", "-o", "json"], env=env)
    assert '"url": "http://h/x"' in shown.output
    assert "kkkk" not in shown.output
    missing = runner.invoke(main, ["webhooks", "--check"], env={**env, "STREAMS_WEBHOOK_SECRETS": "{}"})
    assert missing.exit_code == 1
    assert missing.output.count("\n") == 1
    assert missing.output.startswith(f"error: {path}:8: webhook route 'r' field 'secret': no secret 's'")


def test_a_malformed_secrets_variable_is_one_error_for_the_webhook_commands_only(tmp_path: Path) -> None:
    path = catalog_with(tmp_path, "  routes:\n    r: {topic: compliance.violation, url: 'http://h/x', secret: s}\n")
    runner = CliRunner()
    env = {"STREAMS_CATALOG_PATH": str(path), "STREAMS_WEBHOOK_SECRETS": '{"s": "whsec_not-closed'}
    broken = runner.invoke(main, ["webhooks", "--check"], env=env)
    assert (broken.exit_code, broken.output) == (
        1,
        (
            "error: STREAMS_WEBHOOK_SECRETS must be a JSON object of secret names to secrets, like "
            '{"partner-a": "whsec_..."}\n'
        ),
    )
    assert "not-closed" not in broken.output
    assert runner.invoke(main, ["topics", "lint"], env=env).exit_code == 0
