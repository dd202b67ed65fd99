"""The checked-in typed event models: what they accept, what they refuse, and that they agree with Avro.

A model that validates must also encode with fastavro under the topic's .avsc, and decode back equal.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from streams.catalog import load_catalog
from streams.schemas.models import (
    EVENT_MODELS,
    AuditEntry,
    InvoiceCreated,
    InvoiceSubtype,
    InvoiceTypeCode,
    Severity,
    VatCategory,
    WorkflowCompleted,
    WorkflowStatus,
)

REPO = Path(__file__).resolve().parents[2]
ISSUED = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def invoice(**changes: Any) -> dict[str, Any]:
    """A valid invoice.created event as plain data (what a producer would pass)."""
    data: dict[str, Any] = {
        "invoice_id": "3cf5ee18-ee25-44ea-a444-2c37ba7f28be",
        "tenant_id": "acme",
        "invoice_number": "INV-0001",
        "icv": 42,
        "previous_invoice_hash": "NWZlY2ViNjZmZmM4NmYzOGQ5NTI3ODZjNmQ2OTZj",
        "type_code": "INVOICE_388",
        "subtype": "STANDARD",
        "issued_at": ISSUED,
        "seller": {
            "name": "Acme Trading",
            "vat_number": "300000000000003",
            "address": {
                "street": "King Fahd Rd",
                "building_number": "1234",
                "city": "Riyadh",
                "postal_code": "12345",
                "country_code": "SA",
            },
        },
        "buyer": {"name": "Buyer Co", "vat_number": "311111111111113"},
        "lines": [
            {
                "line_id": "1",
                "description": "Widget",
                "quantity": Decimal("2.000"),
                "unit_price": Decimal("50.00"),
                "discount": Decimal("0.00"),
                "vat_category": "S",
                "vat_rate": Decimal("15.00"),
                "net_amount": Decimal("100.00"),
            }
        ],
        "tax_exclusive_total": Decimal("100.00"),
        "vat_total": Decimal("15.00"),
        "tax_inclusive_total": Decimal("115.00"),
        "payable_amount": Decimal("115.00"),
        "currency": "SAR",
        "tax_currency": "SAR",
    }
    data.update(changes)
    return data


def avro_round_trip(model: Any) -> dict[str, Any]:
    schema = fastavro.parse_schema(json.loads((REPO / model.SCHEMA_FILE).read_text()))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, model.model_dump())
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, schema, schema)
    assert isinstance(decoded, dict)
    return decoded


def errors_of(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        call()
    return [(".".join(str(part) for part in error["loc"]), error["type"]) for error in caught.value.errors()]


def test_a_good_invoice_validates_and_survives_an_avro_round_trip() -> None:
    event = InvoiceCreated.model_validate(invoice())
    assert event.type_code is InvoiceTypeCode.INVOICE_388
    assert event.subtype is InvoiceSubtype.STANDARD
    assert event.lines[0].vat_category is VatCategory.S
    assert event.seller.address is not None
    assert event.buyer is not None
    assert event.buyer.address is None  # a nullable field defaults to None
    assert isinstance(event.lines, tuple)
    assert InvoiceCreated.model_validate(avro_round_trip(event)) == event


def test_wrong_types_are_refused_not_coerced() -> None:
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(icv="forty-two"))) == [("icv", "int_type")]
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(icv="42"))) == [("icv", "int_type")]
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(icv=True))) == [("icv", "int_type")]
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(seller="Acme"))) == [("seller", "model_type")]
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(type_code="INVOICE_999"))) == [("type_code", "enum")]


def test_a_missing_required_field_is_refused() -> None:
    data = invoice()
    del data["tenant_id"]
    assert errors_of(lambda: InvoiceCreated.model_validate(data)) == [("tenant_id", "missing")]
    seller = {"vat_number": "300000000000003"}  # no name
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(seller=seller))) == [("seller.name", "missing")]


def test_decimals_keep_the_avro_scale_and_precision() -> None:
    too_fine = errors_of(lambda: InvoiceCreated.model_validate(invoice(vat_total=Decimal("15.001"))))
    assert too_fine == [("vat_total", "decimal_max_places")]
    line = {**invoice()["lines"][0], "quantity": Decimal("1.0005")}  # quantity has scale 3
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(lines=[line]))) == [
        ("lines.0.quantity", "decimal_max_places")
    ]
    too_big = errors_of(lambda: InvoiceCreated.model_validate(invoice(payable_amount=Decimal("1" * 17 + ".00"))))
    assert too_big == [("payable_amount", "decimal_whole_digits")]  # 17 + 2 digits > precision 18
    assert InvoiceCreated.model_validate(invoice(vat_total="15.5")).vat_total == Decimal("15.5")


def test_timestamps_must_carry_a_timezone() -> None:
    naive = datetime(2026, 3, 1, 9, 30)  # noqa: DTZ001 - the point of the test
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(issued_at=naive))) == [
        ("issued_at", "timezone_aware")
    ]


def test_unknown_fields_are_refused_at_every_level() -> None:
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(colour="red"))) == [("colour", "extra_forbidden")]
    seller = {**invoice()["seller"], "nickname": "A"}
    assert errors_of(lambda: InvoiceCreated.model_validate(invoice(seller=seller))) == [
        ("seller.nickname", "extra_forbidden")
    ]


def test_models_are_frozen() -> None:
    event = InvoiceCreated.model_validate(invoice())
    with pytest.raises(ValidationError):
        event.icv = 43  # type: ignore[misc]  # the point: frozen models refuse assignment


def test_int_fields_are_bounded_to_the_avro_ranges() -> None:
    source = {"topic": "invoice.created", "partition": 2**31, "offset": 2**63}
    entry = {
        "tenant_id": "acme",
        "sequence": 0,
        "source": source,
        "event_id": "e1",
        "event_type": "invoice.created",
        "occurred_at": ISSUED,
        "payload_sha256": "0" * 64,
        "previous_entry_hash": "0" * 64,
        "entry_hash": "1" * 64,
    }
    assert errors_of(lambda: AuditEntry.model_validate(entry)) == [
        ("source.partition", "less_than_equal"),
        ("source.offset", "less_than_equal"),
    ]


@pytest.mark.parametrize(
    ("enum", "schema_file", "field"),
    [
        (InvoiceTypeCode, "invoice.created.avsc", "type_code"),
        (InvoiceSubtype, "invoice.created.avsc", "subtype"),
        (Severity, "compliance.violation.avsc", "severity"),
        (WorkflowStatus, "workflow.completed.avsc", "status"),
    ],
)
def test_enum_values_are_the_avro_symbols(enum: Any, schema_file: str, field: str) -> None:
    schema = json.loads((REPO / "schemas" / schema_file).read_text())
    symbols = next(f["type"]["symbols"] for f in schema["fields"] if f["name"] == field)
    assert [member.value for member in enum] == symbols
    assert all(isinstance(member, str) for member in enum)


def test_vat_category_symbols_match_the_nested_enum() -> None:
    assert [member.value for member in VatCategory] == ["S", "Z", "E", "O"]
    assert VatCategory("O") is VatCategory.O_  # `O` alone reads like zero (ruff E741)


def test_map_defaults_are_not_shared_between_events() -> None:
    data = {
        "workflow_id": "w1",
        "tenant_id": "acme",
        "workflow_type": "payment-run",
        "status": "SUCCEEDED",
        "started_at": ISSUED,
        "completed_at": ISSUED,
        "summary": "paid",
    }
    first, second = WorkflowCompleted.model_validate(data), WorkflowCompleted.model_validate(data)
    assert dict(first.attributes) == {}
    assert first.attributes is not second.attributes
    assert first.status is WorkflowStatus.SUCCEEDED
    assert WorkflowCompleted.model_validate(avro_round_trip(first)) == first


def test_event_models_cover_every_catalog_topic_with_a_schema() -> None:
    catalog = load_catalog(REPO / "topics.yaml")
    expected = {spec.name: spec for spec in catalog.topics if spec.schema_file is not None}
    assert set(EVENT_MODELS) == set(expected)
    for topic, model in EVENT_MODELS.items():
        assert topic == getattr(model, "TOPIC")  # noqa: B009 - generated class constants, not on BaseModel
        assert expected[topic].schema_file == REPO / getattr(model, "SCHEMA_FILE")  # noqa: B009
