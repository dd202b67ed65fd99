"""The console's audit pages: the chain's status and verification, and one invoice's story across topics.

Reuses the audit agent's chain reader and verifier; the story reads each topic the pipeline writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.console.kafka_views import headers, text
from streams.kafka_util import read_all
from streams.replay.jsonl import json_safe

if TYPE_CHECKING:
    from confluent_kafka import Message

    from streams.records import EventDecoder
    from streams.schemas.registry_client import RegistryClient
    from streams.settings import KafkaConfig

CHAIN_TOPIC = "audit.trail"


def verify_chain(kafka: KafkaConfig, registry: RegistryClient, chain_topic: str = CHAIN_TOPIC) -> dict[str, Any]:
    """`streams audit verify` on the chain topic: the report as JSON plus the last entry and when it ran."""
    from streams.agents.audit_chain import ChainDecoder, ChainEntry, read_chain  # noqa: PLC0415
    from streams.agents.audit_verify import verify_entries  # noqa: PLC0415

    entries = [entry for _, entry in read_chain(kafka, ChainDecoder(registry), chain_topic)]
    report = verify_entries(entries, chain_topic).to_json()
    last = next((e for e in reversed(entries) if isinstance(e, ChainEntry)), None)
    report["last_entry"] = None if last is None else {**last.body(), "entry_hash": last.entry_hash}
    report["verified_at"] = time.time()
    return report


def _payloads(kafka: KafkaConfig, decoder: EventDecoder, topic: str) -> list[tuple[Message, dict[str, Any]]]:
    from streams.records import UndecodableRecordError  # noqa: PLC0415

    found = []
    for message in read_all(kafka, topic):
        try:
            found.append((message, json_safe(decoder.decode(message.value())[1])))
        except UndecodableRecordError:
            continue  # an undecodable record belongs to no invoice's story; the DLQ page shows those
    return found


def _step(kind: str, message: Message, payload: dict[str, Any], summary: str) -> dict[str, Any]:
    event_id = next((text(v) for k, v in headers(message) if k == "ce_id"), "")
    return {
        "kind": kind,
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": message.timestamp()[1],
        "event_id": event_id,
        "summary": summary,
        "payload": payload,
    }


def invoice_story(kafka: KafkaConfig, decoder: EventDecoder, invoice_id: str, data_dir: Path) -> list[dict[str, Any]]:
    """Everything that happened to `invoice_id`, in pipeline order: published, judged, audited, bridged."""
    steps: list[dict[str, Any]] = []
    for message, payload in _payloads(kafka, decoder, "invoice.created"):
        if payload.get("invoice_id") == invoice_id:
            steps.append(
                _step(
                    "published",
                    message,
                    payload,
                    f"invoice {payload.get('invoice_number')} of {payload.get('tenant_id')}",
                )
            )
    for message, payload in _payloads(kafka, decoder, "invoice.cleared"):
        if payload.get("invoice_id") == invoice_id:
            steps.append(_step("cleared", message, payload, f"cleared, hash {str(payload.get('invoice_hash'))[:16]}…"))
    for message, payload in _payloads(kafka, decoder, "compliance.violation"):
        if payload.get("invoice_id") == invoice_id:
            steps.append(
                _step(
                    "violation",
                    message,
                    payload,
                    f"{payload.get('rule_code')} ({payload.get('severity')}): {payload.get('message')}",
                )
            )
    sources = {(s["topic"], s["partition"], s["offset"]) for s in steps}
    event_ids = {s["event_id"] for s in steps if s["event_id"]}
    for message, payload in _payloads(kafka, decoder, CHAIN_TOPIC):
        source = payload.get("source") or {}
        if (source.get("topic"), source.get("partition"), source.get("offset")) in sources:
            steps.append(
                _step(
                    "audited",
                    message,
                    payload,
                    f"chain entry {payload.get('sequence')} for {source.get('topic')}"
                    f"[{source.get('partition')}]@{source.get('offset')}",
                )
            )
    for message, payload in _payloads(kafka, decoder, "task.failed"):
        if payload.get("event_id") in event_ids:
            what = f"{payload.get('task_name')}: {payload.get('error_class')}: {payload.get('error_message')}"
            steps.append(_step("task failed", message, payload, what))
    steps.extend(_bridged(data_dir, invoice_id, steps))
    return steps


def _bridged(data_dir: Path, invoice_id: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference tasks' outputs (PDF, compliance notification) found on this host's data dir."""
    from streams.bridge.reference_tasks import invoice_pdf_path, notification_path  # noqa: PLC0415

    out = []
    for step in steps:
        payload = step["payload"]
        if step["kind"] == "cleared":
            path = invoice_pdf_path(data_dir, str(payload.get("tenant_id")), invoice_id)
            what = "invoice PDF"
        elif step["kind"] == "violation":
            path = notification_path(data_dir, str(payload.get("violation_id")))
            what = "compliance notification"
        else:
            continue
        if path.exists():
            out.append(
                {
                    "kind": "bridged",
                    "topic": None,
                    "partition": None,
                    "offset": None,
                    "timestamp": int(path.stat().st_mtime * 1000),
                    "event_id": step["event_id"],
                    "summary": f"{what} written: {path.name}",
                    "payload": {"file": str(path)},
                }
            )
    return out
