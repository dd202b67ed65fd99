"""Tests for streams.bridge.routes: the `bridge:` section, checked against the catalog and task registries.

Each mistake test asserts the file:line, the field and the text of the message.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from streams.bridge.errors import RouteError
from streams.bridge.routes import (
    BridgeRoute,
    FieldFilter,
    RetryPolicy,
    check_tasks,
    lint_bridge,
    load_bridge,
)
from streams.catalog import load_catalog

REPO = Path(__file__).resolve().parents[2]
HEAD = """\
version: 1
defaults: {partitions: 3, replication_factor: 1}
topics:
  invoice.cleared: {owner: b, key: invoice_id, schema: schemas/invoice.cleared.avsc}
  compliance.violation: {owner: c, key: invoice_id, schema: schemas/compliance.violation.avsc}
  plain.topic: {owner: c}
  no.dlq: {owner: c, schema: schemas/invoice.cleared.avsc, dlq: false}
bridge:
  tasks: [billing.pdf, compliance.notify]
"""  # the bridge's own keys start on line 10


def write(tmp_path: Path, bridge: str) -> Path:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas", dirs_exist_ok=True)
    path = tmp_path / "topics.yaml"
    path.write_text(HEAD + bridge)
    return path


def problem(tmp_path: Path, bridge: str) -> RouteError:
    with pytest.raises(RouteError) as raised:
        load_bridge(load_catalog(write(tmp_path, bridge)))
    return raised.value


def test_reference_catalog_routes_load_and_name_the_reference_tasks() -> None:
    config = load_bridge(load_catalog(REPO / "topics.yaml"))
    assert config.group == "streams-bridge"
    assert config.failed_topic == "task.failed"
    assert config.topics() == ("compliance.violation", "invoice.cleared")
    routes = {route.name: route for route in config.routes}
    assert routes["invoice-pdf"].task == "streams.generate_invoice_pdf"
    assert routes["compliance-errors"].where == (FieldFilter(("severity",), frozenset({"ERROR"})),)
    assert routes["compliance-warnings"].queue == "batch"
    assert routes["compliance-warnings"].args == routes["compliance-errors"].args  # a YAML alias
    assert {name: spec.bound for name, spec in config.queues.items()} == {
        "interactive": 1000,
        "default": 10000,
        "batch": 100000,
    }
    assert lint_bridge(load_catalog(REPO / "topics.yaml")) == []


def test_a_full_route(tmp_path: Path) -> None:
    config = load_bridge(
        load_catalog(
            write(
                tmp_path,
                """\
  group: g1
  queues: {interactive: {bound: 5}, default: {}}
  routes:
    r1:
      topic: compliance.violation
      event_type: compliance.violation.v2
      where: {severity: {in: [ERROR, WARNING]}, source_event.partition: 3}
      task: compliance.notify
      queue: interactive
      priority: 6
      countdown: 30s
      retry: {max_attempts: 7, backoff: 250ms, max_backoff: 1m, jitter: false, max_redeliveries: 1}
      args: {violation: violation_id, origin: source_event.topic}
