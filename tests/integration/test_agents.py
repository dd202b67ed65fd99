"""The worker end to end on its own local stack: validation outcomes, DLQ, search, crash recovery."""

from __future__ import annotations

import collections
import json
import os
import re
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from streams.agents.zatca import CENT
from streams.catalog import load_catalog
from streams.cli import main
from streams.demo.samples import invoice_chain
from streams.local.processes import free_port
from streams.publish import Publisher
from streams.records import EventDecoder
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings
from tests.integration.worker_harness import (
    catalog_stack,
    header,
    read_topic,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A stack of its own: the agents use the catalog's real topic names."""
    with catalog_stack(tmp_path_factory.mktemp("agents")) as settings:
        yield settings


def retotal(invoice: dict[str, Any]) -> dict[str, Any]:
    """Recompute the totals from the (possibly edited) lines, so only the edited rule fails."""
    exclusive = sum((line["net_amount"] for line in invoice["lines"]), Decimal("0.00"))
    vat = sum((line["net_amount"] * line["vat_rate"] / 100 for line in invoice["lines"]), Decimal("0.00"))
    vat = vat.quantize(CENT)
    return {
        **invoice,
        "tax_exclusive_total": exclusive,
        "vat_total": vat,
        "tax_inclusive_total": exclusive + vat,
        "payable_amount": exclusive + vat,
    }


def with_line(invoice: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return retotal({**invoice, "lines": [{**invoice["lines"][0], **changes}, *invoice["lines"][1:]]})


def single_rule_breakers() -> list[tuple[str, dict[str, Any]]]:
    """One first invoice per tenant, each breaking exactly one stateless rule."""

    def first(tenant: str, **kw: Any) -> dict[str, Any]:
        return invoice_chain(1, tenant=tenant, seed=hash(tenant) % 1000, **kw)[0]

    base = first("t-net")
    return [
        ("KSA-SELLER-VAT", first("t-seller", seller_vat="123456789012345")),
        ("KSA-B2B-BUYER-VAT", {**first("t-buyer"), "buyer": {**first("t-buyer")["buyer"], "vat_number": None}}),
        ("KSA-LINE-AMOUNT", with_line(base, net_amount=base["lines"][0]["net_amount"] + 1)),
        ("KSA-TOTALS", {**first("t-totals"), "payable_amount": first("t-totals")["payable_amount"] + 5}),
        ("KSA-VAT-RATE", with_line(first("t-rate"), vat_rate=Decimal("10.00"))),
        ("KSA-TAX-CURRENCY", {**first("t-currency"), "tax_currency": "USD"}),
        ("KSA-ISSUE-DATE", {**first("t-future"), "issued_at": datetime.now(UTC) + timedelta(days=2)}),
    ]


def poison_records(settings: Settings) -> list[bytes]:
    """Random bytes, wrong magic, unknown schema id, truncated Avro, and one over the agents' size limit."""
    with Publisher(settings, source="tests") as publisher:
        good = publisher.encoder.encode("invoice.created", invoice_chain(1, tenant="t-poison")[0]).value
    return [
        b"\xff" + os.urandom(63),
        b"\x07" + good[1:],
        b"\x00" + struct.pack(">I", 99_999) + good[5:],
        good[: len(good) // 2],
        good + b"\x00" * (settings.agent_max_record_bytes + 10),
    ]


@pytest.mark.timeout(300)
def test_mixed_batch_exact_outcomes_dlq_and_search(stack: Settings, tmp_path: Path) -> None:
    acme = invoice_chain(30, tenant="acme")
    icv = invoice_chain(3, tenant="t-icv")
    icv[2] = {**icv[2], "icv": 2}
    pih = invoice_chain(3, tenant="t-pih")
    pih[2] = {**pih[2], "previous_invoice_hash": "bm90IHRoZSBwcmV2aW91cyBoYXNo"}
    breakers = single_rule_breakers()
    with Publisher(stack, source="billing-api") as publisher:
        for event in [*acme, *icv, *pih, *(event for _, event in breakers)]:
            publisher.publish("invoice.created", event)
        publisher.flush()
        publisher.publish("invoice.created", acme[5])  # the same invoice UUID again, as a new event
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers()})
    for value in poison_records(stack):
        producer.produce("invoice.created", key=b"t-poison", value=value, headers=[("ce_id", os.urandom(8).hex())])
    assert producer.flush(10) == 0

    port = free_port()
    process = start_worker(stack, "validation,indexing,audit", port, tmp_path / "worker.log")
    try:
        expected = collections.Counter({code: 1 for code, _ in breakers})
        expected.update({"KSA-DUPLICATE-UUID": 1, "KSA-ICV": 1, "KSA-PIH": 1})

        def counts() -> tuple[int, int, int]:
            return (
                len(read_topic(stack, "invoice.cleared")),
                len(read_topic(stack, "compliance.violation")),
                len(read_topic(stack, "invoice.created.dlq")),
            )

        wanted = (34, sum(expected.values()), 5)
        wait_for(
            lambda: all(n >= w for n, w in zip(counts(), wanted, strict=True)),
            120,
            lambda: f"the worker to judge every invoice: (cleared, violations, dlq) {counts()} of {wanted}",
        )
        cleared = read_topic(stack, "invoice.cleared")
        violations = read_topic(stack, "compliance.violation")
        dead = read_topic(stack, "invoice.created.dlq")
        assert len(cleared) == 34
        assert collections.Counter(rule_codes(stack, violations)) == expected
        assert len(dead) == 5
        assert {header(m, "dlq_agent") for m in dead} == {"validation"}
        assert {header(m, "dlq_topic") for m in dead} == {"invoice.created"}
        reasons = sorted(header(m, "dlq_error_message") for m in dead)
        for expected_reason, count in (("magic byte", 2), ("99999", 1), ("cannot decode", 1), ("over the", 1)):
            assert sum(expected_reason in reason for reason in reasons) == count, reasons

        def indexed() -> bool:
            response = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": "KSA", "limit": 100}, timeout=5)
            return response.status_code == 200 and len(response.json()["hits"]) == sum(expected.values())

        wait_for(indexed, 60, lambda: "the indexing agent to index every violation")
        result = CliRunner().invoke(
            main, ["search", "cleared", "--tenant", "acme", "--limit", "100", "-o", "json"], env=worker_env(stack)
        )
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.output)) == 30
        check_metrics(port)

        audited = [spec.name for spec in load_catalog(stack.catalog_path).topics if spec.audit]
        sources = sum(len(read_topic(stack, name)) for name in audited)
        wait_for(
            lambda: len(read_topic(stack, "audit.trail")) >= sources,
            60,
            lambda: f"one audit entry per audited record ({sources})",
        )
        assert len(read_topic(stack, "audit.trail")) == sources
        verified = CliRunner().invoke(
            main, ["audit", "verify", "--check-sources", "--output", "json"], env=worker_env(stack)
        )
        assert verified.exit_code == 0, verified.output
    finally:
        stop_worker(process)


def check_metrics(port: int) -> None:
    """Outcomes by agent, end-to-end latency and consumer lag on the worker's /metrics."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'streams_agent_events_total{agent="validation",outcome="cleared"} 34.0' in metrics
    assert re.search(r'streams_agent_end_to_end_seconds_count\{agent="validation"\} [1-9]', metrics)

    def lag_reported() -> bool:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        lag = r'streams_agent_consumer_lag_records\{agent="validation",partition="\d",topic="invoice.created"\} 0.0'
        return bool(re.search(lag, text))

    def lag_lines() -> str:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return "\n".join(line for line in text.splitlines() if "lag" in line)

    wait_for(lag_reported, 30, lambda: f"the worker to report invoice.created's consumer lag: {lag_lines()}")


def rule_codes(stack: Settings, messages: list[Any]) -> list[str]:
    with RegistryClient(stack.registry_url()) as client:
        decoder = EventDecoder(client)
        return [str(decoder.decode(m.value())[1]["rule_code"]) for m in messages]
