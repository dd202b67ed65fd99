"""From one Kafka record to its task messages: decode it (streams.records.EventDecoder), match, encode.

Bad records raise UndecodableRecordError or UnroutableRecordError (the bridge parks them in the DLQ);
a registry that cannot be reached raises SchemaUnavailableError (the bridge retries, never parks).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from streams.bridge.celery_wire import TaskTemplate, default_origin, effect_key, task_id_for
from streams.bridge.errors import BridgeError
from streams.records import EventDecoder, SchemaSource

if TYPE_CHECKING:
    from streams.bridge.routes import BridgeConfig, BridgeRoute
    from streams.catalog import Catalog

__all__ = [
    "RawHeaders",
    "RoutedTask",
    "Router",
    "UnroutableRecordError",
]

_CE_HEADERS = frozenset({"ce_id", "ce_type", "ce_tenantid", "ce_traceparent"})
# What confluent-kafka's Message.headers() returns.
RawHeaders = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None


class UnroutableRecordError(BridgeError):
    """A route matched but its task cannot be built from the record (a mapped field is missing, ...)."""


class RoutedTask(NamedTuple):
    """One task message for one record: which route, where it goes, and the Redis list entry."""

    route: str
    queue: str
    slot: int
    payload: bytes
    task_id: str
    effect: str  # the effect key the task side marks done


class Router:
    """Turns records of the routed topics into task messages."""

    def __init__(
        self, config: BridgeConfig, catalog: Catalog, registry: SchemaSource, *, origin: str | None = None
    ) -> None:
        self.registry = registry
        # Any size the broker took; a registry outage holds the partition (SchemaUnavailableError), never parks.
        self._decoder = EventDecoder(registry, max_record_bytes=sys.maxsize, hold_when_registry_down=True)
        origin = origin or default_origin()
        # topic -> (route, its message template, its arguments as (name, top-level field) when all are one)
        self._routes: dict[str, list[tuple[BridgeRoute, TaskTemplate, tuple[tuple[str, str], ...] | None]]] = {}
        for route in config.routes:
            spec = catalog.topic(route.topic)
            redact = _redacted_args(route, spec.pii_fields)
            extra: dict[str, Any] = {"route": route.name, "retry": route.retry.to_header()}
            if config.failed_topic:
                extra["failed_topic"] = config.failed_topic
            template = TaskTemplate(
                route.task,
                route.queue,
                priority=route.priority,
                countdown_ms=route.countdown_ms,
                extra_headers=extra,
                redact=redact,
                origin=origin,
                time_limits_ms=(route.soft_time_limit_ms, route.time_limit_ms),
            )
            flat = (
                None
                if route.args is None or any(len(path) != 1 for _, path in route.args)
                else tuple((name, path[0]) for name, path in route.args)
            )
            self._routes.setdefault(route.topic, []).append((route, template, flat))

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """The record in one value, as the native decoder gives it (Decimal, datetime, ...: the task message
        writes them in kombu's typed JSON)."""
        return self._decoder.decode(value)[1]

    def route(
        self, topic: str, partition: int, offset: int, value: bytes | None, headers: RawHeaders
    ) -> list[RoutedTask]:
        """The task messages for one record (empty when no route matches)."""
        routes = self._routes.get(topic)
        if not routes:
            raise UnroutableRecordError(f"no route for topic '{topic}'")
        event = self.decode(value)
        event_id, event_type, tenant, traceparent = _cloud_event_headers(headers)
        # No ce_id: the record's coordinates are as stable an identity as Kafka offers.
        event_id = event_id or f"{topic}/{partition}/{offset}"
        meta: dict[str, Any] = {
            "streams_event_id": event_id,
            "streams_topic": topic,
            "streams_partition": partition,
            "streams_offset": offset,
        }
        if tenant is not None:
            meta["streams_tenant"] = tenant
        if traceparent is not None:
            meta["streams_traceparent"] = traceparent
        fragment = b"," + orjson.dumps(meta)[1:-1]  # the same headers for every task of the record
        out: list[RoutedTask] = []
        for route, template, flat_args in routes:
            if (route.where or route.event_type is not None) and not route.matches(event_type or topic, event):
                continue
            task_id = task_id_for(event_id, route.task)
            try:
                try:  # every argument a top-level field (the usual case): no path to walk
                    kwargs = (
                        {name: event[field] for name, field in flat_args}
                        if flat_args is not None
                        else route.kwargs(event)
                    )
                except KeyError:
                    kwargs = route.kwargs(event)  # raises the KeyError that names the field and the argument
                payload = template.encode_json(task_id, kwargs, fragment)
            except (KeyError, TypeError, ValueError) as exc:  # str() of a KeyError quotes its message
                raise UnroutableRecordError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
            out.append(
                RoutedTask(
                    route.name, template.queue, template.slot, payload, task_id, effect_key(route.task, event_id)
                )
            )
        return out


def _cloud_event_headers(headers: RawHeaders) -> tuple[str | None, str | None, str | None, str | None]:
    """ce_id, ce_type, ce_tenantid and ce_traceparent of a record (None where absent)."""
    found: dict[str, str] = {}
    for name, raw in header_items(headers):
        if name in _CE_HEADERS and raw is not None:
            found[name] = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    get = found.get
    return get("ce_id"), get("ce_type"), get("ce_tenantid"), get("ce_traceparent")


def header_items(headers: RawHeaders) -> list[tuple[str, str | bytes | None]]:
    """confluent-kafka headers (a list of pairs, or a dict) as a list of pairs."""
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else headers


def _redacted_args(route: BridgeRoute, pii_fields: Sequence[str]) -> frozenset[str]:
    """Argument names whose field is (inside) a PII field of the topic, masked in kwargsrepr."""
    pii = tuple(pii_fields)

    def is_pii(path: str) -> bool:
        return any(path == p or path.startswith(f"{p}.") or p.startswith(f"{path}.") for p in pii)

    if route.args is None:
        return frozenset(p.split(".")[0] for p in pii)
    return frozenset(name for name, path in route.args if is_pii(".".join(path)))
