"""bench/bridge: confirmed tasks/s from Kafka into Redis through our bridge vs a loop of Celery apply_async.

Both put the same tasks (generate_invoice_pdf for invoice.cleared events) on the same queue of the same
Redis (a private redis-server, append-only, fsync every second). Ours starts with the events already in
the topic and stops when every offset is committed. Run against the local stack (`streams dev up`) or
STREAMS_* addresses: `python bench/bridge.py [--events N] [--runs N] [--json bench/results/bridge.json]`
(`--no-peer` skips apply_async, which takes most of the time, when only our CPU per task is wanted).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import celery
import kombu
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.bridge.bridge import Bridge, BridgeOptions
from streams.bridge.celery_wire import queue_keys, task_id_for
from streams.bridge.reference_tasks import INVOICE_PDF, CelerySettings, create_app
from streams.bridge.routes import load_bridge
from streams.catalog import load_catalog
from streams.local.processes import free_port, stop_process_group
from streams.local.redis_server import redis_url, wait_for_redis
from streams.local.redis_server import start_redis as start_redis_server
from streams.publish import DURABILITY, THROUGHPUT, EventEncoder
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6
ARGS = (
    "invoice_id",
    "invoice_number",
    "tenant_id",
    "seller_vat_number",
    "tax_inclusive_total",
    "vat_total",
    "currency",
    "cleared_at",
    "qr_payload",
)
CATALOG = """\
version: 1
defaults: {{partitions: {partitions}, replication_factor: 1, retention: 1d}}
topics:
  {topic}: {{owner: bench, key: invoice_id, schema: {schema}}}
bridge:
  group: {group}
  tasks: [{task}]
  queues: {{default: {{bound: null}}}}
  routes:
    pdf:
      topic: {topic}
      task: {task}
      queue: default
      args: {{{args}}}
"""


def cleared(seq: int) -> dict[str, Any]:
    total = Decimal(1000 + seq % 9000) + Decimal("0.15")
    return {
        "invoice_id": str(uuid.UUID(int=seq + 1, version=4)),
        "tenant_id": f"tenant-{seq % 20:02d}",
        "invoice_number": f"INV-{seq:08d}",
        "seller_vat_number": "300000000000003",
        "invoice_hash": "n5/Cl4q5GvNqk7ZSZ5JtqUgnGHV/cKRB9BbBAaw0fWk=",
        "qr_payload": "AQxBY21lIFRyYWRpbmc=" * 3,
        "tax_inclusive_total": total,
        "vat_total": (total * 15 / 115).quantize(Decimal("0.01")),
        "currency": "SAR",
        "cleared_at": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=seq),
        "source_event_id": str(seq),
    }


def start_redis(directory: Path) -> tuple[int, str]:
    """The local stack's redis-server command (append-only, fsync every second) on a free port."""
    port = free_port()
    pid, log = start_redis_server(directory, port=port, owner=directory)
    url = redis_url(port)
    wait_for_redis(pid, url, log)
    return pid, url


def depth(client: redis.Redis, queue: str = "default") -> int:
    return sum(int(client.llen(key)) for key in queue_keys(queue))


def prepare(settings: Settings, directory: Path, events: int) -> tuple[Path, str, list[dict[str, Any]], int]:
    """A fresh topic holding `events` invoice.cleared events, and a catalog routing it to the PDF task."""
    topic = f"bench.cleared.u{uuid.uuid4().hex[:8]}"
    shutil.copytree(ROOT / "schemas", directory / "schemas")
    catalog_path = directory / "topics.yaml"
    catalog_path.write_text(
        CATALOG.format(
            partitions=PARTITIONS,
            topic=topic,
            schema="schemas/invoice.cleared.avsc",
            group=f"bench-{uuid.uuid4().hex[:6]}",
            task=INVOICE_PDF,
            args=", ".join(f"{a}: {a}" for a in ARGS),
        )
    )
    kafka = settings.kafka_config(settings.bootstrap_servers())
    admin = AdminClient(kafka)
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)]).values():
        future.result()
    registry = RegistryClient(settings.registry_url())
    registry.register(f"{topic}-value", (ROOT / "schemas" / "invoice.cleared.avsc").read_text())
    encoder = EventEncoder(load_catalog(catalog_path), registry, source="bench")
    producer = Producer({**kafka, **THROUGHPUT, **DURABILITY})
    payloads = [cleared(i) for i in range(events)]
    sizes = []
    for payload in payloads:
        record = encoder.encode(topic, payload)
        sizes.append(len(record.value))
        while True:
            try:
                producer.produce(topic, value=record.value, key=record.key, headers=[*record.headers])
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("events not delivered")
    registry.close()
    return catalog_path, topic, payloads, round(statistics.mean(sizes))


