"""The commit watchdog without a broker: a call within its time is left alone, an overdue one is nudged with a
metadata request, and one that never returns ends the process with EXIT_STUCK (a fake exit here)."""

from __future__ import annotations

import time
from typing import Any

from streams.runtime.watchdog import EXIT_STUCK, CommitWatchdog


class FakeProducer:
    def __init__(self) -> None:
        self.metadata_requests = 0

    def list_topics(self, timeout: float) -> Any:
        del timeout
        self.metadata_requests += 1
        return None


def watchdog(exits: list[int]) -> CommitWatchdog:
    return CommitWatchdog("probe", nudge_after_s=0.05, exit_after_s=0.2, on_stuck=exits.append)


def test_a_call_within_its_time_is_left_alone() -> None:
    exits: list[int] = []
    dog, client = watchdog(exits), FakeProducer()
    with dog.watching("commit", client):  # type: ignore[arg-type]
        dog.check()
    time.sleep(0.25)
    dog.check()  # nothing is watched any more
    assert (client.metadata_requests, exits) == (0, [])


def test_an_overdue_call_is_nudged_once_per_interval_and_a_stuck_one_exits() -> None:
    exits: list[int] = []
    dog, client = watchdog(exits), FakeProducer()
    with dog.watching("commit", client):  # type: ignore[arg-type]
        time.sleep(0.06)
        dog.check()
        dog.check()  # within NUDGE_EVERY_S of the first nudge: no second request
        assert (client.metadata_requests, exits) == (1, [])
        time.sleep(0.15)
        dog.check()
    assert exits == [EXIT_STUCK]
