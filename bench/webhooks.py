"""bench/webhooks: deliveries/s from a Kafka topic to a local webhook receiver, ours vs a Celery task.

Ours: `streams webhooks` (WebhookRunner in this process) with the events already in the topic: decode,
render the CloudEvent, sign, POST, commit. The peer: the Celery task a team writes for the same POST with
retries (bench/webhooks_celery.py), the same signed bodies already queued in Redis, run by a Celery worker
(prefork with the default concurrency, and a thread pool as wide as our route's concurrency). Rates are
measured where the requests land: the receiver (another process, verifying every signature) counts the
2xx answers between its first and its last. Run against the local stack (`streams dev up`) or STREAMS_*
addresses: `python bench/webhooks.py [--events N] [--json bench/results/webhooks.json]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import celery
import httpx
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from streams.catalog import load_catalog
from streams.local.processes import free_port, stop_process_group
from streams.local.redis_server import redis_url, wait_for_redis
from streams.local.redis_server import start_redis as start_redis_server
from streams.publish import DURABILITY, THROUGHPUT, EventEncoder
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings
from streams.webhooks.delivery import render
from streams.webhooks.routes import load_webhooks
from streams.webhooks.runner import RunnerOptions, WebhookRunner
from streams.webhooks.signing import webhook_id

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6
CONCURRENCY = 16
SECRET = "whsec_" + base64.b64encode(b"bench-webhooks-secret-32-bytes!!").decode()
CATALOG = """\
version: 1
defaults: {{partitions: {partitions}, replication_factor: 1, retention: 1d}}
topics:
  {topic}: {{owner: bench, key: invoice_id, schema: {schema}}}
webhooks:
  group: {group}
  routes:
    partner:
      topic: {topic}
      url: {url}
      secret: bench
      concurrency: {concurrency}
      retry: {{max_attempts: 8, backoff: 1s, max_backoff: 1m}}
"""


def violation(seq: int) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    return {
        "violation_id": str(uuid.UUID(int=seq + 1, version=4)),
        "invoice_id": str(uuid.UUID(int=seq + 7, version=4)),
        "tenant_id": f"tenant-{seq % 20:02d}",
        "rule_code": "BR-KSA-39",
        "severity": "ERROR",
        "message": f"seller VAT number is malformed ({seq})",
        "field_path": "seller.vat_number",
        "source_event": {"event_id": str(seq), "topic": "invoice.created", "partition": seq % 6, "offset": seq},
        "detected_at": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=seq),
    }


class ReceiverProcess:
    """`python -m streams.webhooks.receiver` on a free port, in a process of its own."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "STREAMS_WEBHOOK_SECRETS": json.dumps({"bench": SECRET}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.log = (directory / f"receiver-{self.port}.log").open("w")
        self.process = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "streams.webhooks.receiver", "--secret-name", "bench", "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None  # noqa: S101
        line = self.process.stdout.readline()
        if not line.startswith("receiver listening on "):
            raise RuntimeError(f"the receiver did not start: {line!r}")
        self.url = line.removeprefix("receiver listening on ").strip()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.url, timeout=10).json())

    def wait(self, events: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (stats := self.stats())["delivered"] < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {stats['delivered']} of {events} deliveries after {timeout:.0f}s")
            time.sleep(0.2)
        return stats

    def stop(self) -> None:
        stop_process_group(self.process.pid)
        self.log.close()


def rate(stats: dict[str, Any], events: int) -> dict[str, Any]:
    seconds = stats["last_2xx_at"] - stats["first_2xx_at"]
    return {
        "deliveries_per_s": round(events / seconds),
        "seconds": round(seconds, 3),
        "requests": stats["requests"],
        "bad_signatures": stats["bad_signatures"],
        "duplicates": stats["answered_2xx"] - stats["delivered"],
    }


def prepare(settings: Settings, directory: Path, events: int, url: str) -> tuple[Path, str, int]:
    topic = f"bench.violation.u{uuid.uuid4().hex[:8]}"
    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    schema = ROOT / "schemas" / "compliance.violation.avsc"
    (directory / "schemas" / schema.name).write_text(schema.read_text())
    path = directory / "topics.yaml"
    path.write_text(
        CATALOG.format(
            partitions=PARTITIONS,
            topic=topic,
            schema=f"schemas/{schema.name}",
            group=f"bench-{uuid.uuid4().hex[:6]}",
            url=url,
            concurrency=CONCURRENCY,
        )
    )
    kafka = settings.kafka_config(settings.bootstrap_servers())
    admin = AdminClient(kafka)  # kept: its futures fail if it is collected first
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)]).values():
        future.result()
    registry = RegistryClient(settings.registry_url())
    registry.register(f"{topic}-value", schema.read_text())
    encoder = EventEncoder(load_catalog(path), registry, source="bench")
    producer = Producer({**kafka, **THROUGHPUT, **DURABILITY})
    sizes = []
    for seq in range(events):
        record = encoder.encode(topic, violation(seq))
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
    return path, topic, round(sum(sizes) / len(sizes))


