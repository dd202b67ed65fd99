"""bench/publish: our Publisher vs confluent-kafka's SerializingProducer+AvroSerializer vs raw bytes.

All three publish the same invoice.created events to fresh topics on the same broker, through the same
registry, with acks=all and idempotence. Run: `python bench/publish.py [--events N] [--profile]`
against the running local stack (`streams dev up`) or STREAMS_* addresses.

Every path serves a delivery report for every event through one Python callback (ours: the publisher's
own counter behind `publish_nowait`; peer and raw: a counting `on_delivery`), and times delivery
latency on one event in SAMPLE_EVERY. `ours-futures` is `Publisher.publish` with a future per event.
Each row also gives this process's CPU time per event (main thread plus librdkafka's threads) and
the load average, since the machine is shared and wall-clock rates move with it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.serialization import StringSerializer

# The peer's schema registry client imports authlib, whose deprecation notice forces itself on
# (simplefilter "always"), past PYTHONWARNINGS; recorded here, it stays out of the bench's output.
with warnings.catch_warnings(record=True):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer

from streams.catalog import load_catalog
from streams.demo.samples import invoice
from streams.publish import DURABILITY, THROUGHPUT, Publisher
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "invoice.created.avsc"
PARTITIONS = 6
SAMPLE_EVERY = 100  # delivery latency is timed on one event in this many


class Run(NamedTuple):
    rate: float  # events/s, first produce to last acknowledgement
    latencies: list[float]  # seconds, sampled events
    cpu_us: float  # this process's CPU time per event, all threads (ours plus librdkafka's)
    main_us: float  # the publishing thread's CPU time per event


class Meter:
    """Times a run in wall-clock and process CPU time."""

    def __enter__(self) -> Meter:
        self.started, self.cpu, self.main = time.perf_counter(), time.process_time(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.started
        self.cpu_used = time.process_time() - self.cpu
        self.main_used = time.thread_time() - self.main

    def run(self, events: int, latencies: list[float]) -> Run:
        return Run(events / self.elapsed, latencies, self.cpu_used / events * 1e6, self.main_used / events * 1e6)


class Counter:
    """The peer's and the ceiling's delivery report: count, keep errors (what ours does per event)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.errors: list[Any] = []

    def __call__(self, error: Any, message: Any) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.errors.append((error, message.key()))


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


def bench_catalog(catalog_path: Path, topic: str) -> Any:
    catalog = load_catalog(catalog_path)
    # The bench topic has a fresh name: give it the catalog's invoice.created spec under that name.
    spec = catalog.topic("invoice.created").model_copy(update={"name": topic})
    return catalog.model_copy(update={"topics": (*catalog.topics, spec)})


def run_ours(settings: Settings, catalog_path: Path, topic: str, events: list[dict[str, Any]]) -> Run:
    """Fire-and-forget: `publish_nowait`, a future only on the sampled events."""
    latencies: list[float] = []
    with Publisher(settings, catalog=bench_catalog(catalog_path, topic), source="bench") as publisher:
        publisher.publish(topic, events[0]).result()  # warm: schema lookup, metadata, producer id
        publish_nowait = publisher.publish_nowait
        with Meter() as meter:
            for i, event in enumerate(events):
                if i % SAMPLE_EVERY:
                    publish_nowait(topic, event)
                else:
                    publisher.publish(topic, event).add_done_callback(_timer(latencies))
            publisher.flush()
    return meter.run(len(events), latencies)


def run_ours_futures(settings: Settings, catalog_path: Path, topic: str, events: list[dict[str, Any]]) -> Run:
    """`publish` with a DeliveryFuture per event, latency timed on every event."""
    latencies: list[float] = []
    with Publisher(settings, catalog=bench_catalog(catalog_path, topic), source="bench") as publisher:
        publisher.publish(topic, events[0]).result()
        with Meter() as meter:
            for event in events:
                publisher.publish(topic, event).add_done_callback(_timer(latencies))
            publisher.flush()
    return meter.run(len(events), latencies)


