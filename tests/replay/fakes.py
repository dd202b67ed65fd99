"""Fakes of our own interfaces for the replay unit tests: consumed records and a schema registry.

No I/O: records are plain objects with confluent-kafka's Message accessors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.demo.samples import invoice
from streams.replay.filters import PayloadDecoder
from streams.schemas.codec import AvroCodec
from streams.schemas.registry_client import SCHEMA_NOT_FOUND, RegistryRequestError

ROOT = Path(__file__).resolve().parents[2]
INVOICE_SCHEMA = json.loads((ROOT / "schemas" / "invoice.created.avsc").read_text())
SCHEMA_ID = 7


@dataclass
class FakeMessage:
    """What a consumed record offers (the ConsumedRecord protocol)."""

    topic_: str
    partition_: int
    offset_: int
    timestamp_: int
    key_: bytes | None
    value_: bytes | None
    headers_: list[tuple[str, bytes | None]] | None = field(default_factory=list)

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_)

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self.headers_

    def error(self) -> None:
        return None


class FakeRegistry:
    """schema_by_id over a dict; unknown ids answer like a registry does (40403)."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = {k: json.dumps(v) for k, v in schemas.items()}

    def schema_by_id(self, schema_id: int) -> str:
        if schema_id not in self.schemas:
            raise RegistryRequestError("fake", f"GET /schemas/ids/{schema_id}", 404, SCHEMA_NOT_FOUND, "not found")
        return self.schemas[schema_id]


def decoder() -> PayloadDecoder:
    return PayloadDecoder(FakeRegistry({SCHEMA_ID: INVOICE_SCHEMA}))  # type: ignore[arg-type]


def invoice_messages(topic: str, count: int, partitions: int = 2) -> list[FakeMessage]:
    """`count` invoice events spread over `partitions`, in (partition, offset) order, with CloudEvents headers."""
    codec = AvroCodec(INVOICE_SCHEMA, SCHEMA_ID)
    messages = []
    offsets = dict.fromkeys(range(partitions), 0)
    for seq in range(count):
        partition = seq % partitions
        tenant = "acme" if seq % 3 else "globex"
        payload = invoice(seq, tenant=tenant)
        headers: list[tuple[str, bytes | None]] = [
            ("ce_id", f"id-{seq}".encode()),
            ("ce_type", b"invoice.created"),
            ("ce_tenantid", tenant.encode()),
            ("x-empty", None),
        ]
        messages.append(
            FakeMessage(
                topic,
                partition,
                offsets[partition],
                1_790_000_000_000 + seq,
                payload["invoice_id"].encode(),
                codec.encode(payload),
                headers,
            )
        )
        offsets[partition] += 1
    return sorted(messages, key=lambda m: (m.partition_, m.offset_))
