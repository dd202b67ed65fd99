"""The guard's idle check on a stand-in for faust's app and consumer: when it seeks, and when it must not."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import TP

from streams.agents import continuity
from streams.agents.continuity import ContinuityGuard

TOPIC = "invoice.created"
PARTITION = TP(TOPIC, 1)


@dataclass
class FakeConsumer:
    """What the check reads of faust's consumer: assignment, highwater, the last offset handed on; seeks."""

    ends: dict[TP, int]
    _read_offset: dict[TP, int | None]
    seeks: list[tuple[TP, int]] = field(default_factory=list)

    def assignment(self) -> set[TP]:
        return set(self.ends)

    def highwater(self, tp: TP) -> int | None:
        return self.ends.get(tp)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


@dataclass
class FakeApp:
    consumer: FakeConsumer
    rebalancing: bool = False
    in_recovery: bool = False


def idle_guard(expected: int | None = 1) -> ContinuityGuard:
    guard = ContinuityGuard({}, "g", (TOPIC,))
    if expected is not None:
        guard.saw(TOPIC, 1, expected - 1)
    guard._last_activity = time.monotonic() - continuity.IDLE_S - 1  # idle long enough for the check
    return guard


async def check(guard: ContinuityGuard, app: FakeApp) -> list[tuple[TP, int]]:
    await guard.redeliver_dropped(app)  # type: ignore[arg-type]
    return app.consumer.seeks


async def test_an_idle_agent_behind_what_faust_handed_on_is_sent_back_to_its_next_offset() -> None:
    # faust delivered up to 39 (its queue was cleared), the agent saw only offset 0
    app = FakeApp(FakeConsumer({PARTITION: 40}, {PARTITION: 39}))
    assert await check(idle_guard(expected=1), app) == [(PARTITION, 1)]


@pytest.mark.parametrize(("change", "why"), [
    ({"handling": True}, "the agent is on a record"),
    ({"recent": True}, "the agent handled a record a moment ago"),
    ({"rebalancing": True}, "faust is rebalancing"),
    ({"in_recovery": True}, "faust is restoring tables"),
    ({"read": 0}, "faust has handed on nothing past what the agent saw: the records are still on their way"),
    ({"end": 1}, "the agent has seen the whole partition"),
    ({"topic": "other.topic"}, "not a topic of this agent"),
])
async def test_no_seek_when(change: dict[str, Any], why: str) -> None:
    tp = TP(change.get("topic", TOPIC), 1)
    app = FakeApp(FakeConsumer({tp: change.get("end", 40)}, {tp: change.get("read", 39)}),
                  rebalancing=change.get("rebalancing", False), in_recovery=change.get("in_recovery", False))
    guard = idle_guard(expected=1)
    if change.get("handling"):
        await guard.hole_before(TOPIC, 1, 1)  # in order: no Kafka call, but the agent is now on a record
        guard._last_activity = 0.0  # long ago: only "handling" holds it back
    if change.get("recent"):
        guard.saw(TOPIC, 1, 0)
    assert await check(guard, app) == [], why


async def test_a_partition_unseen_since_the_assignment_resumes_from_the_groups_commit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    guard = idle_guard(expected=None)
    monkeypatch.setattr(guard, "_group_committed", lambda *_: 5)
    app = FakeApp(FakeConsumer({PARTITION: 40}, {PARTITION: 39}))
    assert await check(guard, app) == [(PARTITION, 5)]
    assert guard.expected[TOPIC, 1] == 5
