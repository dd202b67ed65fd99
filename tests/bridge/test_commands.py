"""Tests for `streams bridge`: startup problems are one line and exit 1; --routes and --check show the table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.bridge.commands import bridge
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CATALOG = """\
version: 1
defaults: {partitions: 1, replication_factor: 1}
topics:
  invoice.cleared: {owner: b, key: invoice_id, schema: schemas/invoice.cleared.avsc}
bridge:
"""


def run(tmp_path: Path, section: str, *args: str) -> tuple[int, str, str]:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas", dirs_exist_ok=True)
    (tmp_path / "topics.yaml").write_text(CATALOG + section)
    settings = Settings(catalog_path=tmp_path / "topics.yaml", data_dir=tmp_path, redis_url="redis://127.0.0.1:9/0")
    # The reference app reads its broker URL from the environment when `celery -A` (or we) load it.
    runner = CliRunner(env={"STREAMS_REDIS_URL": "redis://127.0.0.1:9/0", "COLUMNS": "200"})
    result = runner.invoke(bridge, list(args), obj=settings)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "  tasks: [billing.pdf]\n  routes:\n    r: {topic: invoice.cleared, task: billing.pfd}\n",
            (
                "topics.yaml:8: bridge route 'r' field 'task': unknown task 'billing.pfd' "
                "(not registered in bridge.tasks "
                "of topics.yaml); did you mean 'billing.pdf'?"
            ),
        ),
        (
            "  tasks: [billing.pdf]\n  routes:\n    r: {topic: invoice.paid, task: billing.pdf}\n",
            "topics.yaml:8: bridge route 'r' field 'topic': topic 'invoice.paid' is not in the catalog",
        ),
        (
            (
                "  tasks: [billing.pdf]\n  routes:\n"
                "    r: {topic: invoice.cleared, task: billing.pdf, where: {status: X}}\n"
            ),
            "topics.yaml:8: bridge route 'r' field 'where': 'status' is not in the schema of 'invoice.cleared'",
        ),
        (
            "  routes:\n    r: {topic: invoice.cleared, task: billing.pdf}\n",
            "cannot check the routes' task names; set bridge.celery_app (or --celery-app) or list the task names",
        ),
        (
            "  celery_app: no.such.module\n  routes:\n    r: {topic: invoice.cleared, task: billing.pdf}\n",
            "cannot load the Celery app 'no.such.module': No module named 'no'",
        ),
    ],
    ids=["unknown-task", "unknown-topic", "missing-filter-field", "no-task-registry", "bad-celery-app"],
)
def test_startup_problems_are_one_line_and_exit_1(tmp_path: Path, section: str, expected: str) -> None:
    code, out, err = run(tmp_path, section)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ")
    assert expected in err


def test_routes_are_checked_against_the_reference_celery_app(tmp_path: Path) -> None:
    section = """\
  celery_app: streams.bridge.reference_tasks
  routes:
    pdf: {topic: invoice.cleared, task: streams.generate_invoice_pdf, args: {invoice_id: invoice_id, color: currency}}
"""
    code, _, err = run(tmp_path, section, "--check")
    assert code == 1
    assert (
        "task 'streams.generate_invoice_pdf' cannot take these arguments: got an unexpected keyword argument 'color'"
    ) in err


def test_routes_and_check_output(tmp_path: Path) -> None:
    section = """\
  celery_app: streams.bridge.reference_tasks
  routes:
    pdf: {topic: invoice.cleared, task: streams.generate_invoice_pdf, queue: batch, args: {invoice_id: invoice_id}}
"""
    code, out, _ = run(tmp_path, section, "--routes", "-o", "json")
    assert code == 0
    listed = json.loads(out)
    assert listed["routes"] == [
        {
            "route": "pdf",
            "topic": "invoice.cleared",
            "event_type": None,
            "where": {},
            "task": "streams.generate_invoice_pdf",
            "queue": "batch",
            "bound": 100_000,
            "priority": 0,
            "countdown_ms": 0,
            "retry": {
                "max_attempts": 3,
                "backoff_ms": 1000,
                "max_backoff_ms": 60000,
                "jitter": True,
                "max_redeliveries": 3,
            },
            "args": {"invoice_id": "invoice_id"},
            "soft_time_limit_ms": 300_000,
            "time_limit_ms": 360_000,
            "line": 8,
        }
    ]
    code, out, _ = run(tmp_path, section, "--check")
    assert (code, out.strip()) == (0, "1 route(s) OK: topics, schema fields and task names check out")
    code, out, _ = run(tmp_path, section, "--routes")
    assert code == 0
    assert "streams.generate_invoice_pdf" in out
