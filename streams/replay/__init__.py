"""Replay tooling for compliance audits: pinned offset ranges, shadow topics, group re-drive, evidence bundles.

The CLI lives in `streams.replay.commands`; the pieces are importable for scripts and tests. Names load on
first use, so importing a submodule (the CLI's help) does not load the bundle verifier and its libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.replay.errors import EvidenceError, ReplayError
    from streams.replay.selection import PinnedRange, ReplayPlan, ReplayQuery, resolve_plan
    from streams.replay.verify import VerifyReport, verify_bundle

_HOMES = {
    "EvidenceError": "streams.replay.errors",
    "ReplayError": "streams.replay.errors",
    "PinnedRange": "streams.replay.selection",
    "ReplayPlan": "streams.replay.selection",
    "ReplayQuery": "streams.replay.selection",
    "resolve_plan": "streams.replay.selection",
    "VerifyReport": "streams.replay.verify",
    "verify_bundle": "streams.replay.verify",
}
__all__ = [
    "EvidenceError",
    "PinnedRange",
    "ReplayError",
    "ReplayPlan",
    "ReplayQuery",
    "VerifyReport",
    "resolve_plan",
    "verify_bundle",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'streams.replay' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
