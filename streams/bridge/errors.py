"""The bridge's errors: one root (BridgeError), a located variant for the `bridge:` catalog section.

Messages follow the catalog's style: `file:line: where field 'x': what is wrong and what would be right`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streams.errors import StreamsError

if TYPE_CHECKING:
    from pathlib import Path


class BridgeError(StreamsError):
    """The bridge cannot start or go on (bad routes, unknown tasks, an unusable broker URL, ...)."""


class RouteError(BridgeError):
    """A problem in the catalog's `bridge:` section, at `path`:`line` (0 = the whole file)."""

    def __init__(self, path: Path, line: int, where: str, field: str | None, problem: str) -> None:
        self.path, self.line, self.field, self.problem = path, line, field, problem
        location = f"{path}:{line}" if line else str(path)
        subject = " ".join(part for part in (where, f"field '{field}'" if field else "") if part)
        super().__init__(f"{location}: {subject}: {problem}" if subject else f"{location}: {problem}")


class RedisUnavailableError(BridgeError):
    """Redis did not confirm a push; the bridge pauses, backs off and retries (nothing is committed)."""
