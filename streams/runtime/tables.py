"""Tables: key/value state an agent keeps per partition, changelog-backed, with tumbling and hopping windows.

A table holds no data itself: it reads and writes the state of the partition whose event is being handled
(the engine's PartitionState, keys `<table>:<key>`, windowed keys `<table>:<window start ms>:<key>`), so
every write commits with the outputs and offsets of the same transaction, and is undone if the event fails.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from streams.runtime.outcomes import LateEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from streams.runtime.state import PartitionState

MISSING: Any = object()
_SCALARS = (int, float, str, bool, type(None))
WindowKey = tuple[str, tuple[float, float]]  # (key, (start, end)) in seconds, as faust names a window


class Scope(threading.local):
    """What the handling of one event (or one window close) sees: its partition's state, the writes to undo
    if it fails, its event time, and the outputs it sent (sent for real only when it succeeds)."""

    state: PartitionState | None = None
    runner: Any = None  # the AgentRunner handling the event (sends go through it)
    timestamp_ms: int = 0
    journal: dict[str, Any]
    outputs: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes | None]]]]

    def __init__(self) -> None:
        self.journal = {}
        self.outputs = []

    def begin(self, timestamp_ms: int) -> None:
        self.timestamp_ms = timestamp_ms
        self.journal.clear()
        self.outputs.clear()

    def write(self, key: str, value: Any) -> None:
        state = self._state()
        if key not in self.journal:
            self.journal[key] = dict.get(state, key, MISSING)
        if value is MISSING:
            if key in state:
                del state[key]
        else:
            state[key] = value

    def undo(self) -> None:
        """Put back what the failed event changed; its outputs are dropped."""
        state = self._state()
        for key, old in self.journal.items():
            if old is MISSING:
                if key in state:
                    del state[key]
            else:
                state[key] = old
        self.journal.clear()
        self.outputs.clear()

    def _state(self) -> PartitionState:
        if self.state is None:
            raise RuntimeError("tables are read and written only inside an agent, while it handles an event")
        return self.state


SCOPE = Scope()


def _checked(table: str, value: Any) -> Any:
    """Table values go to the changelog as JSON: refuse anything else at the write, naming the table."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return tuple(_checked(table, item) for item in value)
    if kind is tuple:
        return tuple(_checked(table, item) for item in value)
    if kind is dict and all(type(k) is str for k in value):
        return {k: _checked(table, v) for k, v in value.items()}
    raise TypeError(
        f"table '{table}' keeps JSON values (numbers, strings, booleans, None, lists, dicts with "
        f"string keys); got {kind.__name__}"
    )


class Table:
    """A changelog-backed table of one app, partitioned like the events of the agent that uses it.

    Keys are strings (others are turned into strings); `default` makes missing keys read as `default()`.
    Example:
        per_user = app.table("actions-per-user", default=int)
        per_user[event.user_id] += 1
    """

    def __init__(self, name: str, default: Callable[[], Any] | None = None) -> None:
        if ":" in name or not name:
            raise ValueError(f"table name {name!r} must be non-empty and contain no ':'")
        self.name = name
        self.default = default
        self._prefix = f"{name}:"

    def _key(self, key: Any) -> str:
        return self._prefix + (key if type(key) is str else str(key))

    def __getitem__(self, key: Any) -> Any:
        value = dict.get(SCOPE._state(), self._key(key), MISSING)
        if value is not MISSING:
            return value
        if self.default is None:
            raise KeyError(key)
        return self.default()

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(SCOPE._state(), self._key(key), MISSING)
        return default if value is MISSING else value

    def __contains__(self, key: Any) -> bool:
        return self._key(key) in SCOPE._state()

    def __setitem__(self, key: Any, value: Any) -> None:
        SCOPE.write(self._key(key), _checked(self.name, value))

    def __delitem__(self, key: Any) -> None:
        SCOPE.write(self._key(key), MISSING)

    def tumbling(
        self,
        size: float,
        *,
        expires: float | None = None,
        grace: float = 0.0,
        on_window_close: Callable[..., Any] | None = None,
    ) -> WindowedTable:
        """Fixed windows of `size` seconds, aligned to the epoch."""
        return WindowedTable(
            self.name, self.default, size=size, step=size, expires=expires, grace=grace, on_window_close=on_window_close
        )

    def hopping(
        self,
        size: float,
        step: float,
        *,
        expires: float | None = None,
        grace: float = 0.0,
        on_window_close: Callable[..., Any] | None = None,
    ) -> WindowedTable:
        """Overlapping windows of `size` seconds starting every `step` seconds (`size` a multiple of `step`)."""
        return WindowedTable(
            self.name, self.default, size=size, step=step, expires=expires, grace=grace, on_window_close=on_window_close
        )


