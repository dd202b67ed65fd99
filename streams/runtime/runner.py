"""Runs one App agent on the engine: decodes each record into an event, drives the agent's code, applies the
outcome (sent, retried, dead-lettered, late), closes windows, and counts all of it.

Each event's table writes and sends are kept aside until it succeeds; a failed attempt is undone whole.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import structlog
from pydantic import BaseModel

from streams.agents.zatca import outcome_id
from streams.publish import TRACEPARENT, EventEncoder
from streams.records import EventDecoder, SourceRecord, UndecodableRecordError, dead_letter
from streams.runtime.outcomes import DeadLetter, LateEvent, Retry
from streams.runtime.tables import SCOPE
from streams.schemas.models import EVENT_MODELS
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator, Iterable

    from confluent_kafka import Message

    from streams.catalog import Catalog
    from streams.observability import AgentMetrics
    from streams.runtime.app import AgentDef, App
    from streams.runtime.state import Output, PartitionState
    from streams.settings import Settings

log = structlog.get_logger("streams.runtime")

WALL_CLOCK_ALLOWANCE_S = 1.0  # a caught-up partition's windows close this long after the clock passed them
MAX_RETRY_WAIT_S = 5.0  # one Retry(after=...) waits at most this long: the transaction stays open meanwhile
_TOPIC_OF_MODEL = {model: topic for topic, model in EVENT_MODELS.items()}
T = TypeVar("T")
_NEED = object()  # what the stream yields to the driver when the agent asks for its next event


@dataclass
class Resources:
    """What an app's agents share: the catalog, and the registry behind decoding and encoding."""

    catalog: Catalog
    decoder: EventDecoder
    encoder: EventEncoder

    @classmethod
    def open(cls, settings: Settings, catalog: Catalog, *, source: str) -> Resources:
        registry = RegistryClient(settings.registry_url())
        return cls(
            catalog,
            EventDecoder(registry, max_record_bytes=settings.agent_max_record_bytes, hold_when_registry_down=True),
            EventEncoder(catalog, registry, source=source),
        )


