"""Pushing task messages to Redis: one atomic Lua call per batch within each queue's depth bound.

Every pushed task stays in a pending ledger until its effect is done; a sweeper pushes lost ones again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import NoScriptError

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

# One group per (queue, priority list). KEYS: the pending set and messages hash, then each group's queue
# lists. ARGV: now (ms, or "" for no ledger), group count, then per group: bound (-1 = none), the index of
# its target list among the queue's lists, task count n, then n messages (and, with a ledger, n task ids
# and n effect keys). Takes the longest prefix that keeps the queue's depth within the bound (depth is
# re-read per group, so groups of one queue share it), records each taken task in the pending ledger, and
# returns how many each group took.
PUSH_WITHIN_BOUND = """
local now, groups = ARGV[1], tonumber(ARGV[2])
local stride = (now == '') and 1 or 3
local a, k = 3, 2
local taken = {}
for g = 1, groups do
  local bound, slot, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local room = n
  if bound >= 0 then
    local depth = 0
    for i = 1, LISTS do depth = depth + redis.call('LLEN', KEYS[k + i]) end
    room = math.max(0, math.min(n, bound - depth))
  end
  local target = KEYS[k + 1 + slot]
  local i = 0
  while i < room do
    local last = math.min(i + CHUNK, room) - 1
    redis.call('LPUSH', target, unpack(ARGV, a + i, a + last))
    if stride == 3 then
      local fields, scores = {}, {}
      for j = i, last do
        local id = ARGV[a + n + j]
        fields[#fields + 1] = id
        fields[#fields + 1] = ARGV[a + 2 * n + j] .. '\\n' .. target .. '\\n' .. ARGV[a + j]
        scores[#scores + 1] = now
        scores[#scores + 1] = id
      end
      redis.call('HSET', KEYS[2], unpack(fields))
      redis.call('ZADD', KEYS[1], unpack(scores))
    end
    i = last + 1
  end
  taken[g] = room
  a = a + stride * n
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

    def __init__(self, url: str, bounds: Mapping[str, int | None], *, timeout_s: float = 5.0,
                 ledger: bool = True) -> None:
        self.url = url
        self.ledger = ledger
        self.bounds = dict(bounds)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            health_check_interval=0)
        self._script = self._client.register_script(PUSH_WITHIN_BOUND)
        self._sweep = self._client.register_script(SWEEP)

    def push(self, waiting: Mapping[QueueSlot, Sequence[PendingTask]]) -> dict[QueueSlot, int]:
        """Push what fits of every (queue, priority list)'s waiting tasks in one atomic call; counts taken."""
        groups = [group for group, tasks in waiting.items() if tasks]
        if not groups:
            return {}
        keys: list[bytes] = [PENDING_SET.encode(), PENDING_MESSAGES.encode()]
        # The command is packed here, in one buffer, one bulk string per argument: redis-py packs each
        # argument in Python and writes large ones with a send call each (tens of thousands per batch).
        parts: list[bytes] = []
        for queue, slot in groups:
            tasks = waiting[(queue, slot)]
            keys.extend(key.encode() for key in queue_keys(queue))
            bound = self.bounds.get(queue)
            for number in (-1 if bound is None else bound, slot, len(tasks)):
                text = str(number).encode()
                parts += (b"$%d\r\n" % len(text), text, CRLF)
            for _, task in tasks:
                parts += (b"$%d\r\n" % len(task.payload), task.payload, CRLF)
            if self.ledger:
                for _, task in tasks:
                    raw = task.task_id.encode()
                    parts += (b"$%d\r\n" % len(raw), raw, CRLF)
                for _, task in tasks:
                    raw = task.effect.encode()
                    parts += (b"$%d\r\n" % len(raw), raw, CRLF)
        now = str(int(time.time() * 1000)).encode() if self.ledger else b""
        head = [b"EVALSHA", b"", str(len(keys)).encode(), *keys, now, str(len(groups)).encode()]
        try:
            taken = self._eval(head, len(head) + len(parts) // 3, parts)
        except TRANSIENT as exc:
            raise RedisUnavailableError(f"Redis at {_shown(self.url)} did not confirm the push: {exc}") from exc
        except redis.RedisError as exc:  # READONLY replica, OOM, ...: not ours to fix, but never commit
            raise RedisUnavailableError(f"Redis at {_shown(self.url)} refused the push: {exc}") from exc
        return {group: int(count) for group, count in zip(groups, taken, strict=True)}

    def _eval(self, head: list[bytes], count: int, tail: list[bytes]) -> Any:
        """Run the push script with `head` (its sha left blank) and the packed arguments `tail`."""
        pool = self._client.connection_pool
        connection: Any = pool.get_connection()  # redis-py's connection methods are untyped
        try:
            try:
                return self._send(connection, head, count, tail)
            except NoScriptError:  # a restarted or flushed Redis: load the script and go again
                self._script.sha = self._client.script_load(self._script.script)
                return self._send(connection, head, count, tail)
        except BaseException:
            connection.disconnect()  # a half-read reply must not be left for the next command
            raise
        finally:
            pool.release(connection)

    def _send(self, connection: Any, head: list[bytes], count: int, tail: list[bytes]) -> Any:
        head[1] = self._script.sha.encode()
        packed = [b"*%d\r\n" % count]
        for arg in head:
            packed += (b"$%d\r\n" % len(arg), arg, CRLF)
        connection.send_packed_command([b"".join(packed + tail)], check_health=False)
        return connection.read_response()

    def sweep(self, redeliver_after_s: float, limit: int = 1000) -> int:
        """Push again the tasks a broker lost (see SWEEP); how many. RedisUnavailableError when down."""
        now = int(time.time() * 1000)
        args: list[str | int] = [now - int(redeliver_after_s * 1000), now, limit, f"{EFFECTS_PREFIX}done:",
                                 f"{EFFECTS_PREFIX}claim:", SEP, *PRIORITY_STEPS[1:]]
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
        return {name: sum(sizes[i * steps:(i + 1) * steps]) for i, name in enumerate(queues)}

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except (*TRANSIENT, redis.RedisError):
            return False

    def close(self) -> None:
        self._client.close()


def _shown(url: str) -> str:
    """The URL without a password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
