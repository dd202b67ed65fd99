"""Replay tooling for compliance audits: pinned offset ranges, shadow topics, group re-drive, evidence bundles.

The CLI lives in `streams.replay.commands`; the pieces are importable for scripts and tests.
"""

from streams.replay.errors import EvidenceError, ReplayError
from streams.replay.selection import PinnedRange, ReplayPlan, ReplayQuery, resolve_plan
from streams.replay.verify import VerifyReport, verify_bundle

__all__ = [
    "EvidenceError", "PinnedRange", "ReplayError", "ReplayPlan", "ReplayQuery", "VerifyReport", "resolve_plan",
    "verify_bundle",
]
