"""The producer SDK: one call validates, encodes (Confluent wire format) and sends a CloudEvent.

`Publisher` is the sync API, `AsyncPublisher` the asyncio one; both share `EventEncoder`, so a payload
is checked the same way and a bad payload fails before anything is produced. Each has `publish` (a
future per event) and `publish_nowait` (fire-and-forget, failures raised by `flush`) for throughput.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import BaseModel

from streams._avro_native import EnvelopeError, EventWriter
from streams.catalog import Catalog, TopicSpec, load_catalog
from streams.errors import PublishError
from streams.kafka_util import denial
from streams.schemas.codec import AvroCodec, EncodeError
from streams.schemas.registry_client import RegistryClient, compact_schema
from streams.settings import Settings

# The CloudEvents rules; EventWriter (streams/_native/src/envelope.rs) applies them natively and
# tests/schemas/test_event_writer.py checks that it agrees with these patterns.
CONTENT_TYPE = b"application/avro"
SPEC_VERSION = b"1.0"
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
# What durable publishing means here; a caller's producer_config may tune batching, never these.
DURABILITY = {"acks": "all", "enable.idempotence": True, "max.in.flight.requests.per.connection": 5}
THROUGHPUT = {
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 30_000,
}

Headers = list[tuple[str, bytes]]
# What EventEncoder.build returns: (key, value, headers, event id).
Built = tuple[bytes | None, bytes, Headers, str]


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
    """What publishing to one topic needs: its spec, codec, size limit, and the native event writer."""

    def __init__(self, spec: TopicSpec, codec: AvroCodec, source: bytes) -> None:
        self.spec = spec
        self.codec = codec
        self.key_path = tuple(spec.key_field.split(".")) if spec.key_field else ()
        self.max_bytes = int(spec.configs.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES))
        self.ce_type = spec.name.encode()
        # Value, key, event id and the CloudEvents header list in one native call (decision 0005).
        self.writer = EventWriter(
            codec.native_encoder, codec.wire_header, source, self.ce_type, list(self.key_path), self.max_bytes
        )


class EventEncoder:
    """Turns (topic, payload) into an OutgoingRecord: checks, encodes, keys and CloudEvents headers."""

    def __init__(self, catalog: Catalog, registry: RegistryClient, *, source: str, auto_register: bool = False) -> None:
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
        return _TopicCodec(spec, AvroCodec(json.loads(schema_text), schema_id), self.source)

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
        record_key, value, headers, new_id = self.build(
            topic,
            payload,
            key=key,
            tenant=tenant,
            event_type=event_type,
            event_id=event_id,
            time_=time_,
            traceparent=traceparent,
            extra_headers=extra_headers,
        )
        return OutgoingRecord(topic, record_key, value, headers, new_id)

    def build(
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
    ) -> Built:
        """`encode` without the OutgoingRecord: (key, value, headers, event id), for the publish hot path.

        Checks run in this order and the first failure raises PublishError: the payload against the
        schema (naming the field), the size against max.message.bytes, the key field, event time,
        tenant id (and its agreement with the payload's tenant_id), traceparent.
        """
        target = self._topics.get(topic) or self.topic(topic)
        data = payload if type(payload) is dict else _as_data(topic, payload)
        moment = None if time_ is None else _rfc3339(topic, time_)
        try:
            built = target.writer.build(data, key, tenant, event_type, event_id, moment, traceparent)
        except (TypeError, ValueError, OverflowError) as exc:
            error = self.failure(topic, exc)
            raise error from error.__cause__
        if extra_headers:
            built[2].extend((name, v if isinstance(v, bytes) else v.encode()) for name, v in extra_headers.items())
        return built

    def failure(self, topic: str, exc: Exception) -> PublishError:
        """The PublishError for what EventWriter.build raised: an envelope error as it is, an encoding
        error as the EncodeError naming the schema and the field."""
        cause: Exception = exc
        if not isinstance(exc, EnvelopeError):
            cause = EncodeError(f"payload does not match schema {self.topic(topic).codec.schema.get('name')}: {exc}")
            cause.__cause__ = exc
        error = PublishError(f"topic '{topic}': {cause}")
        error.__cause__ = cause
        return error


def _as_data(topic: str, payload: Mapping[str, Any] | BaseModel) -> Mapping[str, Any]:
    data = payload.model_dump() if isinstance(payload, BaseModel) else payload
    if not isinstance(data, Mapping):
        raise PublishError(f"topic '{topic}': payload must be a mapping or a model, got {type(data).__name__}")
    return data


def _rfc3339(topic: str, moment: datetime) -> bytes:
    """ce_time of a given event time (RFC 3339, UTC, milliseconds); the clock's is made natively."""
    if moment.tzinfo is None:
        raise PublishError(f"topic '{topic}': event time {moment} has no timezone; use an aware datetime")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()


def _producer_config(settings: Settings, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {**settings.kafka_config(settings.bootstrap_servers()), **THROUGHPUT}
    config.update(overrides or {})
    config.update(DURABILITY)
    return config


def _outcome(
    error: KafkaError | None, message: Message, event_id: str, kafka: Mapping[str, Any] | None = None
) -> Delivered | PublishError:
    topic = message.topic() or "?"
    if error is not None:
        refused = denial(error, dict(kafka or {}), "Write", topic=topic)
        if refused is not None:
            return PublishError(str(refused))
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
        config = _producer_config(settings, producer_config)
        # The default delivery report serves publish_nowait(); a future's own callback overrides it.
        config["on_delivery"] = self._on_report
        settings.check_kafka_login(settings.bootstrap_servers())  # a refused login: one clear error, not retries
        # Who this client is, for naming it in an ACL refusal (never the password).
        self._identity = {key: config[key] for key in ("sasl.username",) if key in config}
        self._producer = Producer(config)
        self._checked: set[str] = set()
        self._writers: dict[str, EventWriter] = {}  # topics loaded and checked: publish_nowait's fast path
        self._failures: list[PublishError] = []
        self._since_poll = 0
        self.delivered = 0  # events the broker acknowledged so far (both paths)

    def _on_report(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            refused = denial(error, self._identity, "Write", topic=message.topic())
            self._failures.append(
                PublishError(str(refused))
                if refused is not None
                else PublishError(
                    f"delivery to '{message.topic() or '?'}' failed: {error.str()} ({error.name()}); "
                    f"record key {message.key()!r}"
                )
            )

    def _check_topic(self, topic: str) -> None:
        """Once per topic: the cluster has it (a clear error instead of a 30 s delivery time-out)."""
        if topic in self._checked:
            return
        try:
            metadata = self._producer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise PublishError(f"cannot reach Kafka to publish to '{topic}': {exc.args[0]}") from exc
        found = metadata.topics.get(topic)
        refused = denial(found.error if found is not None else None, self._identity, "Write", topic=topic)
        if refused is not None:  # no Describe on it: the brokers will not even say whether it exists
            raise PublishError(str(refused))
        if found is None or found.error is not None:
            raise PublishError(f"topic '{topic}' does not exist on the cluster; run `streams topics apply`")
        self._checked.add(topic)

    def _build(
        self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None, options: Mapping[str, Any]
    ) -> tuple[str, Built]:
        """(topic, built event) ready to produce: checked, encoded, and the topic known to the cluster."""
        if type(topic) is str and not options and type(payload) is dict:
            writer = self._writers.get(topic)
            if writer is not None:
                # The hot path: a topic already loaded and checked, a dict payload, no options.
                try:
                    return topic, writer.build(payload)
                except (TypeError, ValueError, OverflowError) as exc:
                    error = self.encoder.failure(topic, exc)
                    raise error from error.__cause__
        name, data = _topic_and_payload(topic, payload)
        built = self.encoder.build(name, data, **options)
        if name not in self._checked:
            self._check_topic(name)
        self._writers[name] = self.encoder.topic(name).writer
        return name, built

    def _queue(
        self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None, options: Mapping[str, Any]
    ) -> str:
        """Check, encode and produce one event with the default delivery report; its event id."""
        name, (key, value, headers, event_id) = self._build(topic, payload, options)
        try:
            self._producer.produce(name, value, key, headers=headers)  # type: ignore[arg-type]
        except (BufferError, KafkaException):
            self._produce(name, key, value, headers, None)  # retries a full queue, explains the rest
        return event_id

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        on_delivery: Callable[[KafkaError | None, Message], None] | None,
    ) -> None:
        # confluent-kafka's stub types headers as str-or-bytes values; ours are all bytes.
        wire_headers = cast("list[tuple[str, str | bytes | None]]", headers)
        while True:
            try:
                if on_delivery is None:
                    self._producer.produce(topic, value, key, headers=wire_headers)
                else:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery, headers=wire_headers)
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: serve deliveries, then retry
            except KafkaException as exc:
                raise PublishError(f"topic '{topic}': {exc.args[0]}") from exc

    def _take_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishError(f"{len(failures)} event(s) failed delivery; first: {failures[0]}")


class DeliveryFuture:
    """The outcome of one publish; `result()` waits for the broker's acknowledgement."""

    __slots__ = ("_callbacks", "_error", "_partition", "_publisher", "_topic", "event_id", "offset")

    def __init__(self, publisher: Publisher, event_id: str, topic: str) -> None:
        self._publisher = publisher
        self.event_id = event_id
        self._topic = topic
        self._partition = -1
        self.offset = -1  # set with the broker's acknowledgement
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
        return self._partition >= 0 or self._error is not None

    def result(self, timeout: float = 60.0) -> Delivered:
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                raise PublishError(f"event {self.event_id} not acknowledged within {timeout} s")
            self._publisher.poll(0.05)
        if self._error is not None:
            raise self._error
        return Delivered(self._topic, self._partition, self.offset, self.event_id)

    def _settle(self, error: KafkaError | None, message: Message) -> None:
        # Delivered is built by result(): most futures are only counted, never asked.
        if error is None:
            self.offset = message.offset() or 0
            self._partition = message.partition() or 0
            self._publisher.delivered += 1
        else:
            outcome = _outcome(error, message, self.event_id, self._publisher._identity)
            assert isinstance(outcome, PublishError)  # noqa: S101 - an error gives an error
            self._error = outcome
            self._publisher._failures.append(outcome)
        if self._callbacks is not None:
            for callback in self._callbacks:
                callback(self)


class Publisher(_Base):
    """Publishes events durably (acks=all, idempotent); use as a context manager to flush on exit.

    `publish` returns a DeliveryFuture per event; `publish_nowait` is the fire-and-forget path for
    throughput (no future; failures are collected and raised by the next `flush`).

    Example:
        with Publisher() as publisher:
            publisher.publish("invoice.created", invoice)
            for event in batch:
                publisher.publish_nowait("invoice.created", event)
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

    def publish(
        self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None, **options: Any
    ) -> DeliveryFuture:
        """Validate, encode and queue one event; raises PublishError before sending when it is bad.

        `publish(model)` takes the topic from the model's TOPIC; `publish("topic", mapping)` otherwise.
        Options: key, tenant, event_type, event_id, time_, traceparent, extra_headers.
        """
        name, (key, value, headers, event_id) = self._build(topic, payload, options)
        future = DeliveryFuture(self, event_id, name)
        self._produce(name, key, value, headers, future._settle)
        self._served()
        return future

    def publish_nowait(
        self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None, **options: Any
    ) -> str:
        """Like `publish`, with no future: returns the event id. Bad input still raises here, before
        anything is sent; a delivery failure is raised by the next `flush` (or `close`)."""
        event_id = self._queue(topic, payload, options)
        self._served()
        return event_id

    def send(self, record: OutgoingRecord) -> DeliveryFuture:
        """Queue an already encoded record (from `encoder.encode`)."""
        future = DeliveryFuture(self, record.event_id, record.topic)
        self._produce(record.topic, record.key, record.value, record.headers, future._settle)
        self._served()
        return future

    def _served(self) -> None:
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._since_poll = 0
            self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks."""
        served: int = self._producer.poll(timeout)
        return served

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued event; raises PublishError if any was not delivered."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} event(s) still undelivered after {timeout} s")
        self._take_failures()

    def close(self, timeout: float = 60.0) -> None:
        self.flush(timeout)
        self.encoder.registry.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncPublisher(_Base):
    """The asyncio publisher: `await publish(...)` queues and returns a future of the delivery.

    `publish_nowait` queues without a future; its delivery failures are raised by `flush`/`close`.

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

    async def publish(
        self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None, **options: Any
    ) -> asyncio.Future[Delivered]:
        name, (key, value, headers, event_id) = self._build(topic, payload, options)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def settle(error: KafkaError | None, message: Message) -> None:
            if future.done():
                return
            outcome = _outcome(error, message, event_id, self._identity)
            if isinstance(outcome, PublishError):
                future.set_exception(outcome)
            else:
                self.delivered += 1
                future.set_result(outcome)

        self._produce(name, key, value, headers, settle)
        self._start_poller()
        return future

    def publish_nowait(
        self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None, **options: Any
    ) -> str:
        """Queue one event without a future (call from the loop's thread); returns its event id.

        Bad input raises here, before anything is sent; delivery failures are raised by `flush`."""
        event_id = self._queue(topic, payload, options)
        self._start_poller()
        return event_id

    async def publish_and_wait(
        self, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None, **options: Any
    ) -> Delivered:
        return await (await self.publish(topic, payload, **options))

    def _start_poller(self) -> None:
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        # Callbacks run on the loop's thread, so futures are set without cross-thread hand-off.
        while True:
            served = self._producer.poll(0)
            await asyncio.sleep(0 if served else 0.002)

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued event; raises PublishError if a `publish_nowait` event failed."""
        deadline = time.monotonic() + timeout
        while len(self._producer) > 0:
            if time.monotonic() > deadline:
                raise PublishError(f"{len(self._producer)} event(s) still undelivered after {timeout} s")
            self._producer.poll(0)
            await asyncio.sleep(0.005)
        self._producer.poll(0)
        self._take_failures()

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
