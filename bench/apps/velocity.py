"""Our path of bench/user_agents.py: a 60 s tumbling count per user on user.action, the current count per event.

Written with the public agent API exactly as a user would (examples/velocity.py without the violation),
run by `streams worker --app bench.apps.velocity:app`, exactly-once by default. Sends to $BENCH_VELOCITY_SINK.
"""

from __future__ import annotations

import os

from streams import App, Stream
from streams.schemas.models import UserAction

SINK = os.environ.get("BENCH_VELOCITY_SINK", "bench.velocity.ours")

app = App("bench-velocity")
per_minute = app.table("actions-per-minute", default=int).tumbling(60, expires=3600)


@app.agent("user.action")
async def velocity(stream: Stream[UserAction]) -> None:
    async for event in stream:
        per_minute[event.user_id] += 1
        timestamp = app.current_event().timestamp_ms  # the record's: the window the count is in
        await app.send(
            SINK,
            {
                "user_id": event.user_id,
                "window_start_ms": timestamp - timestamp % 60_000,
                "count": per_minute[event.user_id].current(),
            },
        )