def run_peer(settings: Settings, topic: str, events: list[dict[str, Any]]) -> Run:
    client = SchemaRegistryClient({"url": settings.registry_url()})
    serializer = AvroSerializer(
        client, SCHEMA.read_text(), conf={"auto.register.schemas": False, "use.latest.version": True}
    )
    counter = Counter()
    producer = SerializingProducer(
        {
            **settings.kafka_config(settings.bootstrap_servers()),
            **THROUGHPUT,
            **DURABILITY,
            "key.serializer": StringSerializer(),
            "value.serializer": serializer,
            "on_delivery": counter,
        }
    )
    latencies: list[float] = []
    producer.produce(topic, key=events[0]["invoice_id"], value=events[0])
    producer.flush()
    with Meter() as meter:
        for i, event in enumerate(events):
            on_delivery = None if i % SAMPLE_EVERY else _timer(latencies)
            while True:
                try:
                    if on_delivery is None:
                        producer.produce(topic, key=event["invoice_id"], value=event)
                    else:
                        producer.produce(topic, key=event["invoice_id"], value=event, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush()
    assert not counter.errors, counter.errors[:3]  # noqa: S101 - a bench run with failures is void
    return meter.run(len(events), latencies)


def run_raw(settings: Settings, topic: str, payloads: list[tuple[bytes, bytes, Any]]) -> Run:
    counter = Counter()
    producer = Producer(
        {**settings.kafka_config(settings.bootstrap_servers()), **THROUGHPUT, **DURABILITY, "on_delivery": counter}
    )
    latencies: list[float] = []
    producer.produce(topic, value=payloads[0][1], key=payloads[0][0])
    producer.flush()
    produce = producer.produce
    with Meter() as meter:
        for i, (key, value, headers) in enumerate(payloads):
            on_delivery = None if i % SAMPLE_EVERY else _timer(latencies)
            while True:
                try:
                    if on_delivery is None:
                        produce(topic, value, key, headers=headers)
                    else:
                        produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush()
    assert not counter.errors, counter.errors[:3]  # noqa: S101 - a bench run with failures is void
    return meter.run(len(payloads), latencies)


def encode_cost(publisher: Publisher, events: list[dict[str, Any]]) -> dict[str, float]:
    """CPU microseconds per event of the encode path alone (no Kafka): native encoder, whole build."""
    codec = publisher.encoder.topic("invoice.created").codec
    native, header = codec.native_encoder, codec.wire_header
    build = publisher.encoder.build
    costs: dict[str, float] = {}
    for name, step in (
        ("native_encoder_us", lambda e: native.encode_into(e, header)),
        ("event_build_us", lambda e: build("invoice.created", e)),
    ):
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for event in events:
                step(event)
            best = min(best, time.process_time() - started)
        costs[name] = round(best / len(events) * 1e6, 2)
    return costs


def _timer(latencies: list[float]) -> Callable[..., None]:
    """A delivery callback that records the time from now to the acknowledgement."""
    sent = time.perf_counter()

    def done(*_: object) -> None:
        latencies.append(time.perf_counter() - sent)

    return done


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
        encode = encode_cost(publisher, events[:20_000])
    payloads = [(r.key or b"", r.value, r.headers) for r in records]
    size = statistics.mean(len(r.value) for r in records)
    print(
        f"encode alone (CPU, no Kafka): native encoder {encode['native_encoder_us']} us/event, "
        f"whole event (value, key, id, headers) {encode['event_build_us']} us/event"
    )

    results: dict[str, dict[str, Any]] = {}
    runs: list[tuple[str, Callable[[], Run]]] = [
        ("ours", lambda: run_ours(settings, catalog_path, make_topic(admin, registry, "ours"), events)),
        ("peer", lambda: run_peer(settings, make_topic(admin, registry, "peer"), events)),
        ("raw", lambda: run_raw(settings, make_topic(admin, registry, "raw"), payloads)),
        ("ours-futures", lambda: run_ours_futures(settings, catalog_path, make_topic(admin, registry, "fut"), events)),
    ]
    for name, run in runs:
        load_before = os.getloadavg()[0]
        rate, latencies, cpu_us, main_us = run()
        load = (round(load_before, 2), round(os.getloadavg()[0], 2))
        p50, p99 = percentiles(latencies)
        results[name] = {
            "events_per_s": round(rate),
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "cpu_us_per_event": round(cpu_us, 1),
            "main_thread_cpu_us_per_event": round(main_us, 1),
            "load_1m_before_after": load,
        }
        print(
            f"{name:12s} {rate:10,.0f} events/s   delivery p50 {p50:7.2f} ms  p99 {p99:7.2f} ms   "
            f"CPU {cpu_us:5.1f} us/event (main thread {main_us:5.1f})   load {load[0]:.2f}->{load[1]:.2f}"
        )
    ours, peer, raw = (results[k]["events_per_s"] for k in ("ours", "peer", "raw"))
    print(f"ours/peer {ours / peer:.2f}x   ours/raw {ours / raw:.2f}x")
    conditions = {
        "events": args.events,
        "value_bytes_mean": round(size),
        "lines_per_invoice": 3,
        "partitions": PARTITIONS,
        "acks": "all",
        "idempotence": True,
        "linger_ms": THROUGHPUT["linger.ms"],
        "schema_id": schema_id,
        "latency_sampled_every": SAMPLE_EVERY,
        "encode_cpu": encode,
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}",
        "python": platform.python_version(),
        "uptime": Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None,
    }
    print(json.dumps(conditions))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "conditions": conditions}, indent=2) + "\n")

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