@dataclass
class WindowIndex:
    """One partition's open and closed-but-kept windows of one windowed table: start ms -> keys."""

    windows: dict[int, set[str]] = field(default_factory=dict)
    closed_ms: int = -(2**62)  # every window ending (plus grace) at or before this has closed

    def add(self, start: int, key: str) -> None:
        keys = self.windows.get(start)
        if keys is None:
            self.windows[start] = {key}
        else:
            keys.add(key)


class WindowedTable(Table):
    """A table whose values live per window; `table[key]` is the key's WindowSet at the current event's time.

    A window [start, start + size) closes when the partition's stream time (its latest event time) reaches
    its end plus `grace`, or, when the partition is caught up (no new events), when the wall clock does:
    a window with no new events still closes. `on_window_close((key, (start, end)), value)` then runs in the
    same transaction as the closing (its `app.send`s are exactly-once). A closed window is kept for reads
    until `expires` seconds after its end (at least `grace`), then deleted. An event whose every window has
    closed is late: counted (outcome "late") and dead-lettered.
    """

    def __init__(
        self,
        name: str,
        default: Callable[[], Any] | None,
        *,
        size: float,
        step: float,
        expires: float | None,
        grace: float,
        on_window_close: Callable[..., Any] | None,
    ) -> None:
        super().__init__(name, default)
        self.size_ms, self.step_ms, self.grace_ms = round(size * 1000), round(step * 1000), round(grace * 1000)
        if self.size_ms <= 0 or self.step_ms <= 0 or self.size_ms % self.step_ms:
            raise ValueError(f"table '{name}': window size {size}s must be a positive multiple of its step {step}s")
        self.keep_ms = max(self.grace_ms, round((expires or 0) * 1000))
        self.on_window_close = on_window_close
        self.closed_key = f"{name}:__closed"

    def starts(self, timestamp_ms: int) -> list[int]:
        """The starts of the windows holding `timestamp_ms`, latest first."""
        last = timestamp_ms - timestamp_ms % self.step_ms
        if self.step_ms == self.size_ms:  # tumbling: one window
            return [last]
        return list(range(last, timestamp_ms - self.size_ms, -self.step_ms))

    def window_key(self, start: int, key: Any) -> str:
        return f"{self.name}:{start}:{key if type(key) is str else str(key)}"

    def index(self, state: PartitionState | None = None) -> WindowIndex:
        """This table's window index of a partition (kept beside its state, rebuilt from it after a restore)."""
        state = SCOPE._state() if state is None else state
        index = state.derived.get(self.name)
        if index is None:
            index = state.derived[self.name] = self.rebuild(state)
        return cast("WindowIndex", index)

    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(self, key, SCOPE.timestamp_ms)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet):  # `table[key] += 1`: the WindowSet already wrote its windows
            return
        self._apply(key, SCOPE.timestamp_ms, lambda _old: value)

    def _apply(self, key: Any, timestamp_ms: int, change: Callable[[Any], Any]) -> None:
        index = self.index()
        open_starts = [s for s in self.starts(timestamp_ms) if s + self.size_ms + self.grace_ms > index.closed_ms]
        if not open_starts:
            raise LateEvent(
                f"event at {timestamp_ms} ms is late for table '{self.name}': its windows closed "
                f"(closed up to {index.closed_ms} ms; grace {self.grace_ms / 1000:g} s)"
            )
        state = SCOPE._state()
        text = key if type(key) is str else str(key)
        for start in open_starts:
            wkey = self.window_key(start, text)
            old = dict.get(state, wkey, MISSING)
            if old is MISSING:
                old = self.default() if self.default is not None else None
            SCOPE.write(wkey, _checked(self.name, change(old)))
            index.add(start, text)

    def value_at(self, key: Any, timestamp_ms: int) -> Any:
        """The key's value in the latest window holding `timestamp_ms` (default if it has none)."""
        value = dict.get(SCOPE._state(), self.window_key(self.starts(timestamp_ms)[0], key), MISSING)
        if value is MISSING:
            return self.default() if self.default is not None else None
        return value

    # ---------------------------------------------------------------- closing (called by the runtime)

    def rebuild(self, state: PartitionState) -> WindowIndex:
        """Index the windows a partition's state holds."""
        index = WindowIndex(closed_ms=dict.get(state, self.closed_key, -(2**62)))
        prefix = self._prefix
        for stored in state:
            if stored.startswith(prefix) and stored != self.closed_key:
                start, _, key = stored[len(prefix) :].partition(":")
                if start.lstrip("-").isdigit():
                    index.add(int(start), key)
        return index

    def closing(self, state: PartitionState, watermark_ms: int) -> Iterator[tuple[WindowKey, Any]]:
        """Close every window that ends (plus grace) at or before `watermark_ms`: yields ((key, (start, end)),
        value) for each of its keys, deletes what has expired, and records the new watermark in the state."""
        index = self.index(state)
        if watermark_ms <= index.closed_ms:
            return
        previous, index.closed_ms = index.closed_ms, watermark_ms
        closed_any = False
        for start in sorted(index.windows):
            end = start + self.size_ms
            if end + self.grace_ms > watermark_ms:
                break
            keys = index.windows[start]
            if end + self.grace_ms > previous:  # closes now
                closed_any = True
                for key in sorted(keys):
                    value = dict.get(state, self.window_key(start, key), MISSING)
                    if value is not MISSING:
                        yield (key, (start / 1000, end / 1000)), value
            if end + self.keep_ms <= watermark_ms:
                for key in keys:
                    wkey = self.window_key(start, key)
                    if wkey in state:
                        SCOPE.write(wkey, MISSING)
                del index.windows[start]
        if closed_any or watermark_ms - dict.get(state, self.closed_key, -(2**62)) >= 1000:
            SCOPE.write(self.closed_key, watermark_ms)


