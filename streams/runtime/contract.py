"""What the engine runs and how: the BatchAgent protocol, EngineConfig, and the names of an agent's changelog
topic and offset marks (light: App and the agents import these without loading the engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from confluent_kafka import Message

    from streams.runtime.state import Output, PartitionState

__all__ = ["MARK_KEY", "BatchAgent", "EngineConfig", "Guarantee", "changelog_topic", "mark_key"]

MARK_KEY = "__next_offset"  # per partition and source topic: (next offset to process, source topic id)
Guarantee = Literal["exactly_once", "at_least_once"]


class BatchAgent(Protocol):
    """What the engine runs: a name, its source topics, and a handler for one partition's batch of records.

    Optional methods, looked up once: `tick(partition, state, out, idle)` runs every commit interval for each
    owned partition (window closing); `dead_letter(record, error)` gives (topic, headers) to park a record
    the transaction keeps failing on; `restored(partition, state)` follows a restore; `before_commit()`
    runs before each commit (side effects outside Kafka); `committed()` and `aborted()` after each outcome;
    `full()`, asked after each batch, says the open transaction holds as much as the agent keeps in memory
    (the archiver's buffered segments): it commits then, as at `max_open_records`.
    """

    name: str
    sources: tuple[str, ...]

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        """Process `records` (one partition of one source topic, in offset order), reading and writing `state`,
        sending to `out`.

        Raising fails the transaction: the batch is retried from the last commit, so raise only for
        trouble that is not the record's fault (bad records go to a dead-letter topic instead).
        """


def changelog_topic(group: str) -> str:
    return f"{group}-store-changelog"


def mark_key(agent: BatchAgent, topic: str) -> str:
    """The state key of `topic`'s mark; the first source's is the bare MARK_KEY (one-source agents' form)."""
    return MARK_KEY if topic == agent.sources[0] else f"{MARK_KEY}:{topic}"


@dataclass
class EngineConfig:
    commit_interval_s: float = 0.025
    # Behind (consume() returned a full batch) the interval is not enough to commit: a backlog commits every
    # max_open_records or backlog_commit_s instead, so catching up spends its time processing, not committing
    # (each commit costs the broker ~5 ms of CPU and the loop a round trip; bench/notes/validation_tail.md).
    # Caught up again, a transaction holding a batch_size of records or more commits at once.
    max_open_records: int = 10_000
    backlog_commit_s: float = 0.5
    batch_size: int = 2000
    transaction_timeout_ms: int = 10_000
    session_timeout_ms: int = 10_000
    guarantee: Guarantee = "exactly_once"
