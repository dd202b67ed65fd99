"""Pushing task messages to Redis: one transaction per batch, within each queue's depth bound.

Every pushed task stays in a pending ledger until its effect is done; a sweeper pushes lost ones again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis

from streams.bridge.celery_wire import (
    EFFECTS_PREFIX,
    PENDING_MESSAGES,
    PENDING_SET,
    PRIORITY_STEPS,
    SEP,
    queue_keys,
)
from streams.bridge.errors import RedisUnavailableError

if TYPE_CHECKING:
    from streams.bridge.inflight import PendingTask, QueueSlot

__all__ = ["QueueDepths", "RedisQueues"]

# A push is one MULTI/EXEC of plain commands: LPUSH per (queue, priority list) ("group"), one HSET and one
# ZADD for the ledger, then, when a group's queue has a depth bound, this script. Plain commands cost Redis
# about half what a script that loops over every task in Lua does (each 2 kB message crossing into Lua and
# back is copied and hashed, and the loop allocates per task), so the bound is enforced after the fact:
# LPUSH put a group's tasks at the head of its list (workers pop the tail), so giving back the newest ones
# keeps the longest prefix that fits, exactly what a check before the push would have taken. Nothing runs
# between the pushes and this script, so no worker sees a task that is given back.
# KEYS: the pending set and messages hash, then each bounded group's queue lists. ARGV: group count, "1"
# when the ledger is on, then per group: bound, the index of its target list among the queue's lists, task
# count n, then (with the ledger) its n task ids. Returns how many each group kept.
TRIM_TO_BOUND = """
local groups, ledger = tonumber(ARGV[1]), ARGV[2] == '1'
local pushed, a, k = {}, 3, 2
for g = 1, groups do
  local n = tonumber(ARGV[a + 2])
  pushed[KEYS[k + 1]] = (pushed[KEYS[k + 1]] or 0) + n
  a = a + 3 + (ledger and n or 0)
  k = k + LISTS
end
local depths, taken = {}, {}
a, k = 3, 2
for g = 1, groups do
  local bound, slot, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local queue = KEYS[k + 1]
  local depth = depths[queue]
  if depth == nil then
    depth = -pushed[queue]
    for i = 1, LISTS do depth = depth + redis.call('LLEN', KEYS[k + i]) end
  end
  local room = math.max(0, math.min(n, bound - depth))
  depths[queue] = depth + room
  if room < n then
    redis.call('LTRIM', KEYS[k + 1 + slot], n - room, -1)
    if ledger then
      local i = a + 3 + room
      while i < a + 3 + n do
        local last = math.min(i + CHUNK, a + 3 + n) - 1
        redis.call('HDEL', KEYS[2], unpack(ARGV, i, last))
        redis.call('ZREM', KEYS[1], unpack(ARGV, i, last))
        i = last + 1
      end
    end
  end
  taken[g] = room
  a = a + 3 + (ledger and n or 0)
  k = k + LISTS
