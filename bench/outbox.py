"""bench/outbox: our outbox relay vs the common hand-written relay, from one PostgreSQL to one broker.

Both relays read the same outbox rows (filled by `outbox.add`, the same encoded invoices) from one
PostgreSQL started for the run (streams/local/databases.py) and publish to fresh 6-partition topics on the
same broker with acks=all and idempotence. The **peer** is the loop most services hand-write: select a
batch by id, for each row produce it, flush (wait for the ack), delete it, then commit the batch.
**ours** is `streams outbox relay`'s loop: two workers, each locking half the key buckets per cycle
and, per batch of up to 5000 rows, producing them all, flushing once and deleting them in one statement.

Throughput: the table is filled first, then a relay empties it: rows per second from the first
acknowledgement to the last (also printed: counting the relay's start-up); the fill is not timed.
Latency: a writer commits one event per transaction at `--rate` events/s offered; commit-to-Kafka is
from `outbox.add` to the brokers' acknowledgement, ours woken by NOTIFY, the peer polling every 100 ms.
Each relay runs in a child process of its own (the writer does not share its GIL).
Run: `python bench/outbox.py [--events N] [--peer-events N] [--rate R] [--seconds S] [--json PATH]`
against the running local stack (`streams dev up`) or STREAMS_* addresses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.catalog import load_catalog
from streams.demo.samples import invoice
from streams.local.databases import start_postgres
from streams.observability import configure_logging
from streams.outbox import Outbox
from streams.outbox.commands import create_table
from streams.outbox.metrics import OutboxMetrics
from streams.outbox.relay import RelayOptions, run_workers
from streams.outbox.table import connect, unpack_headers
from streams.publish import DURABILITY, THROUGHPUT
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "invoice.created.avsc"
PARTITIONS = 6
PEER_BATCH = 100
PEER_IDLE_S = 0.1


def make_topic(admin: AdminClient, registry: RegistryClient, prefix: str) -> str:
    name = f"bench.{prefix}.u{uuid.uuid4().hex[:8]}"
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result()
    registry.register(f"{name}-value", SCHEMA.read_text())
    return name


def bench_catalog(catalog_path: Path, topics: list[str]) -> Any:
    catalog = load_catalog(catalog_path)
    base = catalog.topic("invoice.created")
    return catalog.model_copy(
        update={"topics": (*catalog.topics, *(base.model_copy(update={"name": t}) for t in topics))}
    )


def fill(outbox: Outbox, dsn: str, topic: str, count: int) -> None:
    conn = connect(dsn)
    try:
        for start in range(0, count, 1000):
            for i in range(start, min(count, start + 1000)):
                outbox.add(conn, topic, invoice(i, tenant=f"t{i % 50}"))
            conn.commit()
    finally:
        conn.close()


# ---- the two relays, each in a child process --------------------------------------------------------------


class _Latencies:
    """Stands in for the relay's latency histogram: keeps every observation."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


def ours_child(dsn: str, table: str, _topic: str, settings: Settings, until: int, deadline_s: float, out: Any) -> None:
    """`streams outbox relay`'s loop (two workers) until `until` rows are acknowledged."""
    latencies = _Latencies()
    metrics = OutboxMetrics()
    metrics.latency = latencies  # type: ignore[assignment]
    stop = threading.Event()
    runner = threading.Thread(
        target=run_workers, args=(RelayOptions(dsn=dsn, table=table), settings, 2, stop, metrics), daemon=True
    )
    launched = time.perf_counter()
    runner.start()
    deadline = time.monotonic() + deadline_s
    # Timed from the first acknowledgement: connecting and fetching metadata are not throughput.
    # Polled every 5 ms: the timing error is small next to a run of seconds, and this thread keeps off the GIL.
    while not latencies.values and time.monotonic() < deadline:
        time.sleep(0.005)
    first, started = len(latencies.values), time.perf_counter()
    while len(latencies.values) < until and time.monotonic() < deadline:
        time.sleep(0.005)
    ended = time.perf_counter()
    stop.set()
    runner.join(30)
    out.send(
        {
            "relayed": len(latencies.values),
            "timed": len(latencies.values) - first,
            "seconds": ended - started,
            "with_startup_s": ended - launched,
            "latencies": latencies.values,
        }
    )


def peer_child(dsn: str, table: str, topic: str, settings: Settings, until: int, deadline_s: float, out: Any) -> None:
    """The hand-written relay: select a batch, for each row produce + flush + delete, commit."""
    launched = time.perf_counter()
    producer = Producer({**settings.kafka_config(settings.bootstrap_servers()), **THROUGHPUT, **DURABILITY})
    producer.list_topics(topic, timeout=10)
    conn = connect(dsn)
    latencies: list[float] = []
    relayed = first = 0
    started = time.perf_counter()
    deadline = time.monotonic() + deadline_s
    while relayed < until and time.monotonic() < deadline:
        if relayed and not first:
            first, started = relayed, time.perf_counter()  # timed from the first acknowledgement, as ours
        cursor = conn.cursor()
        cursor.execute(
            f"SELECT id, topic, msg_key, value, headers, created_us FROM {table} "  # noqa: S608
            f"ORDER BY id LIMIT {PEER_BATCH} FOR UPDATE SKIP LOCKED"
        )
        rows = cursor.fetchall()
        if not rows:
            conn.rollback()
            time.sleep(PEER_IDLE_S)
            continue
        for row_id, name, key, value, headers, created_us in rows:
            producer.produce(name, bytes(value), bytes(key) if key else None, headers=[*unpack_headers(bytes(headers))])
            producer.flush()
            latencies.append(time.time() - created_us / 1e6)
            cursor.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,))  # noqa: S608
            relayed += 1
        conn.commit()
    ended = time.perf_counter()
    conn.close()
    out.send(
        {
            "relayed": relayed,
            "timed": relayed - first,
            "seconds": ended - started,
            "with_startup_s": ended - launched,
            "latencies": latencies,
        }
    )


