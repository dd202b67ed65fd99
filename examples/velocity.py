"""A velocity check: count each user's actions, and flag a user who acts 100 times within one minute.

Run it: `streams worker --app examples.velocity:app` (README: "Write your own agent").
"""

from datetime import UTC, datetime

from streams import App, Stream
from streams.schemas.models import ComplianceViolation, EventReference, Severity, UserAction

LIMIT = 100  # actions per user per minute

app = App("velocity")
per_user = app.table("actions-per-user", default=int)
per_minute = app.table("actions-per-minute", default=int).tumbling(60, expires=3600, grace=10)


@app.agent("user.action")
async def velocity(stream: Stream[UserAction]) -> None:
    async for event in stream:
        per_user[event.user_id] += 1
        per_minute[event.user_id] += 1
        if per_minute[event.user_id].current() == LIMIT:  # .current(): the event's minute; .now(): the clock's
            source = app.current_event()
            await app.send(
                ComplianceViolation(
                    violation_id=f"velocity:{source.event_id}",
                    invoice_id=event.resource or "-",
                    tenant_id=event.tenant_id,
                    rule_code="VELOCITY-100",
                    severity=Severity.WARNING,
                    message=f"user {event.user_id} acted {LIMIT} times within one minute",
                    field_path="user_id",
                    detected_at=datetime.now(UTC),
                    source_event=EventReference(
                        event_id=source.event_id, topic=source.topic, partition=source.partition, offset=source.offset
                    ),
                )
            )
