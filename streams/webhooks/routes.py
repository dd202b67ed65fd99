"""Webhook routes: the `webhooks:` section of topics.yaml loaded into frozen models and checked at startup.

A route says which events (topic or event type, field filter) are POSTed to which URL, signed with which
secret, with what time-out, retry policy, concurrency and circuit breaker. Parsed with the bridge's parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

from streams.bridge.retry import RetryPolicy
from streams.bridge.routes import (
    FieldFilter,
    SectionParser,
    _bool,
    _duration,
    _name,
    _positive,
)
from streams.errors import ConfigError, StreamsError
from streams.located_yaml import FieldError as _FieldError
from streams.located_yaml import located_message

if TYPE_CHECKING:
    from yaml.nodes import Node

    from streams.catalog import Catalog

__all__ = ["CircuitPolicy", "WebhookConfig", "WebhookError", "WebhookRoute", "lint_webhooks", "load_webhooks"]

Mode = Literal["binary", "structured"]
_SECTION = ("group", "routes")
_ROUTE = ("topic", "event_type", "where", "url", "secret", "timeout", "retry", "mode", "concurrency", "circuit")
_RETRY = ("max_attempts", "backoff", "max_backoff", "jitter")
_CIRCUIT = ("failures", "cooldown", "max_cooldown")
DEFAULT_RETRY = RetryPolicy(max_attempts=8, backoff_ms=1_000, max_backoff_ms=60_000)


class WebhookError(StreamsError):
    """The webhook runner cannot start or go on (bad routes, a missing secret, ...)."""


class WebhookRouteError(WebhookError):
    """A problem in the catalog's `webhooks:` section, at `path`:`line` (0 = the whole file)."""

    def __init__(self, path: Path, line: int, where: str, field: str | None, problem: str) -> None:
        self.path, self.line, self.field, self.problem = path, line, field, problem
        super().__init__(located_message(path, line, where, field, problem))


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """After `failures` failed attempts in a row an endpoint gets no request for `cooldown_ms` (doubling up to
    `max_cooldown_ms` while its probes fail); deliveries wait meanwhile without spending attempts."""

    failures: int = 5
    cooldown_ms: int = 2_000
    max_cooldown_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    """Events of `topic` (of `event_type`, passing `where`) are POSTed to `url`, signed with secret `secret`."""

    name: str
    topic: str
    url: str
    secret: str  # the name of a secret in STREAMS_WEBHOOK_SECRETS, never the secret itself
    event_type: str | None = None
    where: tuple[FieldFilter, ...] = ()
    timeout_ms: int = 10_000
    retry: RetryPolicy = DEFAULT_RETRY
    mode: Mode = "binary"
    concurrency: int = 16
    circuit: CircuitPolicy = CircuitPolicy()
    line: int = 0

    def matches(self, event_type: str | None, record: Mapping[str, Any]) -> bool:
        if self.event_type is not None and event_type != self.event_type:
            return False
        return all(condition.matches(record) for condition in self.where)


@dataclass(frozen=True)
class WebhookConfig:
    """The whole `webhooks:` section: the consumer group and the routes."""

    path: Path
    group: str = "streams-webhooks"
    routes: tuple[WebhookRoute, ...] = ()
    line: int = 0

    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({route.topic for route in self.routes}))

    def routes_by_topic(self) -> dict[str, tuple[WebhookRoute, ...]]:
        out: dict[str, list[WebhookRoute]] = {}
        for route in self.routes:
            out.setdefault(route.topic, []).append(route)
        return {topic: tuple(routes) for topic, routes in out.items()}

    def secrets(self, available: Mapping[str, Any]) -> None:
        """ConfigError, at the first route whose secret name `available` lacks (the names, never the values)."""
        for route in self.routes:
            if route.secret not in available:
                known = ", ".join(sorted(available)) or "none"
                raise ConfigError(
                    f"{self.path}:{route.line}: webhook route '{route.name}' field 'secret': no "
                    f"secret '{route.secret}' in STREAMS_WEBHOOK_SECRETS (known: {known}); set "
                    f'STREAMS_WEBHOOK_SECRETS=\'{{"{route.secret}": "whsec_..."}}\''
                )


def load_webhooks(catalog: Catalog) -> WebhookConfig:
    """The catalog file's `webhooks:` section, checked against the catalog; raises the first WebhookRouteError."""
    parser = _Parser(catalog)
    config = parser.run()
    if parser.issues:
        raise parser.issues[0]
    return config


def lint_webhooks(catalog: Catalog) -> list[WebhookRouteError]:
    """Every problem in the `webhooks:` section, in file order; empty when valid."""
    parser = _Parser(catalog)
    parser.run()
    return cast("list[WebhookRouteError]", parser.issues)