def redis_cpu_s(client: redis.Redis, *, children: bool = True) -> float:
    """CPU seconds the redis-server has used (main process, and AOF-rewrite children unless not `children`)."""
    info = client.info("cpu")
    names = ["used_cpu_user", "used_cpu_sys"]
    if children:
        names += ["used_cpu_user_children", "used_cpu_sys_children"]
    return float(sum(info[k] for k in names))


def run_ours(
    settings: Settings, catalog_path: Path, url: str, events: int, batch: int, profile: bool, ledger: bool
) -> dict[str, Any]:
    catalog = load_catalog(catalog_path)
    config = load_bridge(catalog)
    options = BridgeOptions(
        batch_size=batch, max_in_flight=max(batch * 4, 20_000), sweep_interval_s=30 if ledger else 0
    )
    bridge = Bridge(settings, catalog, config, options, redis_url=url)
    client = redis.Redis.from_url(url)
    profiler = cProfile.Profile() if profile else None
    redis_started, redis_main_started = redis_cpu_s(client), redis_cpu_s(client, children=False)
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    bridge.run(lambda: bridge.completed_records >= events)
    cpu = time.process_time() - cpu_started
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    ended = time.perf_counter()
    redis_cpu = redis_cpu_s(client) - redis_started
    redis_main_cpu = redis_cpu_s(client, children=False) - redis_main_started
    first = bridge.first_record_at or started
    queued = depth(client)
    sample = client.lindex(queue_keys("default")[0], 0) or b""
    return {
        "tasks_per_s": round(events / (ended - first)),
        "seconds": round(ended - first, 3),
        "tasks_per_cpu_s": round(events / cpu),
        "cpu_us_per_task": round(cpu / events * 1e6, 1),
        "cpu_seconds": round(cpu, 3),
        "redis_cpu_us_per_task": round(redis_cpu / events * 1e6, 1),
        "redis_main_cpu_us_per_task": round(redis_main_cpu / events * 1e6, 1),
        "seconds_with_group_join": round(ended - started, 3),
        "queued": queued,
        "message_bytes": len(sample),
    }


