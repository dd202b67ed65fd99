"""The engine's answer to transactions that keep failing: narrow down to one record, park it as a reference,
and hold (never park) while the schema registry cannot be reached (docs/decisions/0022).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from streams.errors import StreamsError

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from streams.records import SchemaUnavailableError
    from streams.runtime.state import Output

log = structlog.get_logger("streams.runtime.engine")

ISOLATE_AFTER = 2  # failed transactions in a row before records are processed one per transaction
PARK_AFTER = 2  # failed one-record transactions of the same record before it is parked as a reference
HOLD_PAUSE_S = (1.0, 10.0)  # first and longest pause between tries while the registry cannot be reached
OMITTED = b"the record could not be written whole; it stays at its original topic, partition and offset"

Where = tuple[str, int, int]  # (topic, partition, offset) of one record


class Isolation:
    """Counts one engine's failed transactions in a row and the one-record transactions of each suspect."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.failures = 0  # failed transactions in a row
        self.holds = 0  # tries in a row held because the registry could not be reached
        self._poison: dict[Where, int] = {}  # record -> failed one-record transactions
        self._causes: dict[Where, KafkaError | Exception | None] = {}

    @property
    def isolating(self) -> bool:
        """Take one record per transaction until one commits."""
        return self.failures >= ISOLATE_AFTER

    def committed(self) -> None:
        self.failures = self.holds = 0

    def failed(self, first: Where | None, isolating: bool, cause: KafkaError | Exception | None) -> None:
        """A transaction failed; `first` its first record, alone in it when `isolating`."""
        self.failures += 1
        if isolating and first is not None:
            self._poison[first] = self._poison.get(first, 0) + 1
            if self._poison[first] >= PARK_AFTER:
                log.error(
                    "engine.record.isolated",
                    agent=self.agent,
                    topic=first[0],
                    partition=first[1],
                    offset=first[2],
                    error=str(cause),
                )
                self._causes[first] = cause

    def held(self, exc: SchemaUnavailableError) -> float:
        """The registry cannot be reached: the pause before trying again, doubling up to HOLD_PAUSE_S[1]. The
        failure count is left alone, so holding never narrows down to one record nor parks one."""
        first, longest = HOLD_PAUSE_S
        pause = float(min(longest, first * 2**self.holds))
        self.holds += 1
        log.warning(
            "engine.held",
            agent=self.agent,
            error=str(exc),
            attempt=self.holds,
            retry_in_s=pause,
            detail="the schema registry cannot be reached; nothing is dead-lettered, the batch is tried again",
        )
        return pause

    def poisoned(self, where: Where) -> bool:
        return self._poison.get(where, 0) >= PARK_AFTER

    def park(self, record: Message, out: Output, dead_letter: Any) -> bool:
        """Send a reference to the record its own transactions keep failing on: key, no value, the agent's
        dead-letter headers and the reason (`dlq_value_omitted`). False if the agent has no dead-letter topic
        (`dead_letter(record, error)` gives none)."""
        where = (record.topic() or "", record.partition() or 0, record.offset() or 0)
        error = StreamsError(
            f"the transaction failed {PARK_AFTER} times on this record alone: {self._causes.pop(where, None)}"
        )
        target = dead_letter(record, error) if dead_letter is not None else None
        if target is None:
            return False
        topic, headers = target
        key = record.key()
        dlq_only = [(name, value) for name, value in headers if name.startswith("dlq_")]
        out.send(
            topic, key if key is None or len(key) <= 1024 else None, None, [*dlq_only, ("dlq_value_omitted", OMITTED)]
        )
        del self._poison[where]
        return True
