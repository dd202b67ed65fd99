"""A test app: 2-second tumbling windows counted per user; each window's close reports its count."""

from __future__ import annotations

from datetime import UTC, datetime

from streams import App, Stream
from streams.schemas.models import ComplianceViolation, EventReference, Severity, UserAction

app = App("windows-test")


def report(key: tuple[str, tuple[float, float]], count: int) -> None:
    user, (start, end) = key
    app.send_nowait(
        ComplianceViolation(
            violation_id=f"window:{user}:{start}",
            invoice_id="-",
            tenant_id=user.rsplit("-u", 1)[0],
            rule_code="WINDOW-CLOSED",
            severity=Severity.WARNING,
            message=f"{user} [{start}, {end})",
            field_path=str(count),
            detected_at=datetime.now(UTC),
            source_event=EventReference(event_id="-", topic="user.action", partition=0, offset=0),
        )
    )


per_window = app.table("per-window", default=int).tumbling(2, on_window_close=report)


@app.agent("user.action")
async def count(stream: Stream[UserAction]) -> None:
    async for event in stream:
        per_window[event.user_id] += 1