end
return taken
""".replace("LISTS", str(len(PRIORITY_STEPS))).replace("CHUNK", "2000")  # unpack stays under Lua's C stack limit

# The sweeper. A task still in the ledger after `cutoff` whose effect is not done, that no run holds, and
# whose queue is empty (so every message pushed before now has been popped by a worker) was lost between
# Redis and a worker (kombu pops with BRPOP and records the reservation afterwards, so a worker killed or
# a Redis stopped in between drops it): push it again with a fresh delivery tag. Entries it passes over
# are looked at again one `redeliver_after` later. KEYS: pending set, messages hash.
# ARGV: cutoff (ms), now (ms), limit, done-key prefix, claim-key prefix, priority separator, steps...
SWEEP = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local depths, sent = {}, 0
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[2], id)
  if not v then
    redis.call('ZREM', KEYS[1], id)
  else
    local e = string.find(v, '\\n', 1, true)
    local l = string.find(v, '\\n', e + 1, true)
    local effect, list = string.sub(v, 1, e - 1), string.sub(v, e + 1, l - 1)
    if redis.call('EXISTS', ARGV[4] .. effect) == 1 then
      redis.call('ZREM', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
    else
      local base = list
      local cut = string.find(list, ARGV[6], 1, true)
      if cut then base = string.sub(list, 1, cut - 1) end
      if depths[base] == nil then
        local depth = redis.call('LLEN', base)
        for i = 7, #ARGV do depth = depth + redis.call('LLEN', base .. ARGV[6] .. ARGV[i]) end
        depths[base] = depth
      end
      if depths[base] == 0 and redis.call('EXISTS', ARGV[5] .. effect) == 0 then
        local payload = string.gsub(string.sub(v, l + 1), '"delivery_tag":"', '"delivery_tag":"r' .. ARGV[2] .. '.', 1)
        redis.call('LPUSH', list, payload)
        sent = sent + 1
      end
      redis.call('ZADD', KEYS[1], ARGV[2], id)
    end
  end
end
return sent
"""
QueueDepths = dict[str, int]
CRLF = b"\r\n"
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


