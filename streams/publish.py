"""The producer SDK: one call validates, encodes (Confluent wire format) and sends a CloudEvent.

`Publisher` is the sync API, `AsyncPublisher` the asyncio one; both share `EventEncoder`, so a payload
is checked the same way and a bad payload fails before anything is produced.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import BaseModel

from streams.catalog import Catalog, TopicSpec, load_catalog
from streams.errors import PublishError, SchemaError
from streams.schemas.codec import AvroCodec
from streams.schemas.registry_client import RegistryClient, compact_schema
from streams.settings import Settings

CONTENT_TYPE = b"application/avro"
SPEC_VERSION = b"1.0"
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
# What durable publishing means here; a caller's producer_config may tune batching, never these.
DURABILITY = {"acks": "all", "enable.idempotence": True, "max.in.flight.requests.per.connection": 5}
THROUGHPUT = {"linger.ms": 5, "batch.num.messages": 10_000, "queue.buffering.max.messages": 500_000,
              "queue.buffering.max.kbytes": 1_048_576, "message.timeout.ms": 30_000}

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Delivered:
    """Where an event landed."""

    topic: str
    partition: int
    offset: int
    event_id: str


@dataclass(frozen=True)
class OutgoingRecord:
    """A validated, encoded event ready for `Producer.produce`."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    event_id: str


class _TopicCodec:
    """What publishing to one topic needs: its spec, codec, size limit."""

    def __init__(self, spec: TopicSpec, codec: AvroCodec) -> None:
        self.spec = spec
        self.codec = codec
        self.key_path = tuple(spec.key_field.split(".")) if spec.key_field else ()
        self.max_bytes = int(spec.configs.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES))
        self.ce_type = spec.name.encode()


class EventEncoder:
    """Turns (topic, payload) into an OutgoingRecord: checks, encodes, keys and CloudEvents headers."""

    def __init__(
        self, catalog: Catalog, registry: RegistryClient, *, source: str, auto_register: bool = False
    ) -> None:
        self.catalog = catalog
        self.registry = registry
        self.source = source.encode()
        self.auto_register = auto_register
        self._topics: dict[str, _TopicCodec] = {}

    def topic(self, name: str) -> _TopicCodec:
        cached = self._topics.get(name)
        if cached is None:
            cached = self._topics[name] = self._load(name)
        return cached

    def _load(self, name: str) -> _TopicCodec:
        try:
            spec = self.catalog.topic(name)
        except Exception as exc:
            raise PublishError(f"unknown topic '{name}': {exc}") from exc
        if spec.schema_file is None:
            raise PublishError(f"topic '{name}' declares no schema in {self.catalog.path}; nothing to encode with")
        schema_text = compact_schema(Path(spec.schema_file).read_text())
        subject = f"{name}-value"
        if self.auto_register:
            schema_id = self.registry.register(subject, schema_text)
        else:
            found = self.registry.lookup(subject, schema_text)
            if found is None:
                raise PublishError(
                    f"schema {spec.schema_file} is not registered under subject '{subject}'; "
                    "run `streams schemas apply` (producers do not auto-register)"
                )
            schema_id = found
        return _TopicCodec(spec, AvroCodec(json.loads(schema_text), schema_id))

    def encode(
        self,
        topic: str,
        payload: Mapping[str, Any] | BaseModel,
        *,
        key: str | bytes | None = None,
        tenant: str | None = None,
        event_type: str | None = None,
        event_id: str | None = None,
        time_: datetime | None = None,
        traceparent: str | None = None,
        extra_headers: Mapping[str, str | bytes] | None = None,
    ) -> OutgoingRecord:
        target = self.topic(topic)
        data = payload.model_dump() if isinstance(payload, BaseModel) else payload
        if not isinstance(data, Mapping):
            raise PublishError(f"topic '{topic}': payload must be a mapping or a model, got {type(data).__name__}")
        try:
            value = target.codec.encode(data)
        except SchemaError as exc:
            raise PublishError(f"topic '{topic}': {exc}") from exc
        if len(value) > target.max_bytes:
            raise PublishError(
                f"topic '{topic}': encoded event is {len(value)} bytes, over the topic's "
                f"max.message.bytes {target.max_bytes}"
            )
        record_key = _key_bytes(topic, target.key_path, data, key)
        tenant_id = tenant if tenant is not None else data.get("tenant_id")
        event_id = event_id or str(uuid.UUID(int=random.getrandbits(128), version=4))
        headers: Headers = [
            ("ce_specversion", SPEC_VERSION),
            ("ce_id", event_id.encode()),
            ("ce_source", self.source),
            ("ce_type", event_type.encode() if event_type else target.ce_type),
            ("ce_time", _rfc3339(time_)),
            ("content-type", CONTENT_TYPE),
        ]
        if tenant_id is not None:
            if not isinstance(tenant_id, str) or not TENANT.match(tenant_id):
                raise PublishError(
                    f"topic '{topic}': tenant id {tenant_id!r} is not valid; use 1-64 characters of "
                    "letters, digits, '.', '_' or '-', starting with a letter or digit"
                )
            if tenant is not None and data.get("tenant_id") not in (None, tenant):
                raise PublishError(
                    f"topic '{topic}': tenant {tenant!r} differs from the payload's tenant_id {data['tenant_id']!r}"
                )
            headers.append(("ce_tenantid", tenant_id.encode()))
        if traceparent is not None and not TRACEPARENT.match(traceparent):
            raise PublishError(
                f"topic '{topic}': traceparent {traceparent!r} is not W3C '00-<32 hex>-<16 hex>-<2 hex>'"
            )
        headers.append(("ce_traceparent", (traceparent or _new_traceparent()).encode()))
        if extra_headers:
            headers.extend((name, v if isinstance(v, bytes) else v.encode()) for name, v in extra_headers.items())
        return OutgoingRecord(topic, record_key, value, headers, event_id)


