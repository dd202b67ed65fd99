"""bench/console: the message page's server time for 1,000 decoded, masked, rendered records (target < 300 ms).

Ours (GET /messages through the whole app: read, decode via the registry, mask, render) beside the peer (the
same records read and decoded by confluent-kafka's AvroDeserializer and dumped as JSON, no page), one run.
`python bench/console.py [--records 1000] [--runs 15]`: starts a stack of its own in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

# authlib and starlette's TestClient warn about httpx on import; nothing here can act on it.
warnings.filterwarnings("ignore", message=r".*httpx.*")

from confluent_kafka import Consumer, TopicPartition  # noqa: E402 - after the warnings filter
from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: E402 - after the warnings filter
from confluent_kafka.schema_registry.avro import AvroDeserializer  # noqa: E402 - after the warnings filter
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402 - after the warnings filter
from starlette.testclient import TestClient  # noqa: E402 - after the warnings filter

from streams.admin import apply_plan, plan_changes  # noqa: E402 - after the warnings filter
from streams.catalog import load_catalog  # noqa: E402 - after the warnings filter
from streams.console.app import create_app  # noqa: E402 - after the warnings filter
from streams.console.auth import hash_password  # noqa: E402 - after the warnings filter
from streams.console.settings import ConsoleSettings  # noqa: E402 - after the warnings filter
from streams.demo.samples import invoice_chain  # noqa: E402 - after the warnings filter
from streams.local.stack import start_stack, stop_stack  # noqa: E402 - after the warnings filter
from streams.publish import Publisher  # noqa: E402 - after the warnings filter
from streams.schemas.commands import apply_schemas  # noqa: E402 - after the warnings filter
from streams.schemas.registry_client import RegistryClient  # noqa: E402 - after the warnings filter
from streams.settings import Settings  # noqa: E402 - after the warnings filter

ROOT = Path(__file__).resolve().parents[1]


def peer(settings: Settings, records: int) -> float:
    """Milliseconds to read and decode `records` with confluent-kafka's deserializer and dump them as JSON."""
    started = time.perf_counter()
    registry = SchemaRegistryClient({"url": settings.registry_url()})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers(),
            "group.id": "bench-console-peer",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics("invoice.created", timeout=10).topics["invoice.created"].partitions
    consumer.assign([TopicPartition("invoice.created", p, 0) for p in partitions])
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while len(lines) < records and time.monotonic() < deadline:
        for message in consumer.consume(500, 1.0):
            context = SerializationContext("invoice.created", MessageField.VALUE)
            lines.append(json.dumps(deserializer(message.value(), context), default=str))
    consumer.close()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path, help="Also write the numbers here (bench/run_all.py).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        data_dir = Path(tmp)
        start_stack(data_dir, with_redis=False, catalog=ROOT / "topics.yaml")
        try:
            settings = Settings(data_dir=data_dir, catalog_path=ROOT / "topics.yaml")
            catalog = load_catalog(settings.catalog_path)
            config = settings.kafka_config(settings.bootstrap_servers())
            apply_plan(plan_changes(catalog, config), catalog, config)
            with RegistryClient(settings.registry_url()) as client:
                apply_schemas(catalog, client)
            # one tenant, one key: every invoice lands in the same partition, so one page is 1,000 records
            with Publisher(settings, source="bench") as publisher:
                for event in invoice_chain(args.records, tenant="bench"):
                    publisher.publish_nowait("invoice.created", event)
            os.environ["STREAMS_CONSOLE_USERS"] = json.dumps(
                {
                    "viewer": {"role": "viewer", "password_hash": hash_password("v", rounds=4)},
                    "auditor": {"role": "auditor", "password_hash": hash_password("a", rounds=4)},
                }
            )
            os.environ["STREAMS_CONSOLE_SESSION_SECRET"] = "b" * 40
            app = create_app(settings, ConsoleSettings(secure_cookies=False))
            results = {}
            with TestClient(app, base_url="http://localhost") as client:
                for role, password in (("viewer", "v"), ("auditor", "a")):
                    client.cookies.clear()
                    login = client.get("/login")
                    csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                    client.post("/login", data={"username": role, "password": password, "csrf": csrf})
                    times, reads, rows = [], [], 0
                    for _ in range(args.runs):
                        answer = client.get(f"/messages?topic=invoice.created&limit={args.records}")
                        if answer.status_code != 200:
                            raise SystemExit(f"GET /messages answered {answer.status_code}: {answer.text[:500]}")
                        times.append(float(answer.headers["server-timing"].split("dur=")[1]))
                        rows = answer.text.count("<tr><td>")
                        reads.append(float(answer.text.split("read and decoded in ", 1)[1].split(" ms", 1)[0]))
                    results[role] = (statistics.median(times), max(times), rows, statistics.median(reads))
            peer_ms = statistics.median(peer(settings, args.records) for _ in range(5))
        finally:
            stop_stack(data_dir)
    load = os.getloadavg()[0]
    for role, (median, worst, rows, read) in results.items():
        print(
            f"ours ({role:7}) {rows:5} records rendered: server time median {median:7.1f} ms, worst {worst:7.1f} ms"
            f" (of which read+decode+mask {read:.1f} ms)  (target < 300 ms: {'met' if median < 300 else 'MISSED'})"
        )
    print(f"peer (AvroDeserializer + json.dumps, no page): median {peer_ms:7.1f} ms for {args.records} records")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "records": args.records,
                    "runs": args.runs,
                    "peer_ms": peer_ms,
                    "load": load,
                    **{f"{role}_median_ms": r[0] for role, r in results.items()},
                    **{f"{role}_worst_ms": r[1] for role, r in results.items()},
                },
                indent=2,
            )
        )
    print(
        f"ours/peer time ratio (viewer) {results['viewer'][0] / peer_ms:.2f}x   load {load:.2f}   "
        f"{platform.machine()} cores={os.cpu_count()} python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
