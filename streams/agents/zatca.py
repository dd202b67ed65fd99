"""ZATCA e-invoice mechanics as pure functions: the seller chain, canonical JSON, hash, QR and outcome ids.

The rules are the table's (zatca_rules.json, evaluated by streams/agents/rules.py). No I/O here.
"""

from __future__ import annotations

import hashlib
import uuid
from base64 import b64encode
from binascii import b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

from streams.agents.rules import RuleTable, Violation, default_rules

CENT = Decimal("0.01")
FIRST_PIH = b64encode(hashlib.sha256(b"0").digest()).decode()  # a seller's first invoice links to this
OUTCOME_NAMESPACE = uuid.UUID("6f1c1c8e-8d0a-4b7e-9a43-6c3f5f0f2a11")


@dataclass
class SellerChain:
    """What the stateful rules remember per seller: the last ICV and the last invoice hash."""

    last_icv: int = 0
    last_hash: str = FIRST_PIH

    def to_json(self) -> tuple[int, str]:
        return self.last_icv, self.last_hash

    @classmethod
    def from_json(cls, data: Sequence[Any] | None) -> SellerChain:
        return cls() if not data else cls(int(data[0]), str(data[1]))

    @property
    def state(self) -> tuple[int, str]:
        return self.last_icv, self.last_hash

    def advance(self, icv: int, digest: str) -> None:
        """Take an invoice into the chain: the counter never goes back, the hash is the newest."""
        self.last_icv, self.last_hash = max(self.last_icv, icv), digest


def canonical_json(value: Any) -> str:
    """The documented canonical form: JSON, sorted keys, no spaces; decimals as plain strings,
    times as UTC ISO-8601 with milliseconds, enums by value. docs/decisions/0011 describes it."""
    return canonical_bytes(value).decode()


def canonical_bytes(value: Any) -> bytes:
    """`canonical_json` as UTF-8 bytes (orjson: the same text as `json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)` with the conversions below; a property test holds it to that)."""
    return orjson.dumps(value, default=_canonical_default, option=_CANONICAL)


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _canonical_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return b64encode(value).decode()
    raise TypeError(f"cannot put {type(value).__name__} into canonical JSON")


def invoice_hash(invoice: dict[str, Any], canonical: bytes | None = None) -> str:
    """Base64 SHA-256 of the invoice's canonical JSON (what the next invoice's PIH must equal); `canonical`
    is that JSON when the caller has it already (the native decoder makes it from the Avro datum)."""
    return b64encode(hashlib.sha256(canonical_bytes(invoice) if canonical is None else canonical).digest()).decode()


def qr_payload(invoice: dict[str, Any]) -> str:
    """ZATCA QR (phase 1 TLV, base64): 1 seller name, 2 VAT number, 3 timestamp, 4 total with VAT, 5 VAT total."""
    seller = invoice["seller"]
    issued = invoice["issued_at"].astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    values = (
        seller["name"],
        seller["vat_number"] or "",
        issued,
        format(invoice["tax_inclusive_total"], "f"),
        format(invoice["vat_total"], "f"),
    )
    out = bytearray()
    for tag, text in enumerate(values, start=1):
        raw = text.encode()[:255]
        out.append(tag)
        out.append(len(raw))
        out += raw
    return b2a_base64(out, newline=False).decode()


def outcome_id(event_id: str, what: str) -> str:
    """A deterministic id for an agent's output, so a redelivered input yields the same ids downstream.

    `str(uuid.uuid5(OUTCOME_NAMESPACE, f"{event_id}:{what}"))`, computed without the UUID object.
    """
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{event_id}:{what}".encode(), usedforsecurity=False).digest())
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw[:16].hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_NAMESPACE_BYTES = OUTCOME_NAMESPACE.bytes


def chain_violations(
    invoice: dict[str, Any], before: tuple[int, str], canonical: bytes | None = None, rules: RuleTable | None = None
) -> tuple[list[Violation], str]:
    """The table's ICV and previous-hash rules against the seller's state `before` this invoice; (violations, hash).

    The caller passes the state the invoice's first delivery was judged on, so a redelivery (at least
    once) gets the same verdict.
    """
    table = rules or default_rules()
    last_icv, last_hash = before
    found: list[Violation] = []
    counter = table.chain("counter_increases")
    if counter is not None and invoice["icv"] <= last_icv:
        found.append(counter.violation(value=invoice["icv"], expected=last_icv))
    link = table.chain("links_previous_hash")
    if link is not None and invoice["previous_invoice_hash"] != last_hash:
        found.append(link.violation(value=invoice["previous_invoice_hash"], expected=last_hash))
    return found, invoice_hash(invoice, canonical)
