"""What an agent raises to choose an event's outcome: retry it later, or park it in its dead-letter topic.

Control flow, not errors (arq's `Retry`); anything else an agent raises is retried, then dead-lettered.
"""

from __future__ import annotations


class Retry(Exception):  # noqa: N818 - named for what the agent asks, like arq's Retry
    """Handle this event again after `after` seconds (its table writes and sends are undone first).

    The attempts are bounded by the app's `max_attempts`; past it the event is dead-lettered.
    """

    def __init__(self, after: float = 1.0, reason: str = "") -> None:
        super().__init__(reason or f"retry after {after:g} s")
        self.after = max(0.0, after)


class DeadLetter(Exception):  # noqa: N818 - an outcome the agent chooses, not a failure
    """Park this event in `<topic>.dlq` with `reason` (its table writes and sends are undone)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LateEvent(DeadLetter):
    """The event's every window has closed: counted as late and dead-lettered."""
