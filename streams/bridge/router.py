"""From one Kafka record to its task messages: decode what routes read (schema by id, cached), match, encode.

Bad records raise UndecodableRecordError or UnroutableRecordError (the bridge parks them in the DLQ);
a registry that cannot be reached raises SchemaUnavailableError (the bridge retries, never parks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from streams.bridge.avro_json import FieldReader
from streams.bridge.celery_wire import TaskTemplate, default_origin, effect_key, task_id_for
from streams.bridge.errors import BridgeError
from streams.errors import SchemaError
from streams.records import UndecodableRecordError
from streams.schemas.codec import HEADER, MAGIC, split_header
from streams.schemas.registry_client import RegistryRequestError

if TYPE_CHECKING:
    from streams.bridge.routes import BridgeConfig, BridgeRoute
    from streams.catalog import Catalog

__all__ = [
    "RawHeaders", "RoutedTask", "Router", "SchemaSource", "SchemaUnavailableError", "UnroutableRecordError",
]

_CE_HEADERS = frozenset({"ce_id", "ce_type", "ce_tenantid", "ce_traceparent"})
# What confluent-kafka's Message.headers() returns.
RawHeaders = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None


class UnroutableRecordError(BridgeError):
    """A route matched but its task cannot be built from the record (a mapped field is missing, ...)."""


class SchemaUnavailableError(BridgeError):
    """The registry could not be asked for a schema right now; retry later, do not dead-letter."""


class SchemaSource(Protocol):
    def schema_by_id(self, schema_id: int) -> str: ...


class RoutedTask(NamedTuple):
    """One task message for one record: which route, where it goes, and the Redis list entry."""

    route: str
    queue: str
    slot: int
    payload: bytes
    task_id: str
    effect: str  # the effect key the task side marks done


class Router:
    """Turns records of the routed topics into task messages; holds one field reader per (topic, schema id)."""

    def __init__(self, config: BridgeConfig, catalog: Catalog, registry: SchemaSource,
                 *, origin: str | None = None) -> None:
        self.registry = registry
        self._schemas: dict[int, str] = {}
        self._readers: dict[tuple[str, int], FieldReader] = {}
        origin = origin or default_origin()
        # topic -> (route, its message template, its arguments as (name, top-level field) when all are one)
        self._routes: dict[str, list[tuple[BridgeRoute, TaskTemplate, tuple[tuple[str, str], ...] | None]]] = {}
        self._wanted: dict[str, set[str] | None] = {}  # topic -> top-level fields its routes read (None: all)
        for route in config.routes:
            spec = catalog.topic(route.topic)
            redact = _redacted_args(route, spec.pii_fields)
            extra: dict[str, Any] = {"route": route.name, "retry": route.retry.to_header()}
            if config.failed_topic:
                extra["failed_topic"] = config.failed_topic
            template = TaskTemplate(route.task, route.queue, priority=route.priority,
                                    countdown_ms=route.countdown_ms, extra_headers=extra, redact=redact,
                                    origin=origin,
                                    time_limits_ms=(route.soft_time_limit_ms, route.time_limit_ms))
            flat = None if route.args is None or any(len(path) != 1 for _, path in route.args) else \
                tuple((name, path[0]) for name, path in route.args)
            self._routes.setdefault(route.topic, []).append((route, template, flat))
            wanted = self._wanted.setdefault(route.topic, set())
            if wanted is not None:
                if route.args is None:
                    self._wanted[route.topic] = None
                else:
                    wanted.update(path[0] for _, path in route.args)
                    wanted.update(condition.path[0] for condition in route.where)

    def decode(self, topic: str, value: bytes | None) -> dict[str, Any]:
        """The fields of `topic`'s routes from one record value, as kombu JSON values (Decimal as its typed
        JSON object, and so on); fields no route reads are skipped, not decoded."""
        if value is None:
            raise UndecodableRecordError("record has no value (a tombstone is not an event)")
        if len(value) < HEADER.size or value[0] != MAGIC:
            try:
                split_header(value)
            except SchemaError as exc:
                raise UndecodableRecordError(str(exc)) from None
        schema_id = int.from_bytes(value[1:HEADER.size], "big")
        reader = self._readers.get((topic, schema_id))
        if reader is None:
            try:
                reader = FieldReader(self._schema(schema_id), self._wanted.get(topic))
            except SchemaError as exc:
                raise UndecodableRecordError(f"schema id {schema_id}: {exc}") from None
            self._readers[(topic, schema_id)] = reader
        try:
            return reader.read(value, HEADER.size)
        except SchemaError as exc:
            raise UndecodableRecordError(str(exc)) from None

    def route(self, topic: str, partition: int, offset: int, value: bytes | None,
              headers: RawHeaders) -> list[RoutedTask]:
        """The task messages for one record (empty when no route matches)."""
        routes = self._routes.get(topic)
        if not routes:
            raise UnroutableRecordError(f"no route for topic '{topic}'")
        event = self.decode(topic, value)
        event_id, event_type, tenant, traceparent = _cloud_event_headers(headers)
        # No ce_id: the record's coordinates are as stable an identity as Kafka offers.
        event_id = event_id or f"{topic}/{partition}/{offset}"
        meta: dict[str, Any] = {"streams_event_id": event_id, "streams_topic": topic,
                                "streams_partition": partition, "streams_offset": offset}
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
                    kwargs = {name: event[field] for name, field in flat_args} if flat_args is not None \
                        else route.kwargs(event)
                except KeyError:
                    kwargs = route.kwargs(event)  # raises the KeyError that names the field and the argument
                payload = template.encode_json(task_id, kwargs, fragment)
            except (KeyError, TypeError, ValueError) as exc:  # str() of a KeyError quotes its message
                raise UnroutableRecordError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
            out.append(RoutedTask(route.name, template.queue, template.slot, payload, task_id,
                                  effect_key(route.task, event_id)))
        return out

    def _schema(self, schema_id: int) -> str:
        if schema_id in self._schemas:
            return self._schemas[schema_id]
        try:
            text = self.registry.schema_by_id(schema_id)
        except RegistryRequestError as exc:
            if 400 <= exc.status < 500:
                raise UndecodableRecordError(f"schema id {schema_id} is unknown to the registry: {exc.message}") \
                    from None
            raise SchemaUnavailableError(str(exc)) from None
        except SchemaError as exc:
            raise SchemaUnavailableError(str(exc)) from None
        self._schemas[schema_id] = text
        return text


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

