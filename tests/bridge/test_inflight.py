"""Tests for streams.bridge.inflight: offsets become committable only behind fully confirmed records."""

from __future__ import annotations

from streams.bridge.inflight import InFlight, first_tasks
from streams.bridge.router import RoutedTask

P0, P1 = ("t", 0), ("t", 1)


def task(flight: InFlight, tp: tuple[str, int], offset: int, queue: str = "default") -> RoutedTask:
    routed = RoutedTask("route", queue, 0, f"{tp}:{offset}".encode(), f"id-{offset}", f"effect-{offset}")
    flight.enqueue(flight.add(tp, offset), [routed])
    return routed


def test_commit_frontier_waits_for_the_first_unconfirmed_record() -> None:
    flight = InFlight()
    for offset in range(3):
        task(flight, P0, offset, "default")
    task(flight, P0, 3, "batch")
    flight.enqueue(flight.add(P0, 4), [])  # filtered out: no task, done at once, but behind the others
    assert flight.committable() == {}
    assert flight.outstanding == 5
    assert [t.record.offset for t in flight.confirm(("default", 0), 2)] == [0, 1]
    assert flight.committable() == {P0: 2}
    flight.confirm(("default", 0), 1)
    assert flight.committable() == {P0: 3}  # offset 3 waits for the batch queue
    assert flight.tasks_waiting == 1
    assert flight.blocked_partitions() == {P0}
    flight.confirm(("batch", 0), 1)
    assert flight.committable() == {P0: 5}
    assert (flight.outstanding, flight.tasks_waiting, flight.completed, flight.waiting) == (0, 0, 5, {})


def test_a_record_with_a_dead_letter_waits_for_its_delivery() -> None:
    flight = InFlight()
    record = flight.add(P1, 10)
    flight.hold(record)
    assert flight.committable() == {}
    flight.settle(record)
    assert flight.committable() == {P1: 11}


def test_revoked_partitions_are_forgotten_with_their_waiting_tasks() -> None:
    flight = InFlight()
    task(flight, P0, 0)
    task(flight, P1, 0)
    task(flight, P1, 1, "batch")
    assert flight.drop({P1}) == 2
    assert (flight.outstanding, flight.tasks_waiting) == (1, 1)
    assert [t.record.tp for t in flight.waiting[("default", 0)]] == [P0]
    assert ("batch", 0) not in flight.waiting
    flight.confirm(("default", 0), 1)
    assert flight.committable() == {P0: 1}


def test_a_record_with_several_tasks_is_done_when_all_are_confirmed() -> None:
    flight = InFlight()
    record = flight.add(P0, 7)
    flight.enqueue(
        record, [RoutedTask("a", "default", 0, b"a", "id-a", "e-a"), RoutedTask("b", "batch", 3, b"b", "id-b", "e-b")]
    )
    assert (record.left, flight.tasks_waiting) == (2, 2)
    assert [t.task.route for t in flight.confirm(("default", 0), 5)] == ["a"]  # more than waiting: what there is
    assert flight.committable() == {}
    flight.confirm(("batch", 3), 1)
    assert flight.committable() == {P0: 8}


def test_a_push_takes_at_most_the_limit_and_rotates_the_first_queue() -> None:
    flight = InFlight()
    for offset in range(5):
        task(flight, P0, offset, "default")
    for offset in range(2):
        task(flight, P1, offset, "batch")
    waiting = flight.waiting

    def taken(turn: int, limit: int) -> dict[tuple[str, int], list[int]]:
        return {group: [t.record.offset for t in tasks] for group, tasks in first_tasks(waiting, limit, turn).items()}

    assert taken(0, 3) == {("default", 0): [0, 1, 2]}
    assert taken(1, 3) == {("batch", 0): [0, 1], ("default", 0): [0]}
    assert taken(2, 100) == {("default", 0): [0, 1, 2, 3, 4], ("batch", 0): [0, 1]}
    assert first_tasks({}, 10, 3) == {}
