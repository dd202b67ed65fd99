"""The validation agent: invoice.created -> invoice.cleared, or one compliance.violation per failed rule.

At least once with idempotent effects: outputs carry ids derived from the input's event id, and the
stateful rules (duplicate UUID, ICV, previous hash) live in changelog-backed tables that remember
which events they already applied, so a redelivered invoice gets the same verdict, not a new one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from streams.agents.continuity import ContinuityGuard
from streams.agents.zatca import (
    SellerChain,
    Violation,
    chain_violations,
    outcome_id,
    qr_payload,
    stateless_violations,
)
from streams.app import AgentContext, SourceRecord, UndecodableRecordError
from streams.observability import END_TO_END_SECONDS, EVENTS_TOTAL, PROCESSING_SECONDS, VIOLATIONS_TOTAL

if TYPE_CHECKING:
    from streams.publish import OutgoingRecord

log = structlog.get_logger("streams.agents.validation")

AGENT = "validation"
SOURCE = "invoice.created"
CLEARED = "invoice.cleared"
VIOLATIONS = "compliance.violation"


class ValidationAgent:
    """Judges each invoice; holds the table its stateful rules need (each write is one small value)."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        partitions = ctx.catalog.topic(SOURCE).partitions
        # One table, co-partitioned with invoice.created (keyed by tenant, i.e. the seller), holding
        # "seller:<tenant>" -> [last ICV, last hash] and "invoice:<uuid>" -> [first event id, ICV, hash
        # the seller had before it]. One table means one changelog partition per source partition, where
        # Kafka keeps the writes of one event in order: if the seller's write survived a crash, so did
        # the invoice's, which was written first.
        self.state = ctx.app.Table("validation-state", partitions=partitions)
        self.source = ctx.topic(SOURCE)
        self.cleared = ctx.topic(CLEARED)
        self.violations = ctx.topic(VIOLATIONS)
        kafka = ctx.settings.kafka_config(ctx.settings.bootstrap_servers())
        self.guard = ContinuityGuard(kafka, group=ctx.app.conf.id, topics=(SOURCE,),
                                     replication=ctx.catalog.topic(SOURCE).replication_factor)
        ctx.app.agent(self.source, name=AGENT)(self.run)
        ctx.app.timer(interval=1.0)(self.guard.record_commits_async)
        self.guard.watch(ctx.app)

    async def run(self, stream: Any) -> None:
        await self.guard.start_async()
        async for event in stream.events():
            message = event.message
            for skipped in await self.guard.hole_before(SOURCE, message.partition, message.offset):
                await self.process(SourceRecord.from_message(skipped))
            await self.process(SourceRecord.from_event(event))
            self.guard.saw(SOURCE, message.partition, message.offset)

    async def process(self, source: SourceRecord) -> None:
        if self.guard.already_committed(SOURCE, source.partition, source.offset):
            # A re-drive (the group was reset): outputs and state of this record are durable already.
            EVENTS_TOTAL.labels(agent=AGENT, outcome="already-processed").inc()
            return
        started = time.perf_counter()
        outcome = await self.handle(source)
        EVENTS_TOTAL.labels(agent=AGENT, outcome=outcome).inc()
        PROCESSING_SECONDS.labels(agent=AGENT).observe(time.perf_counter() - started)
        END_TO_END_SECONDS.labels(agent=AGENT).observe(max(0.0, time.time() - source.timestamp_ms / 1000))

    async def handle(self, source: SourceRecord) -> str:
        """Process one record; returns the outcome label (cleared, violation, dead-letter)."""
        try:
            _, invoice = self.ctx.decoder.decode(source.value)
        except UndecodableRecordError as exc:
            await self.ctx.dead_letter(source, AGENT, exc)
            return "dead-letter"
        error: Exception | None = None
        for attempt in range(1, self.ctx.retries + 1):
            try:
                outputs = self.judge(source, invoice)
                break
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # a shape the rules cannot read
                error = exc
                log.warning("handler failed", agent=AGENT, attempt=attempt, offset=source.offset, error=str(exc))
        else:
            assert error is not None  # noqa: S101 - the loop ran and failed every time
            await self.ctx.dead_letter(source, AGENT, error, attempts=self.ctx.retries)
            return "dead-letter"
        for record in outputs:
            target = self.cleared if record.topic == CLEARED else self.violations
            await target.send(key=record.key, value=record.value, headers=record.headers)
        return "cleared" if outputs and outputs[0].topic == CLEARED else "violation"

    def judge(self, source: SourceRecord, invoice: dict[str, Any]) -> list[OutgoingRecord]:
        """The verdict as ready-to-send records; updates the tables (idempotently per event id)."""
        event_id = source.event_id
        found = stateless_violations(invoice, now=datetime.now(UTC))
        invoice_id = invoice["invoice_id"]
        seen = self.state.get(f"invoice:{invoice_id}")
        if seen is not None and seen[0] != event_id:
            found.append(Violation("KSA-DUPLICATE-UUID", f"invoice UUID {invoice_id} was already submitted "
                                                         f"(event {seen[0]})", "invoice_id"))
            digest = ""
        else:
            seller_key = f"seller:{invoice['tenant_id']}"
            chain = SellerChain.from_json(self.state.get(seller_key))
            before = (int(seen[1]), str(seen[2])) if seen is not None else chain.state
            chain_found, digest = chain_violations(invoice, before)
            found.extend(chain_found)
            if seen is None:
                self.state[f"invoice:{invoice_id}"] = [event_id, *before]
            if chain.state == before:  # a first delivery, or a redelivery whose chain write was lost
                chain.advance(invoice["icv"], digest)
                self.state[seller_key] = chain.to_json()
        trace = source.header("ce_traceparent")
        if not found:
            cleared = {
                "invoice_id": invoice_id,
                "tenant_id": invoice["tenant_id"],
                "invoice_number": invoice["invoice_number"],
                "seller_vat_number": invoice["seller"]["vat_number"],
                "invoice_hash": digest,
                "qr_payload": qr_payload(invoice),
                "tax_inclusive_total": invoice["tax_inclusive_total"],
                "vat_total": invoice["vat_total"],
                "currency": invoice["currency"],
                "cleared_at": datetime.now(UTC),
                "source_event_id": event_id,
            }
            return [self.ctx.encoder.encode(CLEARED, cleared, event_id=outcome_id(event_id, "cleared"),
                                            traceparent=trace)]
        records = []
        for violation in found:
            VIOLATIONS_TOTAL.labels(rule=violation.rule_code).inc()
            violation_id = outcome_id(event_id, f"{violation.rule_code}:{violation.field_path}")
            payload = {
                "violation_id": violation_id,
                "invoice_id": invoice_id,
                "tenant_id": invoice["tenant_id"],
                "rule_code": violation.rule_code,
                "severity": violation.severity,
                "message": violation.message,
                "field_path": violation.field_path,
                "source_event": {"event_id": event_id, "topic": source.topic, "partition": source.partition,
                                 "offset": source.offset},
                "detected_at": datetime.now(UTC),
            }
            records.append(self.ctx.encoder.encode(VIOLATIONS, payload, event_id=violation_id, traceparent=trace))
        return records
