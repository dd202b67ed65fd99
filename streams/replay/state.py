"""Replay state records: each replay's pinned plan and target under `<data dir>/replay/<id>.json`.

A re-run with the same `--id` reads its plan back, so an interrupted replay continues on the same offsets.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.replay.errors import ReplayError
from streams.replay.selection import ReplayPlan

__all__ = ["ReplayState", "check_replay_id", "load_state", "new_replay_id", "save_state"]

REPLAY_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

ReplayState = dict[str, Any]


def new_replay_id() -> str:
    return uuid.uuid4().hex[:10]


def check_replay_id(replay_id: str) -> str:
    if not REPLAY_ID.match(replay_id):
        raise ReplayError(
            f"--id {replay_id!r}: use 1-40 lower-case letters, digits, '_' or '-' (it becomes part of a topic name)"
        )
    return replay_id


def state_path(data_dir: Path, replay_id: str) -> Path:
    return data_dir / "replay" / f"{replay_id}.json"


def load_state(data_dir: Path, replay_id: str) -> tuple[ReplayPlan, dict[str, Any]] | None:
    """(plan, target) recorded for `replay_id`, or None when this id has not run here."""
    path = state_path(data_dir, replay_id)
    try:
        state = json.loads(path.read_text())
        return ReplayPlan.from_json(state["plan"]), dict(state["target"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        raise ReplayError(f"the state of replay {replay_id} ({path}) is unreadable: {exc}") from exc


def save_state(
    data_dir: Path,
    replay_id: str,
    plan: ReplayPlan,
    target: dict[str, Any],
    status: str,
    result: dict[str, Any] | None = None,
) -> None:
    path = state_path(data_dir, replay_id)
    state = {
        "replay_id": replay_id,
        "status": status,
        "plan": plan.to_json(),
        "target": target,
        "result": result,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(state, indent=1))
        temporary.replace(path)
    except OSError as exc:
        raise ReplayError(f"cannot record the replay state in {path}: {exc.strerror or exc}") from exc
