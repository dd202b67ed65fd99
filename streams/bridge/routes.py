"""Bridge routes: the `bridge:` section of topics.yaml loaded into frozen models and checked at startup.

A route says which events (topic, event type, field filter) become which Celery task, on which queue.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fastavro import parse_schema
from yaml.nodes import Node

from streams.bridge.errors import RouteError
from streams.bridge.retry import RetryPolicy
from streams.catalog import parse_duration_ms
from streams.errors import CatalogError, StreamsError
from streams.located_yaml import FieldError as _FieldError
from streams.located_yaml import LocatedParser, hint
from streams.schema_fields import resolve_field

if TYPE_CHECKING:
    from streams.catalog import Catalog

__all__ = [
    "LATENCY_CLASSES",
    "BridgeConfig",
    "BridgeRoute",
    "FieldFilter",
    "QueueSpec",
    "RetryPolicy",
    "SectionParser",
    "check_tasks",
    "lint_bridge",
    "load_bridge",
]

LATENCY_CLASSES: dict[str, int] = {"interactive": 1_000, "default": 10_000, "batch": 100_000}  # name -> bound
_SECTION = ("group", "celery_app", "tasks", "failed_topic", "queues", "routes")
_ROUTE = (
    "topic",
    "event_type",
    "where",
    "task",
    "queue",
    "priority",
    "countdown",
    "retry",
    "args",
    "soft_time_limit",
    "time_limit",
)
# A task past its soft limit gets SoftTimeLimitExceeded (retried or parked like any failure); past the hard
# one Celery kills its process. Defaults for routes that set neither; the hard one is the soft one + grace.
DEFAULT_SOFT_TIME_LIMIT_MS = 300_000
HARD_LIMIT_GRACE_MS = 60_000
_RETRY = ("max_attempts", "backoff", "max_backoff", "jitter", "max_redeliveries")
_QUEUE = ("bound",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCALAR_TYPES = {"string": str, "enum": str, "int": int, "long": int, "boolean": bool}


@dataclass(frozen=True, slots=True)
class FieldFilter:
    """`path` (into the decoded event) must equal one of `values`."""

    path: tuple[str, ...]
    values: frozenset[Any]

    def matches(self, record: Mapping[str, Any]) -> bool:
        value: Any = record
        for part in self.path:
            if not isinstance(value, dict):  # decoded Avro records are dicts (and dict checks are fast)
                return False
            value = value.get(part)
        return value in self.values


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A Celery queue (a latency class) and the most ready tasks the bridge lets wait in it."""

    name: str
    bound: int | None  # None = unbounded


@dataclass(frozen=True, slots=True)
class BridgeRoute:
    """Events of `topic` (of `event_type`, passing `where`) become `task` on `queue`."""

    name: str
    topic: str
    task: str
    queue: str
    event_type: str | None = None
    where: tuple[FieldFilter, ...] = ()
    priority: int = 0
    countdown_ms: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    args: tuple[tuple[str, tuple[str, ...]], ...] | None = None  # kwarg -> field path; None = every field
    soft_time_limit_ms: int = DEFAULT_SOFT_TIME_LIMIT_MS
    time_limit_ms: int = DEFAULT_SOFT_TIME_LIMIT_MS + HARD_LIMIT_GRACE_MS
    line: int = 0

    def matches(self, event_type: str | None, record: Mapping[str, Any]) -> bool:
        if self.event_type is not None and event_type != self.event_type:
            return False
        return all(condition.matches(record) for condition in self.where)

    def kwargs(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The task's keyword arguments; KeyError naming the field when the event lacks one."""
        if self.args is None:
            return dict(record)
        out: dict[str, Any] = {}
        for name, path in self.args:
            value: Any = record
            for part in path:
                if not isinstance(value, dict) or part not in value:
                    raise KeyError(
                        f"route '{self.name}': the event has no field '{'.'.join(path)}' for argument '{name}'"
                    )
                value = value[part]
            out[name] = value
        return out


@dataclass(frozen=True)
class BridgeConfig:
    """The whole `bridge:` section: consumer group, task registry, queues and routes."""

    path: Path
    group: str = "streams-bridge"
    celery_app: str | None = None
    tasks: tuple[str, ...] = ()
    failed_topic: str | None = None
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    routes: tuple[BridgeRoute, ...] = ()
    line: int = 0

    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({route.topic for route in self.routes}))

    def routes_by_topic(self) -> dict[str, tuple[BridgeRoute, ...]]:
        out: dict[str, list[BridgeRoute]] = {}
        for route in self.routes:
            out.setdefault(route.topic, []).append(route)
        return {topic: tuple(routes) for topic, routes in out.items()}