class WindowSet:
    """One key of a windowed table at one event time: `+=` (and the other in-place operators) change every
    window holding that time; `now()`, `current()`, `value()` and `delta(s)` read one window."""

    __slots__ = ("key", "table", "timestamp_ms")

    def __init__(self, table: WindowedTable, key: Any, timestamp_ms: int) -> None:
        self.table, self.key, self.timestamp_ms = table, key, timestamp_ms

    def _change(self, change: Callable[[Any], Any]) -> WindowSet:
        self.table._apply(self.key, self.timestamp_ms, change)
        return self

    def __iadd__(self, other: Any) -> WindowSet:
        return self._change(lambda old: old + other)

    def __isub__(self, other: Any) -> WindowSet:
        return self._change(lambda old: old - other)

    def __imul__(self, other: Any) -> WindowSet:
        return self._change(lambda old: old * other)

    def __itruediv__(self, other: Any) -> WindowSet:
        return self._change(lambda old: old / other)

    def current(self) -> Any:
        """The value in the latest window holding the event's time."""
        return self.table.value_at(self.key, self.timestamp_ms)

    value = current

    def now(self) -> Any:
        """The value in the latest window holding the wall clock's time."""
        return self.table.value_at(self.key, int(time.time() * 1000))

    def delta(self, seconds: float) -> Any:
        """The value in the window holding the event's time minus `seconds`."""
        return self.table.value_at(self.key, self.timestamp_ms - round(seconds * 1000))
