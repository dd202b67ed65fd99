"""bench/replay: evidence export (hash per record, Merkle root, Avro container, manifest) vs a raw consume loop.

Same topic, same broker, same run, alternating; `python bench/replay.py [--events N]` on `streams dev up`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.catalog import load_catalog
from streams.demo.samples import invoice
from streams.publish import DURABILITY, EventEncoder
from streams.replay.encoding import sha256_accelerated
from streams.replay.evidence import EvidenceWriter
from streams.replay.filters import PayloadDecoder, RecordFilter
from streams.replay.parallel import PartsJob, export_in_parts, parts_for
from streams.replay.reader import reader_consumer
from streams.replay.runner import run_replay
from streams.replay.selection import ReplayQuery, resolve_plan
from streams.replay.verify import verify_bundle
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "invoice.created.avsc"
DISTINCT = 2000  # distinct invoices; every event still gets its own key and ce_id


def fill_topic(settings: Settings, registry: RegistryClient, events: int, partitions: int) -> tuple[str, float]:
    """A fresh topic holding `events` invoice.created events (pre-encoded, sent by a raw producer)."""
    topic = f"bench.replay.u{uuid.uuid4().hex[:8]}"
    config = settings.kafka_config(settings.bootstrap_servers())
    admin = AdminClient(dict(config))
    admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result()
    registry.register(f"{topic}-value", SCHEMA.read_text())
    catalog = load_catalog(ROOT / "topics.yaml")
    spec = catalog.topic("invoice.created").model_copy(update={"name": topic})
    catalog = catalog.model_copy(update={"topics": (*catalog.topics, spec)})
    encoder = EventEncoder(catalog, registry, source="bench")
    records = [encoder.encode(topic, invoice(i, lines=3)) for i in range(DISTINCT)]
    producer = Producer(
        {
            **config,
            **DURABILITY,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    for i in range(events):
        record = records[i % DISTINCT]
        headers = [(k, f"{uuid.UUID(int=i)}".encode() if k == "ce_id" else v) for k, v in record.headers]
        while True:
            try:
                producer.produce(topic, value=record.value, key=f"inv-{i:09d}".encode(), headers=[*headers])
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(300):
        raise SystemExit(f"could not fill {topic}: events still undelivered after 300s")
    return topic, statistics.mean(len(r.value) for r in records)


def run_raw(
    settings: Settings,
    topic: str,
    events: int,
    partitions: int,
    *,
    every_field: bool = False,
    consumer_config: dict[str, Any] | None = None,
) -> float:
    """Seconds for a plain confluent-kafka consume loop to read every record (value bytes counted).

    With `every_field`, the loop also takes key, timestamp and headers from each record, as any export must.
    `consumer_config` adds to the consumer's settings (the peer's own tuning, e.g. the engine's fetch backoff).
    """
    consumer = Consumer(
        {
            **settings.kafka_config(settings.bootstrap_servers()),
            "group.id": "bench-raw",
            "enable.auto.commit": False,
            **(consumer_config or {}),
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = size = 0
    started = time.perf_counter()
    while seen < events:
        for message in consumer.consume(1000, 1.0):
            if message.error() is None:
                seen += 1
                size += len(message.value() or b"")
                if every_field:
                    message.key()
                    message.timestamp()
                    message.headers()
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def run_export(
    settings: Settings, registry: RegistryClient, topic: str, directory: Path, jobs: int | None
) -> tuple[float, str, int]:
    """Seconds for plan + export + manifest (the `streams replay --export [--jobs N]` path, without the CLI),
    the Merkle root, and the processes it ran in."""
    config = settings.kafka_config(settings.bootstrap_servers())
    started = time.perf_counter()
    consumer = reader_consumer(config)
    plan = resolve_plan(consumer, ReplayQuery(topic))
    decoder = PayloadDecoder(registry)
    writer = EvidenceWriter(directory, plan, "bench", decoder)
    parts = parts_for(plan, "avro", jobs)
    if parts > 1:
        progress = export_in_parts(writer, PartsJob(config, settings.registry_url(), "bench", "null", None), parts)
    else:
        progress = run_replay(consumer, plan, writer, RecordFilter(plan.query, None))
    manifest = writer.finish(progress)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed, manifest["merkle_root"], parts


def time_verify(bundle: Path) -> tuple[int, float, bool]:
    """The bundle's size in bytes, the seconds `streams evidence verify` takes on it, and its verdict."""
    started = time.perf_counter()
    report = verify_bundle(bundle)
    return sum(p.stat().st_size for p in bundle.iterdir()), time.perf_counter() - started, report.ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Addresses: the local stack, or STREAMS_* variables. Results go to bench/results/replay.json.",
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating raw/export runs; medians are reported.")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "replay.json")
    args = parser.parse_args()

    settings = Settings()
    registry = RegistryClient(settings.registry_url())
    load = [os.getloadavg()]
    fill_started = time.perf_counter()
    topic, value_size = fill_topic(settings, registry, args.events, args.partitions)
    print(
        f"filled {topic}: {args.events} events, {value_size:.0f} B values, {args.partitions} partitions "
        f"in {time.perf_counter() - fill_started:.1f}s"
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    raw_times: list[float] = []
    fields_times: list[float] = []
    export_times: list[float] = []  # the default: one process per CPU for an export this large
    single_times: list[float] = []  # --jobs 1
    roots: set[str] = set()
    parts = 1
    try:
        for round_ in range(args.rounds):
            raw_times.append(run_raw(settings, topic, args.events, args.partitions))
            fields_times.append(run_raw(settings, topic, args.events, args.partitions, every_field=True))
            load.append(os.getloadavg())
            seconds, root, parts = run_export(settings, registry, topic, scratch / f"bundle-{round_}", None)
            export_times.append(seconds)
            roots.add(root)
            single, root, _ = run_export(settings, registry, topic, scratch / f"single-{round_}", 1)
            single_times.append(single)
            roots.add(root)
            shutil.rmtree(scratch / f"single-{round_}")
            if round_:
                shutil.rmtree(scratch / f"bundle-{round_}")  # bundle-0 is kept for the verify timing
            load.append(os.getloadavg())
            print(
                f"round {round_ + 1}: raw {args.events / raw_times[-1]:,.0f}/s, raw reading every field "
                f"{args.events / fields_times[-1]:,.0f}/s, export {args.events / seconds:,.0f}/s "
                f"(--jobs 1: {args.events / single:,.0f}/s) (load {load[-1][0]:.2f})"
            )
        bundle_bytes, verify_seconds, verified = time_verify(scratch / "bundle-0")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        registry.close()
    raw_rate = args.events / statistics.median(raw_times)
    fields_rate = args.events / statistics.median(fields_times)
    export_rate = args.events / statistics.median(export_times)
    single_rate = args.events / statistics.median(single_times)
    result: dict[str, Any] = {
        "benchmark": "replay export (SHA-256 per record, RFC 6962 Merkle root, Avro container, manifest) vs raw "
        "confluent-kafka consume loop",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "value_bytes_mean": round(value_size),
        "headers_per_event": 8,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "raw_events_per_s": round(raw_rate),
        "raw_every_field_events_per_s": round(fields_rate),
        "export_events_per_s": round(export_rate),
        "export_vs_raw": round(export_rate / raw_rate, 3),
        "export_vs_raw_every_field": round(export_rate / fields_rate, 3),
        "export_processes": parts,
        "export_single_process_events_per_s": round(single_rate),
        "export_single_process_vs_raw": round(single_rate / raw_rate, 3),
        "export_single_process_seconds": [round(t, 2) for t in single_times],
        "export_vs_raw_per_round": [round(r / e, 3) for r, e in zip(raw_times, export_times, strict=True)],
        "raw_seconds": [round(t, 2) for t in raw_times],
        "raw_every_field_seconds": [round(t, 2) for t in fields_times],
        "export_seconds": [round(t, 2) for t in export_times],
        "export_1m_seconds_extrapolated": round(1_000_000 / export_rate, 1) if args.events < 1_000_000 else None,
        "export_seconds_median": round(statistics.median(export_times), 2),
        "bundle_bytes": bundle_bytes,
        "verify_seconds": round(verify_seconds, 2),
        "verify_ok": verified,
        "deterministic_merkle_root": len(roots) == 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_1m": [round(sample[0], 2) for sample in load],
        "load_average_1m_5m_15m_at_start_and_end": [[round(x, 2) for x in load[0]], [round(x, 2) for x in load[-1]]],
        "native_sha256_accelerated": sha256_accelerated(),
        "note": "shared 2-core machine: other engineers' test runs load it, so rates are noisy; compare the "
        "ratio within one run",
    }
    print(json.dumps(result, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