""",
            )
        )
    )
    (route,) = config.routes
    assert route == BridgeRoute(
        name="r1",
        topic="compliance.violation",
        task="compliance.notify",
        queue="interactive",
        event_type="compliance.violation.v2",
        where=(
            FieldFilter(("severity",), frozenset({"ERROR", "WARNING"})),
            FieldFilter(("source_event", "partition"), frozenset({3})),
        ),
        priority=6,
        countdown_ms=30_000,
        retry=RetryPolicy(7, 250, 60_000, False, 1),
        args=(("violation", ("violation_id",)), ("origin", ("source_event", "topic"))),
        line=13,
    )
    assert config.group == "g1"
    assert config.queues["interactive"].bound == 5
    assert config.queues["default"].bound == 10_000  # a latency class keeps its default bound
    event = {"violation_id": "v", "severity": "ERROR", "source_event": {"partition": 3, "topic": "t"}}
    assert route.matches("compliance.violation.v2", event)
    assert not route.matches("compliance.violation", event)
    assert not route.matches("compliance.violation.v2", {**event, "severity": "INFO"})
    assert route.kwargs(event) == {"violation": "v", "origin": "t"}
    with pytest.raises(KeyError, match="no field 'violation_id' for argument 'violation'"):
        route.kwargs({"source_event": {"topic": "t"}})


@pytest.mark.parametrize(
    ("bridge", "line", "field", "message"),
    [
        (
            "  routes:\n    r:\n      topic: invoice.clearde\n      task: billing.pdf\n",
            12,
            "topic",
            "topic 'invoice.clearde' is not in the catalog; did you mean 'invoice.cleared'?",
        ),
        (
            "  routes:\n    r:\n      topic: compliance.violation\n      where: {severty: ERROR}\n      task: x.y\n",
            13,
            "where",
            (
                "'severty' is not in the schema of 'compliance.violation': record ComplianceViolation has no "
                "field 'severty'; its fields: violation_id"
            ),
        ),
        (
            "  routes:\n    r:\n      topic: compliance.violation\n      where: {severity: FATAL}\n      task: x\n",
            13,
            "where",
            "'FATAL' is not a symbol of severity (ERROR, WARNING)",
        ),
        (
            "  routes:\n    r:\n      topic: invoice.cleared\n      where: {vat_total: 3}\n      task: x\n",
            13,
            "where",
            "'vat_total' is a decimal; filters compare string, enum, int, long or boolean fields",
        ),
        (
            "  routes:\n    r:\n      topic: invoice.cleared\n      args: {total: totals.vat}\n      task: x\n",
            13,
            "args",
            "'totals.vat' is not in the schema of 'invoice.cleared'",
        ),
        (
            "  routes:\n    r:\n      topic: invoice.cleared\n      task: x\n      queue: urgent\n",
            11,
            "queue",
            "unknown queue 'urgent'; known: batch, default, interactive",
        ),
        (
            "  routes:\n    r:\n      topic: invoice.cleared\n      task: x\n      priority: 10\n",
            14,
            "priority",
            "must be 0-9 (Redis: 0 is served first), got 10",
        ),
        (
            "  routes:\n    r:\n      topic: invoice.cleared\n      task: x\n      countdown: soon\n",
            14,
            "countdown",
            "not a duration: 'soon'",
        ),
        (
            "  routes:\n    r:\n      topic: invoice.cleared\n      task: x\n      retry: {max_attempts: 0}\n",
            14,
            "max_attempts",
            "must be an integer >= 1, got 0",
        ),
        (
            "  routes:\n    r:\n      topic: invoice.cleared\n      task: x\n      colour: red\n",
            14,
            "colour",
            "unknown field",
        ),
        ("  routes:\n    r:\n      topic: no.dlq\n      task: x\n", 12, "topic", "has 'dlq: false'"),
        (
            "  routes:\n    r:\n      topic: plain.topic\n      where: {a: 1}\n      task: x\n",
            13,
            "where",
            "topic 'plain.topic' declares no schema",
        ),
        (
            "  routes:\n    r:\n      event_type: invoice.paid\n      task: x\n",
            12,
            "event_type",
            "event type 'invoice.paid' names no topic (add 'topic:')",
        ),
        ("  routes:\n    r:\n      topic: invoice.cleared\n", 11, "task", "missing"),
        (
            "  failed_topic: task.failure\n  routes:\n    r: {topic: invoice.cleared, task: x}\n",
            10,
            "failed_topic",
            "topic 'task.failure' is not in the catalog",
        ),
        ("  group: streams-bridge\n", 8, "routes", "missing; declare at least one route"),
    ],
    ids=[
        "topic",
        "filter-field",
        "enum-symbol",
        "filter-type",
        "arg-field",
        "queue",
        "priority",
        "countdown",
        "retry",
        "unknown-field",
        "no-dlq",
        "no-schema",
        "event-type",
        "no-task",
        "failed-topic",
        "no-routes",
    ],
)
def test_route_mistakes_name_file_line_and_field(
    tmp_path: Path, bridge: str, line: int, field: str, message: str
) -> None:
    error = problem(tmp_path, bridge)
    assert (error.line, error.field) == (line, field), str(error)
    assert message in error.problem
    assert str(error).startswith(f"{tmp_path / 'topics.yaml'}:{line}: ")


def test_event_type_route_defaults_its_topic_to_the_type(tmp_path: Path) -> None:
    config = load_bridge(load_catalog(write(tmp_path, "  routes:\n    r: {event_type: invoice.cleared, task: x}\n")))
    assert (config.routes[0].topic, config.routes[0].event_type) == ("invoice.cleared", "invoice.cleared")


def test_lint_reports_every_problem_in_file_order(tmp_path: Path) -> None:
    catalog = load_catalog(
        write(
            tmp_path,
            """\
  routes:
    a: {topic: nope.topic, task: x}
    b: {topic: invoice.cleared, task: x, queue: urgent}
