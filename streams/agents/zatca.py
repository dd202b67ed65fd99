"""ZATCA e-invoice business rules as pure functions: stateless checks, the seller chain, hash and QR.

No I/O here; the validation agent feeds decoded invoices in and sends the outcomes out.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from base64 import b64encode
from binascii import b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

VAT_NUMBER = re.compile(r"^3\d{13}3$")
CENT = Decimal("0.01")
TOLERANCE = Decimal("0.01")
CATEGORY_RATES = {"S": Decimal("15.00"), "Z": Decimal("0.00"), "E": Decimal("0.00"), "O": Decimal("0.00")}
FUTURE_SKEW = timedelta(minutes=5)
FIRST_PIH = b64encode(hashlib.sha256(b"0").digest()).decode()  # a seller's first invoice links to this
OUTCOME_NAMESPACE = uuid.UUID("6f1c1c8e-8d0a-4b7e-9a43-6c3f5f0f2a11")


@dataclass(frozen=True)
class Violation:
    """One failed rule: its code, a message naming the values, and the field path."""

    rule_code: str
    message: str
    field_path: str | None
    severity: str = "ERROR"


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


def stateless_violations(invoice: dict[str, Any], *, now: datetime) -> list[Violation]:
    """Every rule that needs nothing but the invoice itself."""
    found: list[Violation] = []
    seller_vat = invoice["seller"].get("vat_number")
    if not seller_vat or not VAT_NUMBER.match(seller_vat):
        found.append(
            Violation(
                "KSA-SELLER-VAT",
                f"seller VAT number {seller_vat!r} must be 15 digits, starting and ending with 3",
                "seller.vat_number",
            )
        )
    if _value(invoice["subtype"]) == "STANDARD":
        buyer = invoice.get("buyer") or {}
        buyer_vat = buyer.get("vat_number")
        if not buyer_vat or not VAT_NUMBER.match(buyer_vat):
            found.append(
                Violation(
                    "KSA-B2B-BUYER-VAT",
                    f"a standard (B2B) invoice needs the buyer's VAT number (15 digits, 3...3), got {buyer_vat!r}",
                    "buyer.vat_number",
                )
            )
    found.extend(_line_violations(invoice))
    found.extend(_total_violations(invoice))
    if invoice["tax_currency"] != "SAR":
        found.append(
            Violation(
                "KSA-TAX-CURRENCY", f"VAT must be accounted in SAR, got {invoice['tax_currency']!r}", "tax_currency"
            )
        )
    if invoice["issued_at"] > now + FUTURE_SKEW:
        found.append(
            Violation("KSA-ISSUE-DATE", f"issue time {invoice['issued_at'].isoformat()} is in the future", "issued_at")
        )
    return found


def _line_violations(invoice: dict[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    for index, line in enumerate(invoice["lines"]):
        category = _value(line["vat_category"])
        expected_rate = CATEGORY_RATES[category]
        if line["vat_rate"] != expected_rate:
            found.append(
                Violation(
                    "KSA-VAT-RATE",
                    f"line {line['line_id']}: category {category} has rate {expected_rate}, got {line['vat_rate']}",
                    f"lines[{index}].vat_rate",
                )
            )
        expected_net = (line["quantity"] * line["unit_price"] - line["discount"]).quantize(CENT)
        if abs(line["net_amount"] - expected_net) > TOLERANCE:
            found.append(
                Violation(
                    "KSA-LINE-AMOUNT",
                    f"line {line['line_id']}: net amount {line['net_amount']} "
                    f"!= quantity x unit price - discount = {expected_net}",
                    f"lines[{index}].net_amount",
                )
            )
    return found


def _total_violations(invoice: dict[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    lines = invoice["lines"]
    net_sum = sum((line["net_amount"] for line in lines), Decimal("0.00"))
    vat_sum = sum((line["net_amount"] * line["vat_rate"] / 100 for line in lines), Decimal("0.00")).quantize(CENT)
    checks = [
        ("tax_exclusive_total", invoice["tax_exclusive_total"], net_sum, "the sum of line net amounts"),
        ("vat_total", invoice["vat_total"], vat_sum, "the sum of line VAT at each line's rate"),
        (
            "tax_inclusive_total",
            invoice["tax_inclusive_total"],
            invoice["tax_exclusive_total"] + invoice["vat_total"],
            "tax exclusive total + VAT total",
        ),
        ("payable_amount", invoice["payable_amount"], invoice["tax_inclusive_total"], "the tax inclusive total"),
    ]
    for path, actual, expected, meaning in checks:
        if abs(actual - expected) > TOLERANCE:
            found.append(Violation("KSA-TOTALS", f"{path} {actual} != {meaning} = {expected}", path))
    return found


def chain_violations(
    invoice: dict[str, Any], before: tuple[int, str], canonical: bytes | None = None
) -> tuple[list[Violation], str]:
    """ICV and previous-hash checks against the seller's state `before` this invoice; (violations, hash).

    The caller passes the state the invoice's first delivery was judged on, so a redelivery (at least
    once) gets the same verdict.
    """
    last_icv, last_hash = before
    found: list[Violation] = []
    if invoice["icv"] <= last_icv:
        found.append(
            Violation(
                "KSA-ICV",
                f"invoice counter {invoice['icv']} must be greater than the seller's previous {last_icv}",
                "icv",
            )
        )
    if invoice["previous_invoice_hash"] != last_hash:
        found.append(
            Violation(
                "KSA-PIH",
                f"previous invoice hash does not match the seller's previous invoice (expected {last_hash})",
                "previous_invoice_hash",
            )
        )
    return found, invoice_hash(invoice, canonical)


def _value(member: Any) -> str:
    return str(member.value if isinstance(member, Enum) else member)