def run_ours(settings: Settings, directory: Path, events: int) -> dict[str, Any]:
    receiver = ReceiverProcess(directory)
    try:
        catalog_path, _, value_bytes = prepare(settings, directory, events, receiver.url)
        ours = settings.model_copy(update={"webhook_secrets": SecretStr(json.dumps({"bench": SECRET}))})
        catalog = load_catalog(catalog_path)
        runner = WebhookRunner(
            ours, catalog, load_webhooks(catalog), RunnerOptions(batch_size=500, max_in_flight=5_000)
        )
        cpu_started = time.process_time()
        runner.run(lambda: runner.completed_records >= events)
        cpu = time.process_time() - cpu_started
        stats = receiver.wait(events, 60)
    finally:
        receiver.stop()
    return {**rate(stats, events), "cpu_us_per_delivery": round(cpu / events * 1e6, 1), "avro_value_bytes": value_bytes}


def run_celery(
    directory: Path, events: int, url: str, pool: str, concurrency: int, bodies: list[tuple[str, str, dict[str, str]]]
) -> dict[str, Any]:
    receiver = ReceiverProcess(directory)
    env = {
        **os.environ,
        "BENCH_REDIS_URL": url,
        "BENCH_WEBHOOK_SECRET": SECRET,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    sys.path.insert(0, str(ROOT / "bench"))
    os.environ["BENCH_REDIS_URL"], os.environ["BENCH_WEBHOOK_SECRET"] = url, SECRET
    import webhooks_celery  # noqa: PLC0415 - after BENCH_* are set: the module reads them

    webhooks_celery.app.conf.broker_url = url
    try:
        for msg_id, body, headers in bodies:
            webhooks_celery.deliver.apply_async(args=(receiver.url, msg_id, body, headers))
        log = (directory / f"celery-{pool}.log").open("w")
        worker = subprocess.Popen(  # noqa: S603 - the Celery worker of this bench
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "webhooks_celery",
                "worker",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            cpu_before = _children_cpu()
            stats = receiver.wait(events, 600)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
            log.close()
        cpu = _children_cpu() - cpu_before
    finally:
        receiver.stop()
    return {
        **rate(stats, events),
        "pool": pool,
        "concurrency": concurrency,
        "cpu_us_per_delivery": round(cpu / events * 1e6, 1),
    }


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args()

    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as temp:
        directory = Path(temp)
        (directory / "redis").mkdir()
        port = free_port()
        pid, log = start_redis_server(directory / "redis", port=port, owner=directory)
        url = redis_url(port)
        wait_for_redis(pid, url, log)
        try:
            load_before = [round(x, 2) for x in os.getloadavg()]
            ours = run_ours(settings, directory, args.events)
            print(
                f"ours (streams webhooks)      {ours['deliveries_per_s']:7,} deliveries/s "
                f"({ours['seconds']} s, CPU {ours['cpu_us_per_delivery']} us per delivery, "
                f"{ours['bad_signatures']} bad signatures)"
            )
            route = load_webhooks(load_catalog(next(directory.glob("topics.yaml")))).routes[0]
            bodies = []
            for seq in range(args.events):
                event = json.loads(json.dumps(violation(seq), default=str))
                headers, body = render(route, event, {"id": str(seq), "source": "bench"}, route.topic)
                bodies.append((webhook_id("celery", str(seq)), body.decode(), headers))
            peers = []
            for pool, concurrency in (("prefork", os.cpu_count() or 2), ("threads", CONCURRENCY)):
                peer = run_celery(directory, args.events, url, pool, concurrency, bodies)
                peers.append(peer)
                print(
                    f"celery task ({pool:7s} x{concurrency:2d}) {peer['deliveries_per_s']:7,} deliveries/s "
                    f"({peer['seconds']} s, worker CPU {peer['cpu_us_per_delivery']} us per delivery); "
                    f"ours/celery {ours['deliveries_per_s'] / peer['deliveries_per_s']:.1f}x"
                )
            load_after = [round(x, 2) for x in os.getloadavg()]
        finally:
            stop_process_group(pid)
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    conditions = {
        "events": args.events,
        "partitions": PARTITIONS,
        "route_concurrency": CONCURRENCY,
        "avro_value_bytes": ours["avro_value_bytes"],
        "json_body_bytes": len(bodies[0][1]),
        "receiver": "aiohttp on loopback, its own process, verifies every signature, answers 204",
        "redis": "private redis-server (the local stack's command), appendonly yes, appendfsync everysec",
        "machine": f"{platform.machine()} cores={os.cpu_count()}, shared with other engineers' test runs",
        "python": platform.python_version(),
        "celery": celery.__version__,
        "aiohttp": aiohttp.__version__,
    }
    print(json.dumps(conditions))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "ours": ours,
                    "celery": peers,
                    "conditions": conditions,
                    "ratio": [round(ours["deliveries_per_s"] / p["deliveries_per_s"], 2) for p in peers],
                    "load_avg_before": load_before,
                    "load_avg_after": load_after,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
