"""bench/judge: the validation agent's judging alone, no broker: the native fast path (InvoiceJudge.try_clear,
reading the rule table) beside the Python path (ValidationAgent.handle_one) on the same clean invoices.

Both start each round from an empty partition state and judge N wire-format invoice.created records of 20
interleaved sellers (every one clears). Prints the median and spread of microseconds per invoice over the
rounds and the ratio. Run: `python bench/judge.py [--events 4000] [--rounds 7] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Message

from streams._avro_native import InvoiceJudge
from streams.agents.rules import default_rules
from streams.agents.validation import ValidationAgent
from streams.agents.zatca import FIRST_PIH
from streams.catalog import load_catalog
from streams.demo.samples import invoice_chain
from streams.publish import EventEncoder
from streams.records import EventDecoder, SourceRecord
from streams.runtime.state import Output, PartitionState
from streams.schemas.registry_client import RegistryClient

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW_MICROS = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class MemoryRegistry:
    """register/lookup/schema_by_id in memory: the bench measures judging, not the registry."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}

    def register(self, subject: str, schema_str: str) -> int:  # noqa: ARG002 - one id per schema text
        for schema_id, text in self.schemas.items():
            if text == schema_str:
                return schema_id
        self.schemas[len(self.schemas) + 1] = schema_str
        return len(self.schemas)

    lookup = register

    def schema_by_id(self, schema_id: int) -> str:
        return self.schemas[schema_id]


class Keep(Output):
    """An Output that keeps what the agent sends (no producer: nothing is produced)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Any]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        self.sent.append((topic, key, value, headers))


def records(count: int) -> tuple[ValidationAgent, InvoiceJudge, MemoryRegistry, list[Message]]:
    registry = MemoryRegistry()
    client = cast("RegistryClient", registry)
    catalog = load_catalog(ROOT / "topics.yaml")
    producer = EventEncoder(catalog, client, source="billing-api")
    decoder = EventDecoder(client)
    agent = ValidationAgent(catalog, decoder, EventEncoder(catalog, client, source="validation-agent"))
    judge = InvoiceJudge(
        agent.encoder.topic("invoice.cleared").writer, FIRST_PIH, decoder.max_record_bytes, default_rules().text
    )
    per_seller = -(-count // 20)
    chains = [invoice_chain(per_seller, tenant=f"seller-{n:02d}", seed=n) for n in range(20)]
    events = [chain[i] for i in range(per_seller) for chain in chains][:count]
    out = []
    for offset, event in enumerate(events):
        key, value, headers, _ = producer.build("invoice.created", event)
        out.append(
            Message(
                topic="invoice.created",
                partition=0,
                offset=offset,
                key=key,
                value=value,
                headers=cast("Any", headers),
                timestamp=(1, 1_793_520_000_000),
            )
        )
    return agent, judge, registry, out


def native_round(judge: InvoiceJudge, registry: MemoryRegistry, messages: list[Message]) -> float:
    state = PartitionState()
    try_clear, dirty = judge.try_clear, state.dirty
    started = time.perf_counter()
    for message in messages:
        built = try_clear(message, state, dirty, NOW, NOW_MICROS)
        if type(built) is int:
            judge.add_schema(built, registry.schema_by_id(built))
            built = try_clear(message, state, dirty, NOW, NOW_MICROS)
        assert type(built) is tuple  # noqa: S101 - every invoice is clean
    return (time.perf_counter() - started) / len(messages) * 1e6


def python_round(agent: ValidationAgent, messages: list[Message]) -> float:
    state, out = PartitionState(), Keep()
    sources = [SourceRecord.from_message(m) for m in messages]
    started = time.perf_counter()
    for source in sources:
        assert agent.handle_one(source, state, out, NOW) == "cleared"  # noqa: S101
    return (time.perf_counter() - started) / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="Also write the numbers here (make bench).")
    args = parser.parse_args()
    agent, judge, registry, messages = records(args.events)
    native = [native_round(judge, registry, messages) for _ in range(args.rounds)]
    python = [python_round(agent, messages) for _ in range(max(1, args.rounds // 2))]
    for name, runs in (("native try_clear", native), ("python handle_one", python)):
        print(
            f"{name:18} {statistics.median(runs):8.2f} us/invoice  ({min(runs):.2f}-{max(runs):.2f}, "
            f"{len(runs)} rounds of {args.events})"
        )
    ratio = statistics.median(python) / statistics.median(native)
    print(f"ratio: native is {ratio:.1f}x the Python path")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "conditions": {
                        "events": args.events,
                        "sellers": 20,
                        "python": platform.python_version(),
                        "invoice": "streams.demo.samples.invoice_chain, 2 lines, all clean, empty state per round",
                    },
                    "native_us_per_invoice": native,
                    "python_us_per_invoice": python,
                    "ratio": round(ratio, 2),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
