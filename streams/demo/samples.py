"""Realistic sample events for the demo, the tests and the benchmarks (deterministic per seed).

Invoices follow the ZATCA shape: 15-digit VAT numbers starting and ending with 3, totals that add up.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from streams.agents.zatca import FIRST_PIH, invoice_hash

CENT = Decimal("0.01")
VAT_RATE = Decimal("15.00")
BASE_TIME = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def vat_number(rng: random.Random) -> str:
    """A syntactically valid Saudi VAT registration number: 15 digits, first and last 3."""
    return "3" + "".join(str(rng.randrange(10)) for _ in range(13)) + "3"


def address(rng: random.Random) -> dict[str, Any]:
    return {
        "street": rng.choice(["King Fahd Rd", "Olaya St", "Prince Sultan St", "Tahlia St"]),
        "building_number": f"{rng.randrange(1000, 9999)}",
        "city": rng.choice(["Riyadh", "Jeddah", "Dammam"]),
        "district": rng.choice([None, "Al Olaya", "Al Malaz"]),
        "postal_code": f"{rng.randrange(10000, 99999)}",
        "country_code": "SA",
    }


def invoice_line(rng: random.Random, number: int) -> dict[str, Any]:
    quantity = Decimal(rng.randrange(1, 20)).quantize(Decimal("0.001"))
    unit_price = (Decimal(rng.randrange(100, 100_000)) / 100).quantize(CENT)
    discount = Decimal("0.00")
    net = (quantity * unit_price - discount).quantize(CENT)
    return {
        "line_id": str(number),
        "description": rng.choice(["Consulting hours", "Laptop", "Office chair", "Cloud subscription"]),
        "quantity": quantity,
        "unit_price": unit_price,
        "discount": discount,
        "vat_category": "S",
        "vat_rate": VAT_RATE,
        "net_amount": net,
    }


def invoice(
    seq: int,
    *,
    seed: int = 7,
    tenant: str = "acme",
    lines: int = 2,
    seller_vat: str | None = None,
    previous_hash: str = FIRST_PIH,
    icv: int | None = None,
) -> dict[str, Any]:
    """A valid standard (B2B) invoice.created payload; the same (seq, seed) gives the same invoice."""
    rng = random.Random(f"{seed}:{tenant}:{seq}")  # a str seed is hashed with SHA-512: stable across runs
    items = [invoice_line(rng, n + 1) for n in range(lines)]
    exclusive = sum((item["net_amount"] for item in items), Decimal("0.00"))
    vat = (exclusive * VAT_RATE / 100).quantize(CENT)
    return {
        "invoice_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "tenant_id": tenant,
        "invoice_number": f"INV-{seq:08d}",
        "icv": icv if icv is not None else seq + 1,
        "previous_invoice_hash": previous_hash,
        "type_code": "INVOICE_388",
        "subtype": "STANDARD",
        "issued_at": BASE_TIME + timedelta(minutes=seq),
        "seller": {
            "name": f"{tenant.title()} Trading Co.",
            "vat_number": seller_vat or "300000000000003",
            "cr_number": "1010010000",
            "address": address(rng),
        },
        "buyer": {"name": "Gulf Retail LLC", "vat_number": vat_number(rng), "cr_number": None, "address": address(rng)},
        "lines": items,
        "tax_exclusive_total": exclusive,
        "vat_total": vat,
        "tax_inclusive_total": exclusive + vat,
        "payable_amount": exclusive + vat,
        "currency": "SAR",
        "tax_currency": "SAR",
    }


def invoice_chain(
    count: int, *, seed: int = 7, tenant: str = "acme", seller_vat: str = "300000000000003", start: int = 0
) -> list[dict[str, Any]]:
    """`count` valid invoices of one seller: ICV 1, 2, ... and each previous hash linking to the one before."""
    chain: list[dict[str, Any]] = []
    previous = FIRST_PIH
    for seq in range(start, start + count):
        event = invoice(seq, seed=seed, tenant=tenant, seller_vat=seller_vat, previous_hash=previous, icv=seq + 1)
        previous = invoice_hash(event)
        chain.append(event)
    return chain


def user_action(seq: int, *, seed: int = 7, tenant: str = "acme") -> dict[str, Any]:
    rng = random.Random(seed * 7_919 + seq)
    return {
        "user_id": f"user-{rng.randrange(1, 40):03d}",
        "tenant_id": tenant,
        "action": rng.choice(["invoice.approve", "invoice.view", "report.export", "login"]),
        "resource": f"INV-{rng.randrange(0, 10_000):08d}",
        "ip_address": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "user_agent": "Mozilla/5.0",
        "occurred_at": BASE_TIME + timedelta(seconds=30 * seq),
    }


def workflow_completed(seq: int, *, seed: int = 7, tenant: str = "acme") -> dict[str, Any]:
    rng = random.Random(seed * 104_729 + seq)
    kind = rng.choice(["invoice-approval", "payment-run", "month-end-close"])
    started = BASE_TIME + timedelta(minutes=10 * seq)
    return {
        "workflow_id": f"wf-{seq:06d}",
        "tenant_id": tenant,
        "workflow_type": kind,
        "status": rng.choice(["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED"]),
        "started_at": started,
        "completed_at": started + timedelta(minutes=rng.randrange(1, 50)),
        "actor": f"user-{rng.randrange(1, 40):03d}",
        "summary": f"{kind.replace('-', ' ')} #{seq} for {tenant}",
        "attributes": {"batch": str(seq // 10)},
    }