class _Next(Generic[T]):
    """The awaitable `stream.__anext__` returns: it hands control back to the driver (the previous event is
    done), which resumes it with the next event."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream[T]) -> None:
        self.stream = stream

    def __await__(self) -> Generator[Any, None, T]:
        yield _NEED
        return cast("T", self.stream.pending)


class Stream(Generic[T]):
    """The agent's view of its topics: `async for event in stream` yields each event once, in partition order.

    Annotate it with the topic's event model, e.g. `stream: Stream[UserAction]`.
    """

    def __init__(self) -> None:
        self.pending: Any = None

    def __aiter__(self) -> Stream[T]:
        return self

    def __anext__(self) -> _Next[T]:
        return _Next(self)


class AgentRunner:
    """One agent of an App as the engine's BatchAgent."""

    def __init__(self, app: App, agent: AgentDef, resources: Resources, metrics: AgentMetrics) -> None:
        self.app, self.definition, self.resources, self.metrics = app, agent, resources, metrics
        self._events = metrics.events
        self.name, self.sources = agent.name, agent.topics
        self._typed = agent.typed
        self._stream: Stream[Any] = Stream()
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._record: Message | None = None
        self._event_id = ""
        self._sent = 0
        self._stream_time: dict[int, int] = {}
        self._windowed = app.windowed_tables()
        self._processed = 0  # events handled, counted per batch
        self._processed_total = metrics.events.labels(agent=self.name, outcome="processed")
        self._processing = metrics.processing.labels(agent=self.name)
        self._end_to_end = metrics.end_to_end.labels(agent=self.name)
        if agent.kind == "batch":  # the raw form: the engine calls it as it is, hooks included
            handler = getattr(agent.fn, "handle", agent.fn)
            self.handle = handler  # type: ignore[method-assign]
            for hook in ("seed", "committed", "aborted", "leadership", "dead_letter", "full"):
                if hasattr(agent.fn, hook):
                    setattr(self, hook, getattr(agent.fn, hook))
        if app.commit_hooks:
            self.before_commit = self._before_commit
        # The engine ticks only agents that have windows to close (a tick asks the consumer for positions).
        self.tick = self._close_windows if self._windowed else None

    # ---------------------------------------------------------------- the engine's side

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        started = time.perf_counter()
        SCOPE.state, SCOPE.runner = state, self
        partition = records[0].partition() or 0
        try:
            if self.definition.kind == "stream":
                if self._loop is None:
                    self._loop = asyncio.new_event_loop()
                self._loop.run_until_complete(self._handle_all(records, out))
            else:
                for record in records:
                    self._handle_record(record, out)
        finally:
            SCOPE.state, SCOPE.runner = None, None
            self._processed_total.inc(self._processed)
            self._processed = 0
        newest = max(record.timestamp()[1] for record in records)
        if newest > self._stream_time.get(partition, -1):
            self._stream_time[partition] = newest
        done = time.time()
        observe = self._end_to_end.observe
        for record in records:
            observe(max(0.0, done - record.timestamp()[1] / 1000))
        self._processing.observe((time.perf_counter() - started) / len(records))

    async def _handle_all(self, records: list[Message], out: Output) -> None:
        for record in records:
            await self._handle_record_async(record, out)

    def _close_windows(self, partition: int, state: PartitionState, out: Output, idle: bool) -> None:
        """Close the windows this partition's stream time (or, when it is caught up, the wall clock) ended."""
        watermark = self._stream_time.get(partition, -(2**62))
        if idle:  # caught up: the clock stands in for events that do not come (less what may be in flight)
            watermark = max(watermark, int((time.time() - WALL_CLOCK_ALLOWANCE_S) * 1000))
        SCOPE.state, SCOPE.runner = state, self
        try:
            for table in self._windowed:
                for key, value in list(table.closing(state, watermark)):
                    self._window_closed(table.on_window_close, key, value, out)
        finally:
            SCOPE.state, SCOPE.runner = None, None

    def restored(self, _partition: int, state: PartitionState) -> None:
        for table in self._windowed:
            state.derived[table.name] = table.rebuild(state)

    def dead_letter(self, record: Message, error: BaseException) -> tuple[str, list[tuple[str, bytes | None]]]:
        return dead_letter(self.resources.catalog, SourceRecord.from_message(record), self.name, error, 1, self.metrics)

    def _before_commit(self) -> None:
        for hook in self.app.commit_hooks:
            hook()

    # ---------------------------------------------------------------- one event

    def _decode(self, record: Message) -> Any:
        _, data = self.resources.decoder.decode(record.value())
        if not self._typed:
            return data
        model = EVENT_MODELS.get(record.topic() or "")
        return data if model is None else model.model_validate(data)

    def _handle_record(self, record: Message, out: Output) -> None:
        """A plain handler's event, with its attempts."""
        for attempt in range(1, self.app.max_attempts + 1):
            event = self._prepare(record, out)
            if event is _NEED:
                return
            try:
                self._emit(self.definition.fn(event))
            except Exception as exc:  # noqa: BLE001 - every failure of the agent's code is an outcome
                if self._failed(record, exc, attempt, out):
                    return
                continue
            self._succeeded(out)
            return

    async def _handle_record_async(self, record: Message, out: Output) -> None:
        """A stream agent's event: resume its coroutine with it, with the attempts. The common case, an agent
        that awaits nothing of its own, runs without yielding to the event loop."""
        for attempt in range(1, self.app.max_attempts + 1):
            event = self._prepare(record, out)
            if event is _NEED:
                return
            try:
                signal = self._resume(event)
                while signal is not _NEED:  # the agent awaits something of its own (a sleep, an HTTP call)
                    await (asyncio.sleep(0) if signal is None else signal)
                    signal = self._send()
            except Exception as exc:  # noqa: BLE001 - every failure of the agent's code is an outcome
                self._coro = None
                if self._failed(record, exc, attempt, out):
                    return
                continue
            self._succeeded(out)
            return

    def _prepare(self, record: Message, out: Output) -> Any:
        """The event to hand the agent, with the scope begun; _NEED if the record was dead-lettered instead."""
        self._record, self._sent = record, 0
        self._event_id = ""
        SCOPE.begin(record.timestamp()[1])
        try:
            return self._decode(record)
        except (UndecodableRecordError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            self._park(record, exc, 1, out)
            return _NEED

    def _resume(self, event: Any) -> Any:
        """Hand `event` to the stream agent (starting it if needed); what it yields next (_NEED when it asks
        for the following event, or when it returned)."""
        if self._coro is None:
            self._coro = self.definition.fn(self._stream)
            if self._send() is not _NEED:
                raise RuntimeError(f"agent '{self.name}' must start with `async for event in stream`")
        self._stream.pending = event
        return self._send()

    def _send(self) -> Any:
        coro = self._coro
        assert coro is not None  # noqa: S101 - _resume started it
        try:
            return coro.send(None)
        except StopIteration:  # the agent returned: the next event starts it again
            self._coro = None
            return _NEED

    def _succeeded(self, out: Output) -> None:
        outputs = SCOPE.outputs
        if outputs:
            for topic, key, value, headers in outputs:
                out.send(topic, key, value, headers)
            outputs.clear()
        self._processed += 1

    def _failed(self, record: Message, exc: Exception, attempt: int, out: Output) -> bool:
        """Undo the attempt; True when the event's outcome is settled (dead-lettered), False to try again."""
        SCOPE.undo()
        if isinstance(exc, DeadLetter):
            self._park(record, exc, attempt, out, outcome="late" if isinstance(exc, LateEvent) else "dead-letter")
            return True
        if attempt >= self.app.max_attempts:
            self._park(record, exc, attempt, out)
            return True
        backoff = self.app.retry_backoff * 2 ** (attempt - 1)
        wait = min(exc.after, MAX_RETRY_WAIT_S) if isinstance(exc, Retry) else backoff
        log.warning(
            "agent.retry",
            agent=self.name,
            topic=record.topic(),
            partition=record.partition(),
            offset=record.offset(),
            attempt=attempt,
            wait_s=wait,
            error=f"{type(exc).__name__}: {exc}",
        )
        self._events.labels(agent=self.name, outcome="retried").inc()
        time.sleep(wait)
        return False

    def _park(
        self, record: Message, error: BaseException, attempts: int, out: Output, outcome: str = "dead-letter"
    ) -> None:
        target, headers = dead_letter(
            self.resources.catalog, SourceRecord.from_message(record), self.name, error, attempts, self.metrics
        )
        out.send(target, record.key(), record.value(), headers)
        self._events.labels(agent=self.name, outcome=outcome).inc()  # streams_agent_dlq_total: counted by dead_letter

    # ---------------------------------------------------------------- sends

    def _emit(self, outputs: Iterable[Any] | None) -> None:
        """A plain handler's return value: None, or (topic, payload) pairs and event models."""
        if outputs is None:
            return
        if isinstance(outputs, BaseModel) or (isinstance(outputs, tuple) and outputs and isinstance(outputs[0], str)):
            outputs = [outputs]  # one output rather than several
        for item in outputs:
            if isinstance(item, tuple):
                self.queue(item[0], item[1], None)
            else:
                self.queue(item, None, None)

    def queue(self, topic: Any, payload: Any, key: str | bytes | None) -> None:
        """Encode an output now (a schema error fails the event) and keep it until the event succeeds."""
        if payload is None and isinstance(topic, BaseModel):
            topic, payload = _topic_of(topic), topic
        record = self._record
        if not self._event_id and record is not None:
            self._event_id = _header(record, "ce_id") or f"{record.topic()}/{record.partition()}/{record.offset()}"
        self._sent += 1
        trace = _header(record, "ce_traceparent") if record is not None else None
        event_id = outcome_id(self._event_id or "window", f"{self.name}:{self._sent}")
        key_bytes, value, headers, _ = self.resources.encoder.build(
            topic,
            payload,
            key=key,
            event_id=event_id,
            traceparent=trace if trace is not None and TRACEPARENT.match(trace) else None,
        )
        SCOPE.outputs.append((str(topic), key_bytes, value, cast("list[tuple[str, bytes | None]]", headers)))

    def current_record(self) -> SourceRecord:
        if self._record is None:
            raise RuntimeError("no event is being handled (a window callback has no source record)")
        return SourceRecord.from_message(self._record)

    # ---------------------------------------------------------------- windows

    def _window_closed(self, callback: Callable[..., Any] | None, key: Any, value: Any, out: Output) -> None:
        """Run a window's close callback like an event: its sends go out only if it succeeds."""
        if callback is None:
            return
        self._record, self._sent = None, 0
        start, end = key[1]
        self._event_id = f"{self.app.id}:{self.name}:window:{key[0]}:{start}:{end}"
        SCOPE.begin(int(end * 1000))
        try:
            result = callback(key, value)
            if asyncio.iscoroutine(result):
                if self._loop is None:
                    self._loop = asyncio.new_event_loop()
                self._loop.run_until_complete(result)
        except Exception as exc:
            SCOPE.undo()
            log.exception("agent.window_close.failed", agent=self.name, key=key[0], window=key[1], error=str(exc))
            self._events.labels(agent=self.name, outcome="window-close-failed").inc()
            return
        for topic, out_key, out_value, headers in SCOPE.outputs:
            out.send(topic, out_key, out_value, headers)
        SCOPE.outputs.clear()
        self._events.labels(agent=self.name, outcome="window-closed").inc()


def _topic_of(model: BaseModel) -> str:
    topic = _TOPIC_OF_MODEL.get(type(model))
    if topic is None:
        raise TypeError(f"{type(model).__name__} is not the event model of a catalog topic; send(topic, payload)")
    return topic


def _header(record: Message, name: str) -> str | None:
    headers = cast("list[tuple[str, bytes | None]]", record.headers() or [])  # consumed: a list of pairs
    for key, raw in headers:
        if key == name and raw is not None:
            return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return None