""",
        )
    )
    assert [(e.line, e.field) for e in lint_bridge(catalog)] == [(11, "topic"), (12, "queue")]


def test_task_names_are_checked_against_the_registry(tmp_path: Path) -> None:
    config = load_bridge(
        load_catalog(
            write(
                tmp_path,
                """\
  routes:
    pdf:
      topic: invoice.cleared
      task: billing.pfd
      args: {invoice_id: invoice_id, total: tax_inclusive_total}
""",
            )
        )
    )
    with pytest.raises(RouteError) as raised:
        check_tasks(config, {"billing.pdf": None, "celery.chord": None}, "the app")
    assert raised.value.line == 11
    assert raised.value.problem == (
        "unknown task 'billing.pfd' (not registered in the app); did you mean 'billing.pdf'?"
    )

    def pdf(invoice_id: str) -> None: ...

    with pytest.raises(
        RouteError,
        match=r"task 'billing\.pfd' cannot take these arguments: got an unexpected "
        r"keyword argument 'total'",
    ):
        check_tasks(config, {"billing.pfd": pdf}, "the app")

    def pdf_all(invoice_id: str, total: object) -> None: ...

    check_tasks(config, {"billing.pfd": pdf_all}, "the app")


def test_retry_policy_backs_off_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_ms=1000, max_backoff_ms=5000, jitter=False)
    assert [policy.countdown(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(backoff_ms=1000, max_backoff_ms=60_000)
    rng = random.Random(3)
    values = [jittered.countdown(2, rng) for _ in range(200)]
    assert 2.0 <= min(values) < 2.2
    assert 3.8 < max(values) <= 4.0
    assert RetryPolicy.from_header(jittered.to_header()) == jittered
    assert RetryPolicy.from_header({"max_attempts": "x"}) is None
    assert RetryPolicy.from_header(None) is None


def test_time_limits_come_from_the_route_else_the_defaults(tmp_path: Path) -> None:
    config = load_bridge(
        load_catalog(
            write(
                tmp_path,
                """\
  routes:
    quick:
      topic: invoice.cleared
      task: billing.pdf
      soft_time_limit: 30s
      time_limit: 1m
    plain:
      topic: invoice.cleared
      task: billing.pdf
    soft-only:
      topic: invoice.cleared
      task: billing.pdf
      soft_time_limit: 2m
""",
            )
        )
    )
    limits = {route.name: (route.soft_time_limit_ms, route.time_limit_ms) for route in config.routes}
    assert limits == {"quick": (30_000, 60_000), "plain": (300_000, 360_000), "soft-only": (120_000, 180_000)}
    reference = {route.name: route for route in load_bridge(load_catalog(REPO / "topics.yaml")).routes}
    assert (reference["invoice-pdf"].soft_time_limit_ms, reference["invoice-pdf"].time_limit_ms) == (30_000, 60_000)


def test_a_hard_limit_not_above_the_soft_one_is_named(tmp_path: Path) -> None:
    error = problem(
        tmp_path,
        """\
  routes:
    quick:
      topic: invoice.cleared
      task: billing.pdf
      soft_time_limit: 30s
      time_limit: 30s
""",
    )
    assert (error.line, error.field) == (15, "time_limit")
    assert "30000 ms is not above soft_time_limit 30000 ms" in str(error)


def test_a_zero_time_limit_is_refused(tmp_path: Path) -> None:
    error = problem(
        tmp_path,
        """\
  routes:
    quick:
      topic: invoice.cleared
      task: billing.pdf
      soft_time_limit: 0s
""",
    )
    assert (error.line, error.field) == (14, "soft_time_limit")
    assert "must be a positive duration" in str(error)
