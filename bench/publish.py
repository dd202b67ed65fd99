"""bench/publish: our Publisher vs confluent-kafka's SerializingProducer+AvroSerializer vs raw bytes.

All three publish the same invoice.created events to fresh topics on the same broker, through the same
registry, with acks=all and idempotence. Run: `python bench/publish.py [--events N] [--profile]`
against the running local stack (`streams dev up`) or STREAMS_* addresses.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

from streams.catalog import load_catalog
from streams.publish import DURABILITY, THROUGHPUT, Publisher
from streams.samples import invoice
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "invoice.created.avsc"
PARTITIONS = 6


def make_topic(admin: AdminClient, registry: RegistryClient, prefix: str) -> str:
    """A fresh topic with the invoice schema registered under its subject (producers never auto-register)."""
    name = f"bench.{prefix}.u{uuid.uuid4().hex[:8]}"
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result()
    registry.register(f"{name}-value", SCHEMA.read_text())
    return name


def percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def run_ours(
    settings: Settings, catalog_path: Path, topic: str, events: list[dict[str, Any]]
) -> tuple[float, list[float]]:
    catalog = load_catalog(catalog_path)
    # The bench topic has a fresh name: give it the catalog's invoice.created spec under that name.
    spec = catalog.topic("invoice.created").model_copy(update={"name": topic})
    catalog = catalog.model_copy(update={"topics": (*catalog.topics, spec)})
    latencies: list[float] = []
    with Publisher(settings, catalog=catalog, source="bench") as publisher:
        publisher.publish(topic, events[0]).result()  # warm: schema lookup, metadata, producer id
        started = time.perf_counter()
        for event in events:
            sent = time.perf_counter()
            publisher.publish(topic, event).add_done_callback(
                lambda _, sent=sent: latencies.append(time.perf_counter() - sent)
            )
        publisher.flush()
        elapsed = time.perf_counter() - started
    return len(events) / elapsed, latencies


def run_peer(settings: Settings, topic: str, events: list[dict[str, Any]]) -> tuple[float, list[float]]:
    client = SchemaRegistryClient({"url": settings.registry_url()})
    serializer = AvroSerializer(client, SCHEMA.read_text(), conf={"auto.register.schemas": False,
                                                                   "use.latest.version": True})
    producer = SerializingProducer({
        **settings.kafka_config(settings.bootstrap_servers()), **THROUGHPUT, **DURABILITY,
        "key.serializer": StringSerializer(), "value.serializer": serializer,
    })
    latencies: list[float] = []
    producer.produce(topic, key=events[0]["invoice_id"], value=events[0])
    producer.flush()
    started = time.perf_counter()
    for event in events:
        sent = time.perf_counter()
        _produce_retrying(producer, lambda p=producer, e=event, s=sent: p.produce(
            topic, key=e["invoice_id"], value=e,
            on_delivery=lambda err, msg, s=s: latencies.append(time.perf_counter() - s)))
    producer.flush()
    elapsed = time.perf_counter() - started
    return len(events) / elapsed, latencies


def run_raw(settings: Settings, topic: str, payloads: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
            ) -> tuple[float, list[float]]:
    producer = Producer({**settings.kafka_config(settings.bootstrap_servers()), **THROUGHPUT, **DURABILITY})
    latencies: list[float] = []
    producer.produce(topic, value=payloads[0][1], key=payloads[0][0])
    producer.flush()
    started = time.perf_counter()
    for key, value, headers in payloads:
        sent = time.perf_counter()
        _produce_retrying(producer, lambda k=key, v=value, h=headers, s=sent: producer.produce(
            topic, value=v, key=k, headers=h,
            on_delivery=lambda err, msg, s=s: latencies.append(time.perf_counter() - s)))
    producer.flush()
    elapsed = time.perf_counter() - started
    return len(payloads) / elapsed, latencies


def _produce_retrying(producer: Producer, produce: Callable[[], None]) -> None:
    while True:
        try:
            produce()
            return
        except BufferError:
            producer.poll(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true", help="Also profile our path and print the top costs.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args()

    settings = Settings()
    catalog_path = ROOT / "topics.yaml"
    registry = RegistryClient(settings.registry_url())
    schema_id = registry.register("invoice.created-value", SCHEMA.read_text())
    admin = AdminClient(settings.kafka_config(settings.bootstrap_servers()))
    events = [invoice(i, lines=3) for i in range(args.events)]

    # The ceiling sends bytes our encoder made beforehand, with the same headers.
    with Publisher(settings, source="bench") as publisher:
        records = [publisher.encoder.encode("invoice.created", e) for e in events]
    payloads = [(r.key or b"", r.value, [(k, v) for k, v in r.headers if isinstance(v, bytes)]) for r in records]
    size = statistics.mean(len(r.value) for r in records)

    results = {}
    for name, run in (
        ("ours", lambda: run_ours(settings, catalog_path, make_topic(admin, registry, "ours"), events)),
        ("peer", lambda: run_peer(settings, make_topic(admin, registry, "peer"), events)),
        ("raw", lambda: run_raw(settings, make_topic(admin, registry, "raw"), payloads)),
    ):
        rate, latencies = run()
        p50, p99 = percentiles(latencies)
        results[name] = {"events_per_s": round(rate), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
        print(f"{name:5s} {rate:10,.0f} events/s   delivery p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    ours, peer, raw = (results[k]["events_per_s"] for k in ("ours", "peer", "raw"))
    print(f"ours/peer {ours / peer:.2f}x   ours/raw {ours / raw:.2f}x")
    conditions = {
        "events": args.events, "value_bytes_mean": round(size), "lines_per_invoice": 3, "partitions": PARTITIONS,
        "acks": "all", "idempotence": True, "linger_ms": THROUGHPUT["linger.ms"], "schema_id": schema_id,
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={__import__('os').cpu_count()}",
        "python": platform.python_version(),
    }
    print(json.dumps(conditions))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "conditions": conditions}, indent=2))

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_ours(settings, catalog_path, make_topic(admin, registry, "profile"), events[:20_000])
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
