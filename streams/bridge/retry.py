"""The retry policy of a route: attempts, exponential backoff with jitter, and the redelivery bound.

The bridge writes it into each task message (`streams_retry`); the task side reads it back from there.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the task side retries: `max_attempts` runs, exponential backoff with jitter, redelivery bound."""

    max_attempts: int = 3
    backoff_ms: int = 1_000
    max_backoff_ms: int = 60_000
    jitter: bool = True
    max_redeliveries: int = 3  # deliveries no retry explains (worker lost, visibility time-out)

    def countdown(self, retries: int, rng: random.Random | None = None) -> float:
        """Seconds before attempt `retries + 2`: base * 2**retries, capped; jittered into [d/2, d]."""
        delay = min(self.max_backoff_ms, self.backoff_ms * (1 << min(retries, 32))) / 1000
        if not self.jitter:
            return delay
        return float((rng or random).uniform(delay / 2, delay))

    def to_header(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff_ms": self.backoff_ms,
            "max_backoff_ms": self.max_backoff_ms,
            "jitter": self.jitter,
            "max_redeliveries": self.max_redeliveries,
        }

    @classmethod
    def from_header(cls, value: Any) -> RetryPolicy | None:
        """The policy a bridge wrote into a message header; None when absent or not ours."""
        if not isinstance(value, Mapping):
            return None
        try:
            return cls(
                int(value["max_attempts"]),
                int(value["backoff_ms"]),
                int(value["max_backoff_ms"]),
                bool(value["jitter"]),
                int(value["max_redeliveries"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