def run_apply_async(url: str, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    with warnings.catch_warnings():  # a second run's app registers the reference tasks again; only sends here
        warnings.simplefilter("ignore")
        app = create_app(Settings(redis_url=url), CelerySettings(broker_url=url))
        task = app.tasks[INVOICE_PDF]
    jobs = [({a: p[a] for a in ARGS}, task_id_for(p["source_event_id"], INVOICE_PDF)) for p in payloads]
    task.apply_async(kwargs=jobs[0][0], task_id=str(uuid.uuid4()), queue="default")  # warm: connection, declare
    client = redis.Redis.from_url(url)
    client.delete(*queue_keys("default"))
    redis_started = redis_cpu_s(client)
    started, cpu_started = time.perf_counter(), time.process_time()
    for kwargs, task_id in jobs:
        task.apply_async(kwargs=kwargs, task_id=task_id, queue="default")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    redis_cpu = redis_cpu_s(client) - redis_started
    return {
        "tasks_per_s": round(len(jobs) / elapsed),
        "seconds": round(elapsed, 3),
        "tasks_per_cpu_s": round(len(jobs) / cpu),
        "cpu_us_per_task": round(cpu / len(jobs) * 1e6, 1),
        "cpu_seconds": round(cpu, 3),
        "redis_cpu_us_per_task": round(redis_cpu / len(jobs) * 1e6, 1),
        "queued": depth(client),
    }


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def one_run(settings: Settings, directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ours then apply_async, for the same fresh events, on one private Redis; loads before, between, after."""
    directory.mkdir()
    (directory / "redis").mkdir()
    pid, url = start_redis(directory / "redis")
    try:
        catalog_path, _, payloads, value_bytes = prepare(settings, directory, args.events)
        load_before = load_avg()
        ours = run_ours(settings, catalog_path, url, args.events, args.batch_size, args.profile, not args.no_ledger)
        load_between = load_avg()
        redis.Redis.from_url(url).flushdb()
        peer = None if args.no_peer else run_apply_async(url, payloads)
        load_after = load_avg()
    finally:
        stop_process_group(pid)
    assert ours["queued"] == args.events, ours  # noqa: S101 - every confirmed task is really in Redis
    print(
        f"bridge      {ours['tasks_per_s']:10,} tasks/s confirmed in Redis and committed "
        f"({ours['seconds']} s; {ours['seconds_with_group_join']} s with the group join)"
    )
    print(
        f"CPU per task: bridge {ours['cpu_us_per_task']} us (+ redis-server {ours['redis_cpu_us_per_task']} us, "
        f"{ours['redis_main_cpu_us_per_task']} us of it outside append-only-file rewrites)"
    )
    ratio = None
    if peer is not None:
        assert peer["queued"] == args.events, peer  # noqa: S101
        ratio = ours["tasks_per_s"] / peer["tasks_per_s"]
        print(
            f"apply_async {peer['tasks_per_s']:10,} tasks/s, CPU per task {peer['cpu_us_per_task']} us "
            f"(+ redis-server {peer['redis_cpu_us_per_task']} us); bridge/apply_async {ratio:.1f}x"
        )
    print(f"load average (1, 5, 15 min) before {load_before}, between {load_between}, after {load_after}")
    return {
        "bridge": ours,
        "apply_async": peer,
        "ratio": None if ratio is None else round(ratio, 2),
        "avro_value_bytes": value_bytes,
        "load_avg_1_5_15_before": load_before,
        "load_avg_1_5_15_between": load_between,
        "load_avg_1_5_15_after": load_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=2, help="Independent runs (fresh topic, fresh Redis) in a row.")
    parser.add_argument("--no-ledger", action="store_true", help="Run ours without the pending ledger.")
    parser.add_argument("--no-peer", action="store_true", help="Skip the apply_async run (ours only).")
    parser.add_argument("--profile", action="store_true", help="Profile our bridge and print the top costs.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args()

    settings = Settings()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as temp:
        for number in range(args.runs):
            print(f"run {number + 1} of {args.runs}")
            runs.append(one_run(settings, Path(temp) / f"run{number}", args))
    conditions = {
        "events": args.events,
        "partitions": PARTITIONS,
        "batch_size": args.batch_size,
        "max_in_flight": max(args.batch_size * 4, 20_000),
        "avro_value_bytes": runs[0]["avro_value_bytes"],
        "task_message_bytes": runs[0]["bridge"]["message_bytes"],
        "task_kwargs": len(ARGS),
        "redis": "private redis-server per run, appendonly yes, appendfsync everysec",
        "ledger": not args.no_ledger,
        "machine": f"{platform.machine()} cores={os.cpu_count()}, shared with other engineers' test runs "
        "(see the load averages: numbers are noisy)",
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
    }
    print(json.dumps(conditions))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "bridge_tasks_per_s": [r["bridge"]["tasks_per_s"] for r in runs],
            "bridge_cpu_us_per_task": [r["bridge"]["cpu_us_per_task"] for r in runs],
            "redis_cpu_us_per_task": [r["bridge"]["redis_cpu_us_per_task"] for r in runs],
            "apply_async_tasks_per_s": [r["apply_async"]["tasks_per_s"] for r in runs if r["apply_async"]],
            "ratio": [r["ratio"] for r in runs],
        }
        args.json.write_text(json.dumps({"summary": summary, "runs": runs, "conditions": conditions}, indent=2) + "\n")


if __name__ == "__main__":
    main()
