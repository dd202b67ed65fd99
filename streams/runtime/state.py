"""An agent's state and outputs as the engine hands them over: one partition's dict that knows what changed,
and the sink for records that go out in the open transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from confluent_kafka import Producer


class PartitionState(dict[str, Any]):
    """One partition's state: a dict that remembers which keys were written or deleted since the last commit.

    Values are JSON (written to the changelog with orjson); arrays come back as tuples after a restore, so
    agents should write tuples too (immutable, and tuples of scalars cost the garbage collector nothing).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[str] = set()
        self.derived: dict[str, Any] = {}  # indexes rebuilt from the state (a windowed table's windows), not stored

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.dirty.add(key)  # written as a tombstone


class Output:
    """Where an agent's results go: `send` queues a record in the open transaction (opening it if needed)."""

    def __init__(self, producer: Producer, begin: Callable[[], None] | None = None) -> None:
        self._producer = producer
        self._begin = begin

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
    ) -> None:
        if self._begin is not None:
            self._begin()
            self._begin = None
        wire_headers = cast("list[tuple[str, str | bytes | None]]", headers)  # what produce() accepts, read-only
        produce(self._producer, topic, value, key, headers=wire_headers)


def frozen(value: Any) -> Any:
    """A restored value with its arrays as tuples: immutable like the agent's own writes should be, and
    untracked by the garbage collector, which then skips the (large) state in its full collections."""
    if type(value) is not list:
        return value
    return tuple(value) if list not in map(type, value) else tuple(map(frozen, value))  # flat: the common case


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None, **options: Any) -> None:
    """`producer.produce`, waiting while librdkafka's local queue is full instead of failing."""
    while True:
        try:
            producer.produce(topic, value, key, **options)
            return
        except BufferError:
            producer.poll(0.05)