class RedisQueues:
    """The Celery broker's queues as the bridge writes them; every failure is a RedisUnavailableError."""

    def __init__(
        self, url: str, bounds: Mapping[str, int | None], *, timeout_s: float = 5.0, ledger: bool = True
    ) -> None:
        self.url = url
        self.ledger = ledger
        self.bounds = dict(bounds)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=0
        )
        self._trim = TRIM_TO_BOUND.encode()
        self._sweep = self._client.register_script(SWEEP)

    def push(self, waiting: Mapping[QueueSlot, Sequence[PendingTask]]) -> dict[QueueSlot, int]:
        """Push what fits of every (queue, priority list)'s waiting tasks in one transaction; counts taken."""
        groups = [group for group, tasks in waiting.items() if tasks]
        if not groups:
            return {}
        # The transaction is packed here, in one buffer, one bulk string per argument: redis-py packs each
        # argument in Python and writes large ones with a send call each (tens of thousands per batch).
        commands: list[bytes] = [_command(b"MULTI")]
        ledger: list[bytes] = []  # HSET's field and value pairs
        ledger_ids: list[bytes] = []
        trim_keys: list[bytes] = [PENDING_SET.encode(), PENDING_MESSAGES.encode()]
        trim_args: list[bytes] = []
        bounded = 0
        for queue, slot in groups:
            tasks = waiting[(queue, slot)]
            lists = [key.encode() for key in queue_keys(queue)]
            target = lists[slot]
            parts = [b"*%d\r\n$5\r\nLPUSH\r\n" % (len(tasks) + 2), _bulk(target)]
            for _, task in tasks:
                parts += (b"$%d\r\n" % len(task.payload), task.payload, CRLF)
            commands.append(b"".join(parts))
            bound = self.bounds.get(queue)
            ids = [_bulk(task.task_id.encode()) for _, task in tasks] if self.ledger else []
            if self.ledger:
                # The ledger entry is "<effect key>\n<list>\n<message>", what SWEEP reads.
                middle = b"\n" + target + b"\n"
                for (_, task), id_bulk in zip(tasks, ids, strict=True):
                    effect = task.effect.encode()
                    ledger += (
                        id_bulk,
                        b"$%d\r\n" % (len(effect) + len(middle) + len(task.payload)),
                        effect,
                        middle,
                        task.payload,
                        CRLF,
                    )
                ledger_ids += ids
            if bound is not None:
                bounded += 1
                trim_keys += lists
                trim_args += (_bulk(b"%d" % bound), _bulk(b"%d" % slot), _bulk(b"%d" % len(tasks)), *ids)
        if self.ledger:
            now = _bulk(str(int(time.time() * 1000)).encode())
            count = 2 + 2 * len(ledger_ids)
            commands.append(b"*%d\r\n$4\r\nHSET\r\n" % count + _bulk(PENDING_MESSAGES.encode()))
            commands += ledger
            commands.append(b"*%d\r\n$4\r\nZADD\r\n" % count + _bulk(PENDING_SET.encode()))
            for id_bulk in ledger_ids:
                commands += (now, id_bulk)
        if bounded:
            head = [
                b"EVAL",
                self._trim,
                b"%d" % len(trim_keys),
                *trim_keys,
                b"%d" % bounded,
                b"1" if self.ledger else b"",
            ]
            commands.append(b"*%d\r\n" % (len(head) + len(trim_args)) + b"".join(_bulk(arg) for arg in head))
            commands += trim_args
        commands.append(_command(b"EXEC"))
        queued = len(groups) + (2 if self.ledger else 0) + (1 if bounded else 0)
        try:
            replies = self._transact(b"".join(commands), queued)
        except TRANSIENT as exc:
            raise RedisUnavailableError(f"Redis at {_shown(self.url)} did not confirm the push: {exc}") from exc
        except redis.RedisError as exc:  # READONLY replica, OOM, ...: not ours to fix, but never commit
            raise RedisUnavailableError(f"Redis at {_shown(self.url)} refused the push: {exc}") from exc
        kept = iter(replies[-1] if bounded else ())
        return {
            (queue, slot): (len(waiting[(queue, slot)]) if self.bounds.get(queue) is None else int(next(kept)))
            for queue, slot in groups
        }

    def _transact(self, packed: bytes, queued: int) -> list[Any]:
        """Send one packed MULTI ... EXEC with `queued` commands; the EXEC replies, or the first error raised."""
        pool = self._client.connection_pool
        connection: Any = pool.get_connection()  # redis-py's connection methods are untyped
        try:
            connection.send_packed_command([packed], check_health=False)
            for _ in range(queued + 1):  # MULTI's OK and each command's QUEUED; an error here aborts the EXEC
                connection.read_response()
            replies = connection.read_response()
        except BaseException:
            connection.disconnect()  # a half-read reply must not be left for the next command
            raise
        finally:
            pool.release(connection)
        if not isinstance(replies, list):
            raise redis.ResponseError(f"EXEC answered {replies!r}")
        for reply in replies:  # a command that failed inside the transaction (the others ran)
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    def sweep(self, redeliver_after_s: float, limit: int = 1000) -> int:
        """Push again the tasks a broker lost (see SWEEP); how many. RedisUnavailableError when down."""
        now = int(time.time() * 1000)
        args: list[str | int] = [
            now - int(redeliver_after_s * 1000),
            now,
            limit,
            f"{EFFECTS_PREFIX}done:",
            f"{EFFECTS_PREFIX}claim:",
            SEP,
            *PRIORITY_STEPS[1:],
        ]
        try:
            return int(self._sweep(keys=[PENDING_SET, PENDING_MESSAGES], args=args))
        except (*TRANSIENT, redis.RedisError) as exc:
            raise RedisUnavailableError(f"Redis at {_shown(self.url)} could not be swept: {exc}") from exc

    def depths(self, queues: Sequence[str]) -> QueueDepths:
        """Ready tasks per queue (all priority lists)."""
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for name in queues:
                    for key in queue_keys(name):
                        pipe.llen(key)
                sizes = pipe.execute()
        except (*TRANSIENT, redis.RedisError) as exc:
            raise RedisUnavailableError(f"Redis at {_shown(self.url)} is unreachable: {exc}") from exc
        steps = len(queue_keys(""))
        return {name: sum(sizes[i * steps : (i + 1) * steps]) for i, name in enumerate(queues)}

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except (*TRANSIENT, redis.RedisError):
            return False

    def close(self) -> None:
        self._client.close()


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(arg) for arg in args)


def _shown(url: str) -> str:
    """The URL without a password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
