"""The validation agent: invoice.created -> invoice.cleared, or one compliance.violation per failed rule.

An App agent in the low-level batch form (docs/decisions/0018), on the one runtime (0016): each batch's outcomes,
dead letters, state writes and source offsets commit together, so an invoice is judged exactly once in
effect across kill -9 and rebalances. The stateful rules (duplicate UUID, ICV, previous hash) read the
source partition's state (partitioned like invoice.created, by seller). Outputs carry ids derived from
the input's event id, and an invoice remembers the chain state it was judged on, so a re-published event
(same id) gets the same verdict, not a duplicate-UUID violation.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from streams._avro_native import InvoiceJudge
from streams.agents.rules import RuleTable, default_rules, stateless_violations
from streams.agents.zatca import FIRST_PIH, SellerChain, chain_violations, outcome_id, qr_payload
from streams.errors import PublishError, StreamsError
from streams.observability import AgentMetrics
from streams.publish import TRACEPARENT, EventEncoder
from streams.records import EventDecoder, SourceRecord, UndecodableRecordError, dead_letter
from streams.runtime.app import App
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from confluent_kafka import Message

    from streams.catalog import Catalog
    from streams.publish import Built
    from streams.runtime.state import Output, PartitionState
    from streams.settings import Settings

log = structlog.get_logger("streams.agents.validation")

AGENT = "validation"
SOURCE = "invoice.created"
CLEARED = "invoice.cleared"
VIOLATIONS = "compliance.violation"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class ValidationAgent:
    """Judges each invoice (a BatchAgent for the engine); the partition's state holds "seller:<tenant>" ->
    (last ICV, last hash) and "invoice:<uuid>" -> (first event id, ICV, hash the seller had before it)."""

    name = AGENT

    def __init__(
        self,
        catalog: Catalog,
        decoder: EventDecoder,
        encoder: EventEncoder,
        *,
        retries: int = 3,
        rules: RuleTable | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.catalog, self.decoder, self.encoder, self.retries = catalog, decoder, encoder, retries
        self.rules = rules or default_rules()
        self.metrics = metrics or AgentMetrics()
        self._processing = self.metrics.processing.labels(agent=AGENT)
        self._end_to_end = self.metrics.end_to_end.labels(agent=AGENT)
        # Clean invoices (nearly all) are judged natively; anything else, or any doubt, takes handle_one. The
        # judge reads the same rule table and refuses (ValueError) one with a predicate it does not implement.
        self._judge = InvoiceJudge(encoder.topic(CLEARED).writer, FIRST_PIH, decoder.max_record_bytes, self.rules.text)

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        outcomes: Counter[str] = Counter()
        now = datetime.now(UTC)
        now_micros = (now - EPOCH) // MICROSECOND
        started = time.perf_counter()
        try_clear, dirty, send = self._judge.try_clear, state.dirty, out.send
        cleared = 0
        for message in records:
            try:
                built = try_clear(message, state, dirty, now, now_micros)
                if type(built) is int and self._learn(built):
                    built = try_clear(message, state, dirty, now, now_micros)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                # A bug in the fast path (a Rust panic is a BaseException) must neither wedge the partition nor
                # kill the engine's thread: the Python path judges the record.
                log.exception("fast path failed", agent=AGENT, partition=message.partition(), offset=message.offset())
                built = None
            if type(built) is tuple:  # the native fast path judged a clean invoice (and updated the state)
                send(CLEARED, built[0], built[1], built[2])
                cleared += 1
            else:
                outcomes[self.handle_one(SourceRecord.from_message(message), state, out, now)] += 1
        outcomes["cleared"] += cleared
        done = time.time()
        observe = self._end_to_end.observe
        for message in records:
            observe(max(0.0, done - message.timestamp()[1] / 1000))
        self._processing.observe((time.perf_counter() - started) / len(records))  # per event, as a batch mean
        for outcome, count in outcomes.items():
            if count:
                self.metrics.events.labels(agent=AGENT, outcome=outcome).inc(count)

    def _learn(self, schema_id: int) -> bool:
        """Show the fast path the writer schema `schema_id`; False if the registry does not know it (the
        Python path then dead-letters the record, naming the id)."""
        try:
            schema = self.decoder.registry.schema_by_id(schema_id)
        except StreamsError:
            return False
        self._judge.add_schema(schema_id, schema)
        return True

    def handle_one(self, source: SourceRecord, state: PartitionState, out: Output, now: datetime) -> str:
        """Process one record; returns the outcome label (cleared, violation, dead-letter)."""
        try:
            _, invoice, canonical = self.decoder.decode_canonical(source.value)
        except UndecodableRecordError as exc:
            self._park(source, exc, 1, out)
            return "dead-letter"
        error: Exception | None = None
        for attempt in range(1, self.retries + 1):
            try:
                outputs = self.judge(source, invoice, state, now, canonical)
                break
            except (KeyError, TypeError, ValueError, ArithmeticError, PublishError) as exc:
                # a shape the rules cannot read, or an output this record cannot make (a tenant id the envelope
                # refuses): retried, then dead-lettered; escaping, it would fail the batch again and again
                error = exc
                log.warning("handler failed", agent=AGENT, attempt=attempt, offset=source.offset, error=str(exc))
        else:
            assert error is not None  # noqa: S101 - the loop ran and failed every time
            self._park(source, error, self.retries, out)
            return "dead-letter"
        for topic, (key, value, headers, _) in outputs:
            out.send(topic, key, value, headers)
        return "cleared" if outputs and outputs[0][0] == CLEARED else "violation"

    def _park(self, source: SourceRecord, error: BaseException, attempts: int, out: Output) -> None:
        target, headers = dead_letter(self.catalog, source, AGENT, error, attempts, self.metrics)
        out.send(target, source.key, source.value, headers)

    def judge(
        self,
        source: SourceRecord,
        invoice: dict[str, Any],
        state: PartitionState,
        now: datetime,
        canonical: bytes | None = None,
    ) -> list[tuple[str, Built]]:
        """The verdict as ready-to-send (topic, (key, value, headers, event id)); updates `state` once per event."""
        event_id = source.event_id
        found = stateless_violations(invoice, now=now, rules=self.rules)
        invoice_id = invoice["invoice_id"]
        seen = state.get(f"invoice:{invoice_id}")
        if seen is not None and seen[0] != event_id:
            duplicate = self.rules.chain("first_submission")
            if duplicate is not None:
                found.append(duplicate.violation(value=invoice_id, expected=seen[0]))
            digest = ""
        else:
            seller_key = f"seller:{invoice['tenant_id']}"
            chain = SellerChain.from_json(state.get(seller_key))
            before = (int(seen[1]), str(seen[2])) if seen is not None else chain.state
            chain_found, digest = chain_violations(invoice, before, canonical, self.rules)
            found.extend(chain_found)
            if seen is None:
                state[f"invoice:{invoice_id}"] = (event_id, *before)
            if chain.state == before:  # a first delivery, not a re-published event judged before
                chain.advance(invoice["icv"], digest)
                state[seller_key] = chain.to_json()
        trace = source.header("ce_traceparent")
        if trace is not None and not TRACEPARENT.match(trace):
            trace = None  # W3C trace context: a malformed traceparent is dropped and the output starts a new trace
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
                "cleared_at": now,
                "source_event_id": event_id,
            }
            return [
                (
                    CLEARED,
                    self.encoder.build(CLEARED, cleared, event_id=outcome_id(event_id, "cleared"), traceparent=trace),
                )
            ]
        records = []
        for violation in found:
            self.metrics.violations.labels(rule=violation.rule_code).inc()
            violation_id = outcome_id(event_id, f"{violation.rule_code}:{violation.field_path}")
            payload = {
                "violation_id": violation_id,
                "invoice_id": invoice_id,
                "tenant_id": invoice["tenant_id"],
                "rule_code": violation.rule_code,
                "severity": violation.severity,
                "message": violation.message,
                "field_path": violation.field_path,
                "source_event": {
                    "event_id": event_id,
                    "topic": source.topic,
                    "partition": source.partition,
                    "offset": source.offset,
                },
                "detected_at": now,
            }
            records.append(
                (VIOLATIONS, self.encoder.build(VIOLATIONS, payload, event_id=violation_id, traceparent=trace))
            )
        return records


def validation_app(settings: Settings, catalog: Catalog, app_id: str, metrics: AgentMetrics | None = None) -> App:
    """The validation agent as an App: group `<app id>-validation`, its state in the tables `seller` and
    `invoice` (written natively by the fast path, and by the Python rules); it counts in `metrics`."""
    app = App(app_id, settings=settings, catalog=catalog, metrics=metrics)
    app.table("seller")  # "seller:<tenant>" -> (last ICV, last hash)
    app.table("invoice")  # "invoice:<uuid>" -> (first event id, ICV, hash the seller had before it)
    registry = RegistryClient(settings.registry_url())
    agent = ValidationAgent(
        catalog,
        EventDecoder(registry, max_record_bytes=settings.agent_max_record_bytes, hold_when_registry_down=True),
        EventEncoder(catalog, registry, source=app_id),
        metrics=app.metrics,
    )
    app.agent(SOURCE, name=AGENT, batch=True)(agent.handle)
    return app