def run_child(target: Any, *args: Any) -> tuple[BaseProcess, Any]:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=target, args=(*args, sender), daemon=True)
    process.start()
    return process, receiver


def throughput(child: Any, dsn: str, table: str, topic: str, settings: Settings, count: int) -> dict[str, Any]:
    process, receiver = run_child(child, dsn, table, topic, settings, count, 600.0)
    result = receiver.recv()
    process.join(30)
    return {
        "events": result["relayed"],
        "events_per_s": round(result["timed"] / result["seconds"]),
        "events_per_s_with_startup": round(result["relayed"] / result["with_startup_s"]),
    }


def latency(
    child: Any, outbox: Outbox, dsn: str, table: str, topic: str, settings: Settings, rate: int, seconds: float
) -> dict[str, Any]:
    count = int(rate * seconds)
    process, receiver = run_child(child, dsn, table, topic, settings, count, seconds + 60)
    time.sleep(3.0)  # the child connects, LISTENs, warms its producer
    conn = connect(dsn)
    interval, started = 1.0 / rate, time.perf_counter()
    for i in range(count):
        pause = started + i * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        outbox.add(conn, topic, invoice(i, tenant=f"t{i % 50}"))
        conn.commit()
    offered = count / (time.perf_counter() - started)
    conn.close()
    result = receiver.recv()
    process.join(30)
    cuts = statistics.quantiles(result["latencies"], n=100)
    return {
        "offered_per_s": round(offered),
        "events": result["relayed"],
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "max_ms": round(max(result["latencies"]) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="Rows our relay empties (throughput).")
    parser.add_argument("--peer-events", type=int, default=3_000, help="Rows the hand-written relay empties.")
    parser.add_argument("--rate", type=int, default=1_000, help="Events/s offered in the latency run.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of the latency run.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args()
    configure_logging("WARNING")  # the relays' "started" lines would only clutter the output
    settings = Settings()
    admin = AdminClient(settings.kafka_config(settings.bootstrap_servers()))
    load = [os.getloadavg()[0]]
    with (
        tempfile.TemporaryDirectory(prefix="bench-outbox-") as scratch,
        RegistryClient(settings.registry_url()) as registry,
    ):
        server = start_postgres(Path(scratch) / "pg")
        try:
            topics = {name: make_topic(admin, registry, f"outbox-{name}") for name in ("ours", "peer", "lat")}
            catalog = bench_catalog(settings.catalog_path, list(topics.values()))
            outbox_ours = Outbox(settings, catalog=catalog, registry=registry, table="bench_ours")
            outbox_peer = Outbox(settings, catalog=catalog, registry=registry, table="bench_peer")
            for table in ("bench_ours", "bench_peer", "bench_lat", "bench_lat_peer"):
                create_table(server.dsn, table)
            fill(outbox_ours, server.dsn, topics["ours"], args.events)
            fill(outbox_peer, server.dsn, topics["peer"], args.peer_events)
            results: dict[str, Any] = {
                "throughput_ours": throughput(
                    ours_child, server.dsn, "bench_ours", topics["ours"], settings, args.events
                )
            }
            load.append(os.getloadavg()[0])
            results["throughput_peer"] = throughput(
                peer_child, server.dsn, "bench_peer", topics["peer"], settings, args.peer_events
            )
            load.append(os.getloadavg()[0])
            lat = Outbox(settings, catalog=catalog, registry=registry, table="bench_lat")
            results["latency_ours"] = latency(
                ours_child, lat, server.dsn, "bench_lat", topics["lat"], settings, args.rate, args.seconds
            )
            load.append(os.getloadavg()[0])
            lat_peer = Outbox(settings, catalog=catalog, registry=registry, table="bench_lat_peer")
            results["latency_peer"] = latency(
                peer_child, lat_peer, server.dsn, "bench_lat_peer", topics["lat"], settings, args.rate, args.seconds
            )
            load.append(os.getloadavg()[0])
        finally:
            server.stop()
    ours, peer = results["throughput_ours"]["events_per_s"], results["throughput_peer"]["events_per_s"]
    results["ratio"] = round(ours / peer, 1)
    conditions = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_1m": [round(x, 2) for x in load],
        "partitions": PARTITIONS,
        "peer_batch": PEER_BATCH,
        "postgres": "local, fsync=off, synchronous_commit=off",
        "note": "shared 2-core machine; compare the ratio within one run",
    }
    print(
        f"throughput  ours {ours:>7} events/s ({results['throughput_ours']['events']} rows)   "
        f"peer {peer:>6} events/s ({results['throughput_peer']['events']} rows)   ratio {results['ratio']}x"
    )
    print(
        f"            counting start-up (connect, metadata, producer id, first batch): ours "
        f"{results['throughput_ours']['events_per_s_with_startup']} events/s, peer "
        f"{results['throughput_peer']['events_per_s_with_startup']} events/s"
    )
    for side in ("ours", "peer"):
        row = results[f"latency_{side}"]
        print(
            f"latency     {side}: offered {row['offered_per_s']}/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
            f"max {row['max_ms']} ms ({row['events']} events)"
        )
    print(f"load average (1m) through the run: {conditions['load_average_1m']}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "conditions": conditions}, indent=2) + "\n")


if __name__ == "__main__":
    main()
