"""Errors of the replay tooling: bad selectors, unsafe targets, and bundles that fail verification.

Each is a StreamsError, so the CLI prints it as one line and exits 1.
"""

from __future__ import annotations

from streams.errors import StreamsError


class ReplayError(StreamsError):
    """A replay could not be planned or run: the message names the input and what would be right."""


class EvidenceError(ReplayError):
    """An evidence bundle could not be written, or it failed verification (every problem is listed)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        self.problems = problems
        super().__init__(message)
