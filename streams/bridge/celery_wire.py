"""Celery task messages (protocol 2) as kombu's Redis transport stores them, built without kombu.

A message is a JSON envelope LPUSHed on the queue's list (`<queue>` or `<queue>\\x06\\x16<step>` by priority).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

__all__ = [
    "EFFECTS_PREFIX",
    "PENDING_MESSAGES",
    "PENDING_SET",
    "PRIORITY_STEPS",
    "TaskTemplate",
    "effect_key",
    "event_headers",
    "kombu_json_default",
    "priority_slot",
    "queue_keys",
    "task_id_for",
]

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis default: BRPOP serves the lists in this order
SEP = "\x06\x16"
TASK_NAMESPACE = uuid.UUID("6f0c6a4e-3b1f-5c8e-9a57-0b7d1c2e4f10")  # fixed: task ids must not change
_NAMESPACE_BYTES = TASK_NAMESPACE.bytes
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122 variant bits
_TAG_COUNTER = itertools.count()
_tag_prefix = ""  # random per process; set by the first TaskTemplate and again in a forked child
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
REPR_LIMIT = 1024  # Celery's argsrepr_maxsize
HEADER_PREFIX = "streams_"
# Redis keys both sides use: the task side's per-effect state, and the bridge's ledger of tasks it pushed
# whose effect is not done yet (the sweeper re-pushes those a broker lost; the task side removes them).
EFFECTS_PREFIX = "streams:effects:"
PENDING_SET = "streams:bridge:pending"  # task id -> when it was (re)pushed, ms
PENDING_MESSAGES = "streams:bridge:pending:messages"  # task id -> "<effect key>\n<list>\n<message>"


def queue_keys(queue: str) -> tuple[str, ...]:
    """The Redis lists of `queue`, one per priority step, in kombu's order (step 0 is the bare name)."""
    return tuple(queue if step == 0 else f"{queue}{SEP}{step}" for step in PRIORITY_STEPS)


def priority_slot(priority: int) -> int:
    """Index into `queue_keys` for a Celery priority 0-9 (kombu rounds down to the step)."""
    clamped = max(0, min(9, priority))
    return max(i for i, step in enumerate(PRIORITY_STEPS) if step <= clamped)


def effect_key(task: str, event_id: str) -> str:
    """What makes an effect unique: the task and the event it is for."""
    return f"{task}:{event_id}"


