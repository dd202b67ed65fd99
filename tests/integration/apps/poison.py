"""A test app whose handler misbehaves on purpose, chosen by the action's name."""

from __future__ import annotations

import collections

from streams import App, Retry
from streams.schemas.models import UserAction

app = App("poison-test", max_attempts=4, retry_backoff=0.01)
seen = app.table("seen", default=int)
attempts: collections.Counter[str] = collections.Counter()  # per event, in this process


@app.agent("user.action")
def handle(event: UserAction) -> None:
    attempts[event.resource or ""] += 1
    seen[event.tenant_id] += 1  # undone whenever the attempt fails: counted once per event that succeeds
    if event.action == "always-raise":
        raise RuntimeError(f"cannot handle {event.resource}")
    if event.action == "retry-3" and attempts[event.resource or ""] <= 3:
        raise Retry(after=0.05)
