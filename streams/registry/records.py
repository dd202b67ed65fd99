"""The `_schemas` record format shared with Confluent Schema Registry and Karapace.

Keys are compact JSON in Confluent's field order (compaction compares key bytes); values are JSON or null.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SCHEMA = "SCHEMA"
CONFIG = "CONFIG"
MODE = "MODE"
DELETE_SUBJECT = "DELETE_SUBJECT"
NOOP = "NOOP"


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One `_schemas` record: the decoded key (keytype first) and value (None = tombstone)."""

    key: dict[str, Any]
    value: dict[str, Any] | None

    @property
    def keytype(self) -> str:
        return str(self.key.get("keytype", ""))

    def encode(self) -> tuple[bytes, bytes | None]:
        """Key and value bytes exactly as Confluent writes them (no spaces, UTF-8)."""
        key = json.dumps(self.key, separators=(",", ":"), ensure_ascii=False).encode()
        if self.value is None:
            return key, None
        return key, json.dumps(self.value, separators=(",", ":"), ensure_ascii=False).encode()


def decode(key: bytes | None, value: bytes | None) -> LogRecord | None:
    """A record from raw bytes; None for anything that is not a registry record (logged by the caller)."""
    if not key:
        return None
    try:
        key_doc = json.loads(key)
        value_doc = json.loads(value) if value else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(key_doc, dict) or not isinstance(value_doc, dict | None):
        return None
    return LogRecord(key_doc, value_doc)


def schema_record(subject: str, version: int, schema_id: int, schema: str, *, deleted: bool) -> LogRecord:
    """A subject version; Confluent omits schemaType for AVRO, and so do we."""
    return LogRecord(
        {"keytype": SCHEMA, "subject": subject, "version": version, "magic": 1},
        {"subject": subject, "version": version, "id": schema_id, "schema": schema, "deleted": deleted},
    )


def schema_tombstone(subject: str, version: int) -> LogRecord:
    """The hard delete of one subject version."""
    return LogRecord({"keytype": SCHEMA, "subject": subject, "version": version, "magic": 1}, None)


def config_record(subject: str | None, level: str | None) -> LogRecord:
    """A compatibility level (global when `subject` is None); `level` None removes it."""
    value = None if level is None else {"compatibilityLevel": level}
    return LogRecord({"keytype": CONFIG, "subject": subject, "magic": 0}, value)


def mode_record(subject: str | None, mode: str | None) -> LogRecord:
    """A mode (global when `subject` is None); `mode` None removes it."""
    value = None if mode is None else {"mode": mode}
    return LogRecord({"keytype": MODE, "subject": subject, "magic": 0}, value)


def delete_subject_record(subject: str, version: int) -> LogRecord:
    """Soft delete of every version of `subject` up to `version` (Confluent and Karapace read it so)."""
    return LogRecord(
        {"keytype": DELETE_SUBJECT, "subject": subject, "magic": 0}, {"subject": subject, "version": version}
    )