def task_id_for(event_id: str, task: str) -> str:
    """The task id of `task` for one event: a UUID5, so a redelivered event maps to the same task id."""
    # What uuid.uuid5 computes (SHA-1 of namespace + name, version and variant bits set), without its overhead.
    h = hashlib.sha1(_NAMESPACE_BYTES + f"{task}\n{event_id}".encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def _new_tag_prefix() -> None:
    global _tag_prefix  # noqa: PLW0603 - one per process, replaced in a forked child
    _tag_prefix = f"{uuid.uuid4().hex[:20]}.{os.getpid()}."


def _delivery_tag() -> str:
    """Unique per message (kombu only uses it as a key): a per-process random prefix and a counter."""
    return f"{_tag_prefix}{next(_TAG_COUNTER)}"


def kombu_json_default(value: Any) -> Any:
    """JSON for what Avro decodes to, in kombu's typed form, so a worker gets Decimal/datetime back."""
    if isinstance(value, Decimal):
        return {"__type__": "decimal", "__value__": str(value)}
    if isinstance(value, datetime):
        return {"__type__": "datetime", "__value__": value.isoformat()}
    if isinstance(value, date):
        return {"__type__": "date", "__value__": value.isoformat()}
    if isinstance(value, time):
        return {"__type__": "time", "__value__": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"__type__": "uuid", "__value__": str(value)}
    if isinstance(value, bytes):
        try:
            return {"__type__": "bytes", "__value__": value.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Datetimes go through kombu_json_default too (orjson would write bare strings the worker keeps as str).
_BODY_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_BODY_HEAD = b"[[],"  # the body is [args, kwargs, embed]; args are always empty
_BODY_TAIL = b"," + orjson.dumps(EMBED) + b"]"
# The per-task parts of headers and properties; everything else is the same for every task of a route.
_PER_TASK = frozenset({"id", "root_id", "kwargsrepr", "eta", "correlation_id", "delivery_tag"})


def _timelimit(limits_ms: tuple[int, int] | None) -> list[float | None]:
    """Celery's `timelimit` header: [hard, soft] in seconds."""
    if limits_ms is None:
        return [None, None]
    soft, hard = limits_ms
    return [hard / 1000, soft / 1000]


def default_origin() -> str:
    return f"streams-bridge.{os.getpid()}@{socket.gethostname()}"


def event_headers(event: Mapping[str, Any]) -> bytes:
    """`event` as `streams_<name>` headers, a JSON fragment for `TaskTemplate.encode_json` (`,"k":v...`)."""
    if not event:
        return b""
    return b"," + orjson.dumps({HEADER_PREFIX + name: value for name, value in event.items()})[1:-1]


class TaskTemplate:
    """Everything constant about one route's messages; `encode` adds the per-event parts.

    The result has the shape `Task.apply_async` produces through kombu's Redis transport (headers,
    properties, base64 body; the same keys, in another order), plus `streams_*` headers the task side reads.
    The constant parts are JSON once, at construction; a task costs one orjson call for its arguments.
    """

    def __init__(
        self,
        task: str,
        queue: str,
        *,
        priority: int = 0,
        countdown_ms: int = 0,
        extra_headers: Mapping[str, Any] | None = None,
        redact: frozenset[str] = frozenset(),
        origin: str | None = None,
        time_limits_ms: tuple[int, int] | None = None,
    ) -> None:
        """`time_limits_ms` is (soft, hard): Celery's `timelimit` header, which a worker honours per message."""
        self.task = task
        self.queue = queue
        self.priority = max(0, min(9, priority))
        self.slot = priority_slot(self.priority)
        self.countdown = timedelta(milliseconds=countdown_ms) if countdown_ms else None
        self.redact = redact
        if not _tag_prefix:
            _new_tag_prefix()
            os.register_at_fork(after_in_child=_new_tag_prefix)
        headers: dict[str, Any] = {
            "lang": "py",
            "task": task,
            "id": None,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": _timelimit(time_limits_ms),
            "root_id": None,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": "{}",
            "origin": origin or default_origin(),
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            **{f"{HEADER_PREFIX}{k}": v for k, v in (extra_headers or {}).items()},
        }
        properties: dict[str, Any] = {
            "correlation_id": None,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": self.priority,
            "body_encoding": "base64",
            "delivery_tag": None,
        }
        constant_headers = orjson.dumps({k: v for k, v in headers.items() if k not in _PER_TASK})[1:-1]
        constant_properties = orjson.dumps({k: v for k, v in properties.items() if k not in _PER_TASK})[1:-1]
        self._after_body = (
            b'","content-encoding":"utf-8","content-type":"application/json","headers":{' + constant_headers + b',"id":'
        )
        self._before_properties = b'},"properties":{' + constant_properties + b',"correlation_id":'
        self._no_eta = b',"eta":null'

    def encode(
        self, task_id: str, kwargs: Mapping[str, Any], event: Mapping[str, Any], now: datetime | None = None
    ) -> bytes:
        """The Redis list entry for one task; `event` becomes `streams_<name>` headers."""
        return self.encode_json(task_id, kwargs, event_headers(event), now)

    def encode_json(
        self, task_id: str, kwargs: Mapping[str, Any], event: bytes = b"", now: datetime | None = None
    ) -> bytes:
        """`encode` with the event headers already a JSON fragment (one per record, shared by its tasks)."""
        arguments = orjson.dumps(kwargs, default=kombu_json_default, option=_BODY_OPTIONS)
        body = binascii.b2a_base64(_BODY_HEAD + arguments + _BODY_TAIL, newline=False)
        task_json = orjson.dumps(task_id)
        if self.countdown is None:
            eta = self._no_eta
        else:
            eta = b',"eta":' + orjson.dumps(((now or datetime.now(UTC)) + self.countdown).isoformat())
        return b"".join(
            (
                b'{"body":"',
                body,
                self._after_body,
                task_json,
                b',"root_id":',
                task_json,
                b',"kwargsrepr":',
                orjson.dumps(self._repr_text(kwargs, arguments)),
                eta,
                event,
                self._before_properties,
                task_json,
                b',"delivery_tag":"',
                _delivery_tag().encode(),
                b'"}}',
            )
        )

    def kwargs_repr(self, kwargs: Mapping[str, Any]) -> str:
        """What logs and monitors show for the arguments: their JSON (PII fields masked), cut at 1024."""
        return self._repr_text(kwargs, None)

    def _repr_text(self, kwargs: Mapping[str, Any], arguments: bytes | None) -> str:
        # Celery shows Python's repr; JSON reads the same and comes free from the body, where repr of fresh
        # Decimals and datetimes would cost more than the rest of the message.
        if self.redact:
            shown = {k: ("***" if k in self.redact else v) for k, v in kwargs.items()}
            arguments = orjson.dumps(shown, default=kombu_json_default, option=_BODY_OPTIONS)
        elif arguments is None:
            arguments = orjson.dumps(kwargs, default=kombu_json_default, option=_BODY_OPTIONS)
        text = arguments.decode()
        return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."
