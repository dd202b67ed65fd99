"""From one Kafka record to its task messages: decode (schema by id, cached), match routes, encode.

Bad records raise UndecodableRecordError or UnroutableRecordError (the bridge parks them in the DLQ);
a registry that cannot be reached raises SchemaUnavailableError (the bridge retries, never parks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from streams.bridge.celery_wire import TaskTemplate, default_origin, effect_key, task_id_for
from streams.bridge.errors import BridgeError
from streams.errors import SchemaError
from streams.schemas.codec import HEADER, AvroCodec, split_header
from streams.schemas.registry_client import RegistryRequestError

if TYPE_CHECKING:
    from streams.bridge.routes import BridgeConfig, BridgeRoute
    from streams.catalog import Catalog

__all__ = [
    "RawHeaders", "RoutedTask", "Router", "SchemaSource", "SchemaUnavailableError", "UndecodableRecordError",
    "UnroutableRecordError",
]

_CE_HEADERS = frozenset({"ce_id", "ce_type", "ce_tenantid", "ce_traceparent"})
# What confluent-kafka's Message.headers() returns.
RawHeaders = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None


class UndecodableRecordError(BridgeError):
    """The record is not a decodable event of its topic (no value, bad header, unknown schema, bad datum)."""


class UnroutableRecordError(BridgeError):
    """A route matched but its task cannot be built from the record (a mapped field is missing, ...)."""


class SchemaUnavailableError(BridgeError):
    """The registry could not be asked for a schema right now; retry later, do not dead-letter."""

    retriable = True


class SchemaSource(Protocol):
    def schema_by_id(self, schema_id: int) -> str: ...


@dataclass(frozen=True, slots=True)
class RoutedTask:
    """One task message for one record: which route, where it goes, and the Redis list entry."""

    route: str
    queue: str
    slot: int
    payload: bytes
    task_id: str
    effect: str  # the effect key the task side marks done


class Router:
    """Turns records of the routed topics into task messages; holds one codec per schema id."""

    def __init__(self, config: BridgeConfig, catalog: Catalog, registry: SchemaSource,
                 *, origin: str | None = None) -> None:
        self.registry = registry
        self._codecs: dict[int, AvroCodec] = {}
        origin = origin or default_origin()
        self._routes: dict[str, list[tuple[BridgeRoute, TaskTemplate]]] = {}
        for route in config.routes:
            spec = catalog.topic(route.topic)
            redact = _redacted_args(route, spec.pii_fields)
            extra: dict[str, Any] = {"route": route.name, "retry": route.retry.to_header()}
            if config.failed_topic:
                extra["failed_topic"] = config.failed_topic
            template = TaskTemplate(route.task, route.queue, priority=route.priority,
                                    countdown_ms=route.countdown_ms, extra_headers=extra, redact=redact,
                                    origin=origin)
            self._routes.setdefault(route.topic, []).append((route, template))

    def decode(self, value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise UndecodableRecordError("record has no value (a tombstone is not an event)")
        try:
            _, schema_id = split_header(value)
        except SchemaError as exc:
            raise UndecodableRecordError(str(exc)) from None
        codec = self._codecs.get(schema_id)
        if codec is None:
            codec = self._codecs[schema_id] = AvroCodec(self._schema(schema_id), schema_id)
        try:
            return codec.decode_datum(value[HEADER.size:])
        except SchemaError as exc:
            raise UndecodableRecordError(str(exc)) from None

    def route(self, topic: str, partition: int, offset: int, value: bytes | None,
              headers: RawHeaders) -> list[RoutedTask]:
        """The task messages for one record (empty when no route matches)."""
        routes = self._routes.get(topic)
        if not routes:
            raise UnroutableRecordError(f"no route for topic '{topic}'")
        event = self.decode(value)
        found: dict[str, str] = {}
        for name, raw in header_items(headers):
            if name in _CE_HEADERS and raw is not None:
                found[name] = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        # No ce_id: the record's coordinates are as stable an identity as Kafka offers.
        event_id = found.get("ce_id") or f"{topic}/{partition}/{offset}"
        event_type = found.get("ce_type")
        meta: dict[str, Any] = {"event_id": event_id, "topic": topic, "partition": partition, "offset": offset}
        if "ce_tenantid" in found:
            meta["tenant"] = found["ce_tenantid"]
        if "ce_traceparent" in found:
            meta["traceparent"] = found["ce_traceparent"]
        out: list[RoutedTask] = []
        for route, template in routes:
            if not route.matches(event_type or topic, event):
                continue
            task_id = task_id_for(event_id, route.task)
            try:
                payload = template.encode(task_id, route.kwargs(event), meta)
            except (KeyError, TypeError, ValueError) as exc:
                raise UnroutableRecordError(str(exc).strip("\"'")) from None
            out.append(RoutedTask(route.name, template.queue, template.slot, payload, task_id,
                                  effect_key(route.task, event_id)))
        return out

    def _schema(self, schema_id: int) -> str:
        try:
            return self.registry.schema_by_id(schema_id)
        except RegistryRequestError as exc:
            if 400 <= exc.status < 500:
                raise UndecodableRecordError(f"schema id {schema_id} is unknown to the registry: {exc.message}") \
                    from None
            raise SchemaUnavailableError(str(exc)) from None
        except SchemaError as exc:
            raise SchemaUnavailableError(str(exc)) from None


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