def load_bridge(catalog: Catalog) -> BridgeConfig:
    """The catalog file's `bridge:` section, checked against the catalog; raises the first RouteError."""
    parser = _Parser(catalog)
    config = parser.run()
    if parser.issues:
        raise parser.issues[0]
    return config


def lint_bridge(catalog: Catalog) -> list[RouteError]:
    """Every problem in the `bridge:` section, in file order; empty when valid."""
    parser = _Parser(catalog)
    parser.run()
    return cast("list[RouteError]", parser.issues)


def check_tasks(config: BridgeConfig, tasks: Mapping[str, Callable[..., Any] | None], source: str) -> None:
    """RouteError for the first route whose task is unknown or cannot take the route's arguments.

    `tasks` maps registered names to their functions (None when only the name is known); `source` says
    where the names came from, for the message.
    """
    for route in config.routes:
        if route.task not in tasks:
            known = _hint(route.task, (n for n in tasks if not n.startswith("celery.")))
            raise RouteError(
                config.path,
                route.line,
                f"bridge route '{route.name}'",
                "task",
                f"unknown task '{route.task}' (not registered in {source}); {known}",
            )
        function = tasks[route.task]
        if function is None or route.args is None:
            continue
        try:
            inspect.signature(function).bind_partial(**{name: None for name, _ in route.args})
        except TypeError as exc:
            raise RouteError(
                config.path,
                route.line,
                f"bridge route '{route.name}'",
                "args",
                f"task '{route.task}' cannot take these arguments: {exc}",
            ) from None


class SectionParser(LocatedParser):
    """One pass over a route section of the catalog's file (`bridge:`; `webhooks:` subclasses it), collecting
    every problem as a located `error` (file:line, where, field)."""

    error: Callable[[Path, int, str, str | None, str], StreamsError] = RouteError

    def __init__(self, catalog: Catalog) -> None:
        super().__init__(catalog.path)
        self.catalog = catalog
        self.issues: list[StreamsError] = []
        self._schemas: dict[str, dict[str, Any] | None] = {}

    def report(self, line: int, where: str, field_name: str | None, problem: str) -> None:
        self.issues.append(self.error(self.path, line, where, field_name, problem))
        self.issues.sort(key=lambda issue: cast("Any", issue).line)

    def topic_schema(
        self, topic: str, body: dict[str, tuple[int, Node]], line: int, where: str
    ) -> dict[str, Any] | None:
        names = self.catalog.names()
        if topic not in names:
            names = tuple(spec.name for spec in self.catalog.topics if spec.dead_letter_of is None)
            key = "topic" if "topic" in body else "event_type"
            shown = f"topic '{topic}'" if key == "topic" else f"event type '{topic}' names no topic (add 'topic:'); "
            self.report(
                body[key][0] if key in body else line,
                where,
                key,
                f"{shown} is not in the catalog; {_hint(topic, names)}"
                if key == "topic"
                else f"{shown}{_hint(topic, names)}",
            )
            return None
        spec = self.catalog.topic(topic)
        if not spec.dlq:
            self.report(
                body.get("topic", (line,))[0],
                where,
                "topic",
                f"topic '{topic}' has 'dlq: false'; undecodable records are parked in '{topic}.dlq', so enable it",
            )
        if spec.schema_file is None:
            return None
        if topic not in self._schemas:
            try:
                raw = json.loads(Path(spec.schema_file).read_text(encoding="utf-8"))
                self._schemas[topic] = cast("dict[str, Any]", parse_schema(raw, expand=True, _write_hint=False))
            except (OSError, ValueError):
                self._schemas[topic] = None  # the catalog itself reports unreadable schemas
        return self._schemas[topic]

    def field_type(
        self, schema: dict[str, Any] | None, topic: str | None, dotted: Any, line: int, where: str, what: str
    ) -> Any:
        """The Avro type at `dotted`; reports and returns None when the schema lacks it."""
        if not isinstance(dotted, str) or not all(_IDENT.match(p) for p in dotted.split(".")):
            self.report(line, where, what, f"{dotted!r} is not a field name or a dotted path (a.b)")
            return None
        if schema is None:
            self.report(
                line,
                where,
                what,
                f"topic '{topic}' declares no schema, so field '{dotted}' cannot be checked; give the topic a schema",
            )
            return None
        try:
            return resolve_field(schema, dotted, f"the schema of '{topic}'")[0]
        except _FieldError as exc:
            self.report(line, where, what, str(exc))
            return None

    def filters(
        self, entry: tuple[int, Node] | None, schema: dict[str, Any] | None, topic: str | None, where: str
    ) -> tuple[FieldFilter, ...]:
        out: list[FieldFilter] = []
        for dotted, (line, node) in self.entries(entry[1] if entry else None, where, None, "filter").items():
            avro = self.field_type(schema, topic, dotted, line, where, "where")
            if avro is None:
                continue
            raw = self.construct(node)
            values = raw["in"] if isinstance(raw, dict) and set(raw) == {"in"} else [raw]
            problem = _filter_problem(avro, dotted, values)
            if problem:
                self.report(line, where, "where", problem)
            else:
                out.append(FieldFilter(tuple(dotted.split(".")), frozenset(values)))
        return tuple(out)