def _key_bytes(topic: str, path: tuple[str, ...], data: Mapping[str, Any], key: str | bytes | None) -> bytes | None:
    if key is not None:
        return key if isinstance(key, bytes) else key.encode()
    if not path:
        return None
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping) or value.get(part) is None:
            raise PublishError(f"topic '{topic}': key field '{'.'.join(path)}' is missing from the payload")
        value = value[part]
    return str(value).encode()


_time_cache: tuple[int, bytes] = (-1, b"")


def _rfc3339(moment: datetime | None) -> bytes:
    global _time_cache  # noqa: PLW0603 - a one-entry cache of the formatted current millisecond
    if moment is not None:
        if moment.tzinfo is None:
            raise PublishError(f"event time {moment} has no timezone; use an aware datetime")
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
    millis = time.time_ns() // 1_000_000
    if _time_cache[0] != millis:
        text = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
        _time_cache = (millis, text.replace("+00:00", "Z").encode())
    return _time_cache[1]


def _new_traceparent() -> str:
    return f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01"


def _producer_config(settings: Settings, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {**settings.kafka_config(settings.bootstrap_servers()), **THROUGHPUT}
    config.update(overrides or {})
    config.update(DURABILITY)
    return config


def _outcome(error: KafkaError | None, message: Message, event_id: str) -> Delivered | PublishError:
    topic = message.topic() or "?"
    if error is not None:
        return PublishError(f"delivery to '{topic}' failed: {error.str()} ({error.name()})")
    return Delivered(topic, message.partition() or 0, message.offset() or 0, event_id)


class _Base:
    def __init__(
        self,
        settings: Settings | None,
        catalog: Catalog | None,
        registry: RegistryClient | None,
        source: str,
        producer_config: Mapping[str, Any] | None,
        auto_register: bool,
    ) -> None:
        settings = settings or Settings()
        catalog = catalog or load_catalog(settings.catalog_path, settings.profile)
        registry = registry or RegistryClient(settings.registry_url())
        self.encoder = EventEncoder(catalog, registry, source=source, auto_register=auto_register)
        self._producer = Producer(_producer_config(settings, producer_config))
        self._checked: set[str] = set()

    def _check_topic(self, topic: str) -> None:
        """Once per topic: the cluster has it (a clear error instead of a 30 s delivery time-out)."""
        if topic in self._checked:
            return
        try:
            metadata = self._producer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise PublishError(f"cannot reach Kafka to publish to '{topic}': {exc.args[0]}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise PublishError(f"topic '{topic}' does not exist on the cluster; run `streams topics apply`")
        self._checked.add(topic)

    def _produce(self, record: OutgoingRecord, on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic, value=record.value, key=record.key, on_delivery=on_delivery,
                    headers=cast("list[tuple[str, str | bytes | None]]", record.headers),
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: serve deliveries, then retry
            except KafkaException as exc:
                raise PublishError(f"topic '{record.topic}': {exc.args[0]}") from exc


class DeliveryFuture:
    """The outcome of one publish; `result()` waits for the broker's acknowledgement."""

    __slots__ = ("_callbacks", "_error", "_meta", "_publisher", "event_id")

    def __init__(self, publisher: Publisher, event_id: str) -> None:
        self._publisher = publisher
        self.event_id = event_id
        self._meta: Delivered | None = None
        self._error: PublishError | None = None
        self._callbacks: list[Callable[[DeliveryFuture], None]] | None = None

    def add_done_callback(self, callback: Callable[[DeliveryFuture], None]) -> None:
        """Call `callback(self)` once delivered or failed (during poll/flush, on the caller's thread)."""
        if self.done():
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def done(self) -> bool:
        return self._meta is not None or self._error is not None

    def result(self, timeout: float = 60.0) -> Delivered:
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                raise PublishError(f"event {self.event_id} not acknowledged within {timeout} s")
            self._publisher.poll(0.05)
        if self._error is not None:
            raise self._error
        assert self._meta is not None  # noqa: S101 - done() guarantees one of the two
        return self._meta

    def _settle(self, error: KafkaError | None, message: Message) -> None:
        outcome = _outcome(error, message, self.event_id)
        if isinstance(outcome, PublishError):
            self._error = outcome
            self._publisher._failures.append(outcome)
        else:
            self._meta = outcome
        if self._callbacks is not None:
            for callback in self._callbacks:
                callback(self)


class Publisher(_Base):
    """Publishes events durably (acks=all, idempotent); use as a context manager to flush on exit.

    Example:
        with Publisher() as publisher:
            publisher.publish("invoice.created", invoice)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        catalog: Catalog | None = None,
        registry: RegistryClient | None = None,
        source: str = "streams",
        producer_config: Mapping[str, Any] | None = None,
        auto_register: bool = False,
    ) -> None:
        super().__init__(settings, catalog, registry, source, producer_config, auto_register)
        self._failures: list[PublishError] = []
        self._since_poll = 0

    def publish(self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None,
                **options: Any) -> DeliveryFuture:
        """Validate, encode and queue one event; raises PublishError before sending when it is bad.

        `publish(model)` takes the topic from the model's TOPIC; `publish("topic", mapping)` otherwise.
        Options: key, tenant, event_type, event_id, time_, traceparent, extra_headers.
        """
        name, data = _topic_and_payload(topic, payload)
        record = self.encoder.encode(name, data, **options)
        self._check_topic(name)
        return self.send(record)

    def send(self, record: OutgoingRecord) -> DeliveryFuture:
        """Queue an already encoded record (from `encoder.encode`)."""
        future = DeliveryFuture(self, record.event_id)
        self._produce(record, future._settle)
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._since_poll = 0
            self._producer.poll(0)
        return future

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks."""
        served: int = self._producer.poll(timeout)
        return served

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued event; raises PublishError if any was not delivered."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} event(s) still undelivered after {timeout} s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishError(f"{len(failures)} event(s) failed delivery; first: {failures[0]}")

    def close(self, timeout: float = 60.0) -> None:
        self.flush(timeout)
        self.encoder.registry.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncPublisher(_Base):
    """The asyncio publisher: `await publish(...)` queues and returns a future of the delivery.

    Example:
        async with AsyncPublisher() as publisher:
            delivery = await publisher.publish("invoice.created", invoice)
            print(await delivery)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        catalog: Catalog | None = None,
        registry: RegistryClient | None = None,
        source: str = "streams",
        producer_config: Mapping[str, Any] | None = None,
        auto_register: bool = False,
    ) -> None:
        super().__init__(settings, catalog, registry, source, producer_config, auto_register)
        self._poller: asyncio.Task[None] | None = None

    async def publish(self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None,
                      **options: Any) -> asyncio.Future[Delivered]:
        name, data = _topic_and_payload(topic, payload)
        record = self.encoder.encode(name, data, **options)
        self._check_topic(name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def settle(error: KafkaError | None, message: Message) -> None:
            if future.done():
                return
            outcome = _outcome(error, message, record.event_id)
            if isinstance(outcome, PublishError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self._produce(record, settle)
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_forever())
        return future

    async def publish_and_wait(self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None,
                               **options: Any) -> Delivered:
        return await (await self.publish(topic, payload, **options))

    async def _poll_forever(self) -> None:
        # Callbacks run on the loop's thread, so futures are set without cross-thread hand-off.
        while True:
            served = self._producer.poll(0)
            await asyncio.sleep(0 if served else 0.002)

    async def flush(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self._producer) > 0:
            if time.monotonic() > deadline:
                raise PublishError(f"{len(self._producer)} event(s) still undelivered after {timeout} s")
            self._producer.poll(0)
            await asyncio.sleep(0.005)
        self._producer.poll(0)

    async def close(self, timeout: float = 60.0) -> None:
        try:
            await self.flush(timeout)
        finally:
            if self._poller is not None:
                self._poller.cancel()
                self._poller = None
            self.encoder.registry.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _topic_and_payload(
    topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None
) -> tuple[str, Mapping[str, Any] | BaseModel]:
    if isinstance(topic, BaseModel):
        name = getattr(type(topic), "TOPIC", None)
        if not isinstance(name, str):
            raise PublishError(f"{type(topic).__name__} has no TOPIC; call publish('<topic>', payload)")
        return name, topic
    if payload is None:
        raise PublishError(f"publish('{topic}', ...) needs a payload")
    return topic, payload