class _Parser(SectionParser):
    error = WebhookRouteError

    def run(self) -> WebhookConfig:
        section = self.section("webhooks")
        if section is None:
            return WebhookConfig(path=self.path)
        line = section[0].start_mark.line + 1
        top = self.entries(section[1], "webhooks", _SECTION)
        group = self.scalar(top, "group", "webhooks", _name, "streams-webhooks")
        if "routes" not in top:
            self.report(line, "webhooks", "routes", "missing; declare at least one route under 'routes:'")
        entries = self.entries(top["routes"][1] if "routes" in top else None, "webhooks", None, "route")
        routes = [self.webhook(name, entry) for name, entry in entries.items()]
        return WebhookConfig(path=self.path, group=group, routes=tuple(r for r in routes if r is not None), line=line)

    def webhook(self, name: str, entry: tuple[int, Node]) -> WebhookRoute | None:
        line, node = entry
        where = f"webhook route '{name}'"
        body = self.entries(node, where, _ROUTE)
        before = len(self.issues)
        for required in ("topic", "url", "secret"):
            if required not in body and not (required == "topic" and "event_type" in body):
                self.report(
                    line,
                    where,
                    required,
                    "missing; every webhook route names a topic (or event_type), a url and a secret",
                )
        event_type = self.scalar(body, "event_type", where, _name, None)
        topic = self.scalar(body, "topic", where, _name, event_type)
        schema = self.topic_schema(topic, body, line, where) if topic else None
        route = WebhookRoute(
            name=name,
            topic=topic or "",
            event_type=event_type,
            where=self.filters(body.get("where"), schema, topic, where),
            url=self.scalar(body, "url", where, _url, ""),
            secret=self.scalar(body, "secret", where, _name, ""),
            timeout_ms=self.scalar(body, "timeout", where, _positive_duration, 10_000),
            retry=self.webhook_retry(body.get("retry"), where),
            mode=self.scalar(body, "mode", where, _mode, "binary"),
            concurrency=self.scalar(body, "concurrency", where, _positive, 16),
            circuit=self.circuit(body.get("circuit"), where),
            line=line,
        )
        return route if len(self.issues) == before else None

    def webhook_retry(self, entry: tuple[int, Node] | None, where: str) -> RetryPolicy:
        if entry is None:
            return DEFAULT_RETRY
        spot = f"{where} retry"
        body = self.entries(entry[1], spot, _RETRY)
        policy = RetryPolicy(
            max_attempts=self.scalar(body, "max_attempts", spot, _positive, DEFAULT_RETRY.max_attempts),
            backoff_ms=self.scalar(body, "backoff", spot, _duration, 1_000),
            max_backoff_ms=self.scalar(body, "max_backoff", spot, _duration, 60_000),
            jitter=self.scalar(body, "jitter", spot, _bool, True),
        )
        if policy.max_backoff_ms < policy.backoff_ms:
            self.report(
                body.get("max_backoff", entry)[0],
                spot,
                "max_backoff",
                f"{policy.max_backoff_ms} ms is below backoff {policy.backoff_ms} ms; raise it",
            )
        return policy

    def circuit(self, entry: tuple[int, Node] | None, where: str) -> CircuitPolicy:
        if entry is None:
            return CircuitPolicy()
        spot = f"{where} circuit"
        body = self.entries(entry[1], spot, _CIRCUIT)
        policy = CircuitPolicy(
            failures=self.scalar(body, "failures", spot, _positive, 5),
            cooldown_ms=self.scalar(body, "cooldown", spot, _positive_duration, 2_000),
            max_cooldown_ms=self.scalar(body, "max_cooldown", spot, _positive_duration, 60_000),
        )
        if policy.max_cooldown_ms < policy.cooldown_ms:
            self.report(
                body.get("max_cooldown", entry)[0],
                spot,
                "max_cooldown",
                f"{policy.max_cooldown_ms} ms is below cooldown {policy.cooldown_ms} ms; raise it",
            )
        return policy


def _url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
        raise _FieldError(f"must be an http:// or https:// URL with a host, got {value!r}")
    if parts.password:
        raise _FieldError("must not carry a password (it would reach logs); sign with 'secret:' instead")
    return str(value)


def _mode(value: Any) -> Mode:
    if value not in ("binary", "structured"):
        raise _FieldError(
            f"must be 'binary' (ce-* headers, the event data as the body) or 'structured' "
            f"(the whole CloudEvent as application/cloudevents+json), got {value!r}"
        )
    return cast("Mode", value)


def _positive_duration(value: Any) -> int:
    ms = _duration(value)
    if ms <= 0:
        raise _FieldError(f"must be a positive duration (500ms, 10s), got {value!r}")
    return ms