class _Parser(SectionParser):
    """The `bridge:` section: group, task registry, queues and routes."""

    def run(self) -> BridgeConfig:
        section = self.section("bridge")
        default_queues = {name: QueueSpec(name, bound) for name, bound in LATENCY_CLASSES.items()}
        if section is None:
            return BridgeConfig(path=self.path, queues=default_queues)
        line = section[0].start_mark.line + 1
        top = self.entries(section[1], "bridge", _SECTION)
        group = self.scalar(top, "group", "bridge", _name, "streams-bridge")
        app = self.scalar(top, "celery_app", "bridge", _module, None)
        failed = self.scalar(top, "failed_topic", "bridge", _name, None)
        if failed is not None and failed not in self.catalog.names():
            self.report(
                top["failed_topic"][0],
                "bridge",
                "failed_topic",
                f"topic '{failed}' is not in the catalog; {_hint(failed, self.catalog.names())}",
            )
        tasks = tuple(self.scalar(top, "tasks", "bridge", _names, ()))
        queues = self.queues(top.get("queues")) if "queues" in top else default_queues
        routes = [
            self.route(name, entry)
            for name, entry in self.entries(
                top["routes"][1] if "routes" in top else None, "bridge", None, "route"
            ).items()
        ]
        if "routes" not in top:
            self.report(line, "bridge", "routes", "missing; declare at least one route under 'routes:'")
        for route in routes:
            if route is not None and route.queue not in queues:
                self.report(
                    route.line,
                    f"bridge route '{route.name}'",
                    "queue",
                    f"unknown queue '{route.queue}'; {_hint(route.queue, queues)}",
                )
        return BridgeConfig(
            path=self.path,
            group=group,
            celery_app=app,
            tasks=tasks,
            failed_topic=failed,
            queues=queues,
            routes=tuple(r for r in routes if r is not None),
            line=line,
        )

    def queues(self, entry: tuple[int, Node] | None) -> dict[str, QueueSpec]:
        out: dict[str, QueueSpec] = {}
        for name, (_, node) in self.entries(entry[1] if entry else None, "bridge queues", None, "queue").items():
            body = self.entries(node, f"bridge queue '{name}'", _QUEUE)
            bound = self.scalar(body, "bound", f"bridge queue '{name}'", _bound, LATENCY_CLASSES.get(name))
            out[name] = QueueSpec(name, bound)
        return out

    def route(self, name: str, entry: tuple[int, Node]) -> BridgeRoute | None:
        line, node = entry
        where = f"bridge route '{name}'"
        body = self.entries(node, where, _ROUTE)
        before = len(self.issues)
        for required in ("topic", "task"):
            if required not in body and not (required == "topic" and "event_type" in body):
                self.report(line, where, required, "missing; every route names a task and a topic (or event_type)")
        event_type = self.scalar(body, "event_type", where, _name, None)
        topic = self.scalar(body, "topic", where, _name, event_type)
        task = self.scalar(body, "task", where, _name, "")
        schema = self.topic_schema(topic, body, line, where) if topic else None
        where_filters = self.filters(body.get("where"), schema, topic, where)
        args = self.args(body.get("args"), schema, topic, where)
        retry = self.retry(body.get("retry"), where)
        soft, hard = self.time_limits(body, where)
        route = BridgeRoute(
            name=name,
            topic=topic or "",
            task=task,
            event_type=event_type,
            where=where_filters,
            queue=self.scalar(body, "queue", where, _name, "default"),
            priority=self.scalar(body, "priority", where, _priority, 0),
            countdown_ms=self.scalar(body, "countdown", where, _duration, 0),
            retry=retry,
            args=args,
            soft_time_limit_ms=soft,
            time_limit_ms=hard,
            line=line,
        )
        return route if len(self.issues) == before else None

    def time_limits(self, body: dict[str, tuple[int, Node]], where: str) -> tuple[int, int]:
        """(soft, hard) in ms: the route's, else the defaults; the hard limit must leave the soft one room."""
        soft = self.scalar(body, "soft_time_limit", where, _positive_duration, DEFAULT_SOFT_TIME_LIMIT_MS)
        hard = self.scalar(body, "time_limit", where, _positive_duration, soft + HARD_LIMIT_GRACE_MS)
        if hard <= soft:
            line = body.get("time_limit", body.get("soft_time_limit", (0,)))[0]
            self.report(
                line,
                where,
                "time_limit",
                f"{hard} ms is not above soft_time_limit {soft} ms; the task would be killed before it"
                " could be retried",
            )
        return soft, hard

    def args(
        self, entry: tuple[int, Node] | None, schema: dict[str, Any] | None, topic: str | None, where: str
    ) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
        if entry is None:
            return None
        out: list[tuple[str, tuple[str, ...]]] = []
        for name, (line, node) in self.entries(entry[1], where, None, "argument").items():
            if not _IDENT.match(name):
                self.report(line, where, "args", f"argument name {name!r} is not a Python identifier")
                continue
            dotted = self.construct(node)
            if self.field_type(schema, topic, dotted, line, where, "args") is not None:
                out.append((name, tuple(dotted.split("."))))
        return tuple(out)

    def retry(self, entry: tuple[int, Node] | None, where: str) -> RetryPolicy:
        if entry is None:
            return RetryPolicy()
        body = self.entries(entry[1], f"{where} retry", _RETRY)
        spot = f"{where} retry"
        policy = RetryPolicy(
            max_attempts=self.scalar(body, "max_attempts", spot, _positive, 3),
            backoff_ms=self.scalar(body, "backoff", spot, _duration, 1_000),
            max_backoff_ms=self.scalar(body, "max_backoff", spot, _duration, 60_000),
            jitter=self.scalar(body, "jitter", spot, _bool, True),
            max_redeliveries=self.scalar(body, "max_redeliveries", spot, _non_negative, 3),
        )
        if policy.max_backoff_ms < policy.backoff_ms:
            self.report(
                body.get("max_backoff", entry)[0],
                spot,
                "max_backoff",
                f"{policy.max_backoff_ms} ms is below backoff {policy.backoff_ms} ms; raise it",
            )
        return policy


