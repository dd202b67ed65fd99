"""The JSONL form of evidence records: the exact bytes that are hashed, plus the decoded payload to read.

Key and header values are {"text": ...} when valid UTF-8, else {"base64": ...}; the value is always base64.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.replay.reader import ConsumedRecord

__all__ = ["decode_b64", "decode_blob", "json_safe", "jsonl_line"]


def jsonl_line(message: ConsumedRecord, partition: int, schema_id: int | None, payload: Any) -> bytes:
    """One record as a line: topic, partition, offset, timestamp, key, headers, value, schema_id, payload."""
    record = {
        "topic": message.topic(),
        "partition": partition,
        "offset": message.offset(),
        "timestamp": message.timestamp()[1],
        "key": _blob(message.key()),
        "headers": [[name, _blob(value)] for name, value in (message.headers() or [])],
        "value": _b64(message.value()),
        "schema_id": schema_id,
        "payload": payload,
    }
    return (_dumps(record) + "\n").encode()


def json_safe(payload: Any) -> Any:
    """`payload` as plain JSON values: decimals as strings, times in ISO-8601, bytes in base64."""
    return json.loads(_dumps(payload))


def decode_b64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def decode_blob(blob: dict[str, str] | None) -> bytes | None:
    """The bytes of a key or header value written by `_blob`; ValueError when it is neither form."""
    if blob is None:
        return None
    if set(blob) == {"text"}:
        return blob["text"].encode()
    if set(blob) == {"base64"}:
        return base64.b64decode(blob["base64"], validate=True)
    raise ValueError(f"not {{'text': ...}} or {{'base64': ...}}: {blob!r}")


def _blob(data: bytes | None) -> dict[str, str] | None:
    if data is None:
        return None
    try:
        return {"text": data.decode()}  # strict UTF-8 round-trips to the same bytes
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
