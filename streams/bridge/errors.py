"""The bridge's errors: one root (BridgeError), a located variant for the `bridge:` catalog section.

Messages follow the catalog's style: `file:line: where field 'x': what is wrong and what would be right`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streams.errors import StreamsError
from streams.located_yaml import located_message

if TYPE_CHECKING:
    from pathlib import Path


class BridgeError(StreamsError):
    """The bridge cannot start or go on (bad routes, unknown tasks, an unusable broker URL, ...)."""


class RouteError(BridgeError):
    """A problem in the catalog's `bridge:` section, at `path`:`line` (0 = the whole file)."""

    def __init__(self, path: Path, line: int, where: str, field: str | None, problem: str) -> None:
        self.path, self.line, self.field, self.problem = path, line, field, problem
        super().__init__(located_message(path, line, where, field, problem))


class RedisUnavailableError(BridgeError):
    """Redis did not confirm a push; the bridge pauses, backs off and retries (nothing is committed)."""