def _filter_problem(avro: Any, dotted: str, values: list[Any]) -> str | None:
    kind = avro.get("type") if isinstance(avro, dict) else avro
    logical = avro.get("logicalType") if isinstance(avro, dict) else None
    if logical or kind not in _SCALAR_TYPES:
        return f"'{dotted}' is a {logical or kind}; filters compare string, enum, int, long or boolean fields"
    expected = _SCALAR_TYPES[str(kind)]
    for value in values:
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return f"'{dotted}' is a {kind}, but the filter compares it with {value!r}"
        if kind == "enum" and value not in avro["symbols"]:
            return f"{value!r} is not a symbol of {dotted} ({', '.join(avro['symbols'])})"
    return None


def _hint(name: str, known: Iterable[str]) -> str:
    return hint(name, sorted(known))  # route sections list the known names sorted


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _FieldError(f"must be a name (letters, digits, '.', '_', ':', '-'), got {value!r}")
    return value


def _module(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$", value):
        raise _FieldError(f"must be an importable module, optionally with ':attribute', got {value!r}")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _FieldError(f"must be a list of task names, got {value!r}")
    return tuple(_name(item) for item in value)


def _at_least(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _FieldError(f"must be an integer >= {minimum}, got {value!r}")
        return value

    return parse


_positive, _non_negative = _at_least(1), _at_least(0)


def _bound(value: Any) -> int | None:
    return None if value is None else _positive(value)


def _priority(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 9:
        raise _FieldError(f"must be 0-9 (Redis: 0 is served first), got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(f"must be true or false, got {value!r}")
    return value


def _positive_duration(value: Any) -> int:
    ms = _duration(value)
    if ms <= 0:
        raise _FieldError(f"must be a positive duration such as 30s or 5m, got {value!r}")
    return ms


def _duration(value: Any) -> int:
    try:
        ms = parse_duration_ms(value, where="-")
    except CatalogError as exc:
        raise _FieldError(str(exc).removeprefix("-: ")) from None
    if ms < 0:
        raise _FieldError(f"must be a finite duration, got {value!r}")
    return ms
