"""The push transaction against a real redis-server: depth bounds, the pending ledger, priority lists, errors.

What the loop relies on: a group keeps the longest prefix of its tasks that fits its queue's bound (groups
of one queue share it), each kept task (and no other) is in the ledger the sweeper and the task side read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from streams.bridge.celery_wire import PENDING_MESSAGES, PENDING_SET, queue_keys
from streams.bridge.enqueue import RedisQueues
from streams.bridge.errors import RedisUnavailableError
from streams.bridge.inflight import PendingRecord, PendingTask, QueueSlot
from streams.bridge.router import RoutedTask
from tests.bridge.harness import RedisServer

if TYPE_CHECKING:
    from collections.abc import Iterator

    import redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    yield redis_server
    redis_server.stop()


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    redis_client = server.client()
    yield redis_client
    redis_client.close()


def tasks(queue: str, slot: int, count: int, start: int = 0) -> list[PendingTask]:
    record = PendingRecord(("topic", 0), 0)
    return [
        PendingTask(
            record,
            RoutedTask(
                "route",
                queue,
                slot,
                f'{{"n":{i},"q":"{queue}/{slot}"}}'.encode(),
                f"task-{queue}-{slot}-{i}",
                f"effect-{queue}-{slot}-{i}",
            ),
        )
        for i in range(start, start + count)
    ]


def text(value: object) -> str:
    """A value this (decode_responses=False) client returned: bytes, as text."""
    assert isinstance(value, bytes), value
    return value.decode()


def ledger_ids(client: redis.Redis) -> set[str]:
    fields = {text(key) for key in client.hkeys(PENDING_MESSAGES)}
    members = {text(member) for member in client.zrange(PENDING_SET, 0, -1)}
    assert fields == members
    return fields


@pytest.mark.timeout(60)
def test_unbounded_push_keeps_everything_in_order_with_a_ledger_entry_each(
    server: RedisServer, client: redis.Redis
) -> None:
    queues = RedisQueues(server.url, {"default": None})
    waiting: dict[QueueSlot, list[PendingTask]] = {
        ("default", 0): tasks("default", 0, 5),
        ("default", 2): tasks("default", 2, 3),
    }
    assert queues.push(waiting) == {("default", 0): 5, ("default", 2): 3}
    assert queues.push({("default", 0): tasks("default", 0, 2, start=5)}) == {("default", 0): 2}
    lists = queue_keys("default")
    # Workers pop the tail: the oldest task first.
    assert [text(m) for m in reversed(client.lrange(lists[0], 0, -1))] == [
        f'{{"n":{i},"q":"default/0"}}' for i in range(7)
    ]
    assert client.llen(lists[2]) == 3
    assert ledger_ids(client) == {f"task-default-0-{i}" for i in range(7)} | {f"task-default-2-{i}" for i in range(3)}
    entry = client.hget(PENDING_MESSAGES, "task-default-2-1")
    assert entry == f'effect-default-2-1\n{lists[2]}\n{{"n":1,"q":"default/2"}}'.encode()
    queues.close()


@pytest.mark.timeout(60)
def test_bounded_push_keeps_the_longest_prefix_that_fits_across_the_queues_lists(
    server: RedisServer, client: redis.Redis
) -> None:
    queues = RedisQueues(server.url, {"small": 10, "other": None})
    lists = queue_keys("small")
    client.lpush(lists[3], "already-there-1", "already-there-2")  # depth counts every priority list
    waiting = {
        ("small", 0): tasks("small", 0, 6),
        ("other", 0): tasks("other", 0, 4),
        ("small", 1): tasks("small", 1, 5),
    }
    assert queues.push(waiting) == {("small", 0): 6, ("other", 0): 4, ("small", 1): 2}
    assert [text(m) for m in reversed(client.lrange(lists[1], 0, -1))] == [
        f'{{"n":{i},"q":"small/1"}}' for i in range(2)
    ]
    assert client.llen(lists[0]) == 6
    assert sum(client.llen(key) for key in lists) == 10
    kept = (
        {f"task-small-0-{i}" for i in range(6)}
        | {f"task-small-1-{i}" for i in range(2)}
        | {f"task-other-0-{i}" for i in range(4)}
    )
    assert ledger_ids(client) == kept
    # Full: nothing more is taken, and nothing of it stays in the ledger.
    assert queues.push({("small", 2): tasks("small", 2, 3)}) == {("small", 2): 0}
    assert client.llen(lists[2]) == 0
    assert ledger_ids(client) == kept
    client.rpop(lists[0], 4)  # a worker took four
    assert queues.push({("small", 2): tasks("small", 2, 9)}) == {("small", 2): 4}
    assert [text(m) for m in reversed(client.lrange(lists[2], 0, -1))] == [
        f'{{"n":{i},"q":"small/2"}}' for i in range(4)
    ]
    queues.close()


@pytest.mark.timeout(60)
def test_without_a_ledger_only_the_queues_are_written(server: RedisServer, client: redis.Redis) -> None:
    queues = RedisQueues(server.url, {"small": 3}, ledger=False)
    assert queues.push({("small", 0): tasks("small", 0, 5)}) == {("small", 0): 3}
    assert client.llen(queue_keys("small")[0]) == 3
    assert not client.exists(PENDING_MESSAGES, PENDING_SET)
    queues.close()


@pytest.mark.timeout(60)
def test_a_failed_or_refused_push_is_an_unavailable_redis_and_the_connection_recovers(
    server: RedisServer, client: redis.Redis
) -> None:
    queues = RedisQueues(server.url, {"default": None}, timeout_s=2)
    client.set(queue_keys("default")[0], "not a list")
    with pytest.raises(RedisUnavailableError, match="refused the push"):
        queues.push({("default", 0): tasks("default", 0, 2)})
    client.delete(queue_keys("default")[0])
    assert queues.push({("default", 0): tasks("default", 0, 2)}) == {("default", 0): 2}
    server.stop()
    with pytest.raises(RedisUnavailableError, match="did not confirm the push"):
        queues.push({("default", 0): tasks("default", 0, 2)})
    server.start()
    assert queues.push({("default", 0): tasks("default", 0, 1, start=2)}) == {("default", 0): 1}
    assert server.client().llen(queue_keys("default")[0]) == 3
    queues.close()
