"""bench/agents: one `streams worker --agents validation` vs a plain faust JSON passthrough agent, same broker.

Each round starts a local stack of its own (Kafka + our registry under a temp data dir, catalog topics and
schemas applied), pre-publishes N valid invoices (Publisher, ~60 sellers) to invoice.created and N JSON
records of the same size, key and headers to a 6-partition peer topic, then for each path: starts one
worker process reading from the beginning, measures events/s from its first output record to its last
(record timestamps), then offers a paced load (default 5,000 events/s for 20 s) and measures the
end-to-end latency from publish to the output's arrival at a read_committed consumer; samples the worker's
RSS and CPU from /proc throughout. `--profile` adds a py-spy pass over a fresh worker and splits its time
into the engine's and our stages.
Run: `python bench/agents.py [--events N] [--rounds 3] [--profile] [--json bench/results/agents.json]`; the
last lines give the median and spread (min-max) of each number over the rounds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from harness import (
    Side,
    Watch,
    header_value,
    load,
    measure,
    print_summary,
    produce,
    start_process,
    stop_process,
    summarize,
    uptime,
)

from streams.admin import apply_plan, plan_changes
from streams.agents.zatca import outcome_id
from streams.catalog import load_catalog
from streams.demo.samples import invoice_chain
from streams.local.kafka import kafka_version
from streams.local.processes import free_port
from streams.local.stack import start_stack, stop_stack
from streams.publish import DURABILITY, THROUGHPUT, Publisher
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6
SOURCE, CLEARED = "invoice.created", "invoice.cleared"
PEER_IN, PEER_OUT = "bench.passthrough.in", "bench.passthrough.out"


# ---------------------------------------------------------------- data


def interleaved_invoices(count: int, sellers: int, prefix: str) -> list[dict[str, Any]]:
    """`count` valid invoices from `sellers` sellers, each seller's ICV/hash chain intact, sellers interleaved."""
    per_seller = -(-count // sellers)
    chains = [invoice_chain(per_seller, tenant=f"{prefix}-{n:02d}", seed=n) for n in range(sellers)]
    return [chain[i] for i in range(per_seller) for chain in chains][:count]


def peer_value(record_id: str, invoice: dict[str, Any], size: int) -> bytes:
    """A JSON invoice summary padded to `size` bytes: the peer moves values as large as our Avro ones."""
    doc = {
        "id": record_id,
        "invoice_id": invoice["invoice_id"],
        "tenant_id": invoice["tenant_id"],
        "invoice_number": invoice["invoice_number"],
        "icv": invoice["icv"],
        "issued_at": invoice["issued_at"].isoformat(),
        "seller_vat_number": invoice["seller"]["vat_number"],
        "tax_inclusive_total": str(invoice["tax_inclusive_total"]),
        "vat_total": str(invoice["vat_total"]),
        "currency": invoice["currency"],
        "memo": "",
    }
    body = json.dumps(doc, separators=(",", ":"))
    doc["memo"] = "x" * max(0, size - len(body))
    return json.dumps(doc, separators=(",", ":")).encode()


def peer_headers(template: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Our CloudEvents header list with a fresh ce_id: the same names and sizes as the Avro records carry."""
    return [(name, str(uuid.uuid4()).encode() if name == "ce_id" else value) for name, value in template]


# ---------------------------------------------------------------- profile


# (a frame text to look for, the stage it means), first match wins: outside ValidationAgent.handle, then in it
ENGINE_STAGES = [
    ("TransactionalEngine._commit", "engine: commit (state writes, offsets, commit_transaction)"),
    ("TransactionalEngine._restore", "engine: state restore"),
    ("TransactionalEngine.", "engine: consume (librdkafka) and batch bookkeeping"),
]
HANDLE_STAGES = [
    ("EventDecoder.decode", "ours: decode (EventDecoder)"),
    ("streams/publish.py", "ours: encode outputs (EventEncoder, native Avro)"),
    ("Output.send", "ours: send outputs (librdkafka produce)"),
    ("ValidationAgent.judge", "ours: judge, rules, state and invoice hash/QR"),
    ("prometheus_client/", "ours: metrics (prometheus_client)"),
    ("SourceRecord.", "ours: SourceRecord.from_message"),
]


def stage_of(frames: list[str]) -> str:
    """Which part of the per-event work one py-spy stack (root first) belongs to."""
    handle = next((index for index, frame in enumerate(frames) if "ValidationAgent.handle" in frame), None)
    if handle is None:
        stages, part = ENGINE_STAGES, frames
        other = "other threads: web server, timers, librdkafka callbacks"
    else:
        stages, part = HANDLE_STAGES, frames[handle + 1 :]
        if not part:  # in handle's own frame: native calls do not show in py-spy's Python stacks
            return "ours: InvoiceJudge.try_clear (native decode, rules, hash, QR, encode) and its loop"
        other = "ours: other (handle bookkeeping)"
    return next((stage for text, stage in stages if any(text in frame for frame in part)), other)


def frame_package(frame: str) -> str:
    where = frame.rsplit("(", 1)[-1]
    return where.split("/", 1)[0] if "/" in where else where.split(":", 1)[0]


def summarize_profile(raw: Path, events: int, rate_hz: int) -> dict[str, Any]:
    """Split py-spy samples into our stages and framework packages, in us per event."""
    stages: Counter[str] = Counter()
    leaf_packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        total += count
        leaf_packages[frame_package(frames[-1])] += count
        stages[stage_of(frames)] += count
    per_event = 1e6 / rate_hz / events if events else 0.0
    return {
        "samples": total,
        "rate_hz": rate_hz,
        "events": events,
        "stages": {
            k: {"share": round(v / total, 3), "us_per_event": round(v * per_event, 1)} for k, v in stages.most_common()
        },
        "self_by_package": {k: round(v / total, 3) for k, v in leaf_packages.most_common(12)},
    }


def profile_ours(bootstrap: str, env: dict[str, str], workdir: Path, seconds: int, rate_hz: int) -> dict[str, Any]:
    """A fresh worker (new group: it re-reads invoice.created) under py-spy for `seconds` once it is producing."""
    watch = Watch(bootstrap, CLEARED, lambda m: "")
    log = workdir / "ours-profile.log"
    command = worker_command(f"bench-agents-profile-{uuid.uuid4().hex[:8]}")
    process = start_process(command, env, log)
    raw = workdir / "profile.txt"
    try:
        watch.wait_for(1, process, 300, log)
        started = time.time()
        spy_command = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(process.pid),
            "--rate",
            str(rate_hz),
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(raw),
        ]
        spy = subprocess.run(spy_command, capture_output=True, text=True, check=False)  # noqa: S603 - venv's py-spy
        ended = time.time()
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {spy.stderr.strip()[-500:]}")
        time.sleep(1.0)
    finally:
        stop_process(process)
        watch.close()
    events = sum(1 for o in watch.outputs if started * 1000 <= o.timestamp_ms <= ended * 1000)
    summary = summarize_profile(raw, events, rate_hz)
    summary["seconds"] = round(ended - started, 1)
    summary["events_per_s_while_profiled"] = round(events / (ended - started))
    summary["raw"] = str(raw)
    return summary


# ---------------------------------------------------------------- a round


def worker_command(app_id: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streams.cli",
        "worker",
        "--agents",
        "validation",
        "--app-id",
        app_id,
        "--web-port",
        str(free_port()),
    ]


def prepare_stack(data_dir: Path) -> Settings:
    """The harness's stack: Kafka and our registry, the catalog's topics and schemas applied."""
    start_stack(data_dir, with_redis=False, catalog=ROOT / "topics.yaml")
    settings = Settings(data_dir=data_dir, catalog_path=ROOT / "topics.yaml")
    catalog = load_catalog(settings.catalog_path)
    config = settings.kafka_config(settings.bootstrap_servers())
    apply_plan(plan_changes(catalog, config), catalog, config)
    with RegistryClient(settings.registry_url()) as client:
        apply_schemas(catalog, client)
    admin = AdminClient(config)
    for future in admin.create_topics([NewTopic(PEER_IN, PARTITIONS, 1), NewTopic(PEER_OUT, PARTITIONS, 1)]).values():
        future.result()
    return settings


def run_round(number: int, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    uptime_before = uptime()
    with tempfile.TemporaryDirectory(prefix="bench-agents-") as temp:
        workdir = Path(temp)
        settings = prepare_stack(workdir / "data")
        try:
            bootstrap = settings.bootstrap_servers()
            env = {
                **os.environ,
                "STREAMS_DATA_DIR": str(settings.data_dir),
                "STREAMS_CATALOG_PATH": str(settings.catalog_path),
            }
            publisher = Publisher(settings, source="billing-api")
            raw = Producer({**settings.kafka_config(bootstrap), **THROUGHPUT, **DURABILITY})
            started = time.perf_counter()
            for invoice in data["invoices"]:
                publisher.publish_nowait(SOURCE, invoice)
            publisher.flush(120)
            ours_publish_s = time.perf_counter() - started
            key, value, template, _ = publisher.encoder.build(SOURCE, data["invoices"][0])
            size = data["avro_value_bytes"]
            for i, invoice in enumerate(data["invoices"]):
                produce(
                    raw,
                    PEER_IN,
                    invoice["tenant_id"].encode(),
                    peer_value(f"t-{i}", invoice, size),
                    peer_headers(template),
                )
            raw.flush(120)
            phases = [(rate, len(invoices)) for rate, invoices in data["phases"]]
            peer_phase = [
                [(inv["tenant_id"].encode(), peer_value(f"l{n}-{i}", inv, size)) for i, inv in enumerate(invoices)]
                for n, (_, invoices) in enumerate(data["phases"])
            ]

            def send_ours(n: int, i: int) -> str:
                return publisher.publish_nowait(SOURCE, data["phases"][n][1][i])

            def send_peer(n: int, i: int) -> str:
                record_key, record_value = peer_phase[n][i]
                produce(raw, PEER_IN, record_key, record_value, peer_headers(template))
                return f"l{n}-{i}"

            paths = {
                "ours": Side(
                    "ours",
                    worker_command(f"bench-agents-{uuid.uuid4().hex[:8]}"),
                    env,
                    CLEARED,
                    lambda m: header_value(m, "ce_id"),
                    ("compliance.violation", "invoice.created.dlq"),
                    send_ours,
                    lambda: publisher.poll(0),
                    lambda event_id: outcome_id(event_id, "cleared"),
                ),
                "peer": Side(
                    "peer",
                    [
                        sys.executable,
                        str(ROOT / "bench" / "faust_passthrough.py"),
                        "--broker",
                        bootstrap,
                        "--app-id",
                        f"bench-passthrough-{uuid.uuid4().hex[:8]}",
                        "--source",
                        PEER_IN,
                        "--sink",
                        PEER_OUT,
                        "--datadir",
                        str(workdir / "peer"),
                    ],
                    env,
                    PEER_OUT,
                    lambda m: json.loads(m.value())["id"],
                    (),
                    send_peer,
                    lambda: raw.poll(0),
                    lambda record_id: record_id,
                ),
            }
            order = ["ours", "peer"] if number % 2 else ["peer", "ours"]
            results: dict[str, Any] = {}
            for name in order:
                print(f"round {number}: {name} ...", flush=True)
                results[name] = measure(
                    paths[name],
                    bootstrap,
                    len(data["invoices"]),
                    phases,
                    args.drain_seconds,
                    workdir,
                    warmup=data["warmup_phases"],
                )
                print(
                    f"  {name}: {results[name]['events_per_s']:,} events/s, latency "
                    f"{[(p['offered_per_s'], p['consumer_arrival_ms']) for p in results[name]['latency']]}, "
                    f"load {load()}",
                    flush=True,
                )
            if args.profile and not Path(sys.executable).with_name("py-spy").exists():
                print("no py-spy beside this python (pip install py-spy, in the [dev] extra): no profile", flush=True)
            elif args.profile:
                print(f"round {number}: profiling ours ...", flush=True)
                results["profile"] = profile_ours(bootstrap, env, workdir, args.profile_seconds, 200)
                if args.keep_profile:
                    args.keep_profile.write_text(Path(results["profile"]["raw"]).read_text())
                    results["profile"]["raw"] = str(args.keep_profile)
            publisher.close()
        finally:
            stop_stack(settings.data_dir)
    uptime_after = uptime()
    results["order"] = order
    results["ratio_events_per_s"] = round(results["ours"]["events_per_s"] / results["peer"]["events_per_s"], 2)
    results["ours_publish_events_per_s"] = round(len(data["invoices"]) / ours_publish_s)
    results["uptime_before"], results["uptime_after"] = uptime_before, uptime_after
    peer_bytes = len(peer_value("t-0", data["invoices"][0], data["avro_value_bytes"]))
    results["value_bytes"] = {
        "avro_invoice_created": len(value),
        "json_peer": peer_bytes,
        "key": len(key or b""),
        "headers": len(template),
        "header_bytes": sum(len(k) + len(v) for k, v in template),
    }
    return results


# ---------------------------------------------------------------- report


def print_round(number: int, result: dict[str, Any]) -> None:
    print(f"\nround {number} (order {' then '.join(result['order'])}; {result['uptime_before']})")
    print(
        f"{'path':<42} {'events/s':>9} {'ev/CPU-s':>9} {'offered':>8} {'p50 ms':>9} {'p99 ms':>9} {'done':>6} "
        f"{'peak RSS':>9}  load 1m before/after"
    )
    labels = (("ours", "ours: streams worker --agents validation"), ("peer", "peer: faust JSON passthrough"))
    for name, label in labels:
        r = result[name]
        for n, phase in enumerate(r["latency"]):
            lat = phase["consumer_arrival_ms"] or {"p50": float("nan"), "p99": float("nan")}
            head = (
                f"{label:<42} {r['events_per_s']:>9,} {r['events_per_worker_cpu_s'] or 0:>9,}" if n == 0 else " " * 62
            )
            tail_ = f" {r['peak_rss_mb']:>7.1f}MB  {r['load_avg_before'][0]}/{r['load_avg_after'][0]}" if n == 0 else ""
            done = f"{phase['outputs_within_drain'] / phase['events']:.0%}"
            offered = phase["achieved_offered_per_s"]
            print(f"{head} {offered:>8,} {lat['p50']:>9.1f} {lat['p99']:>9.1f} {done:>6}{tail_}")
    ours, peer = result["ours"], result["peer"]
    cpu_ratio = (ours["events_per_worker_cpu_s"] or 0) / (peer["events_per_worker_cpu_s"] or 1)
    print(
        f"ours/peer: {result['ratio_events_per_s']:.2f}x events/s, {cpu_ratio:.2f}x events per worker CPU-second "
        "(done: share of the phase's outputs seen within the drain time; below 100% the load was not sustained)"
    )
    if "profile" in result:
        profile = result["profile"]
        print(
            f"profile of ours ({profile['samples']} samples, {profile['events']:,} events, "
            f"{profile['events_per_s_while_profiled']:,} events/s under py-spy):"
        )
        for label, stage in profile["stages"].items():
            print(f"  {label:<78} {stage['share']:>6.1%} {stage['us_per_event']:>8.1f} us/event")
        print(f"  self time by package: {profile['self_by_package']}")


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    memory = next(
        line.split(":", 1)[1].strip()
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    import faust  # noqa: PLC0415 - only for its version

    return {
        "machine": platform.machine(),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "kafka": kafka_version(),
        "faust_streaming": faust.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="Pre-published events for the throughput phase.")
    parser.add_argument("--sellers", type=int, default=60)
    parser.add_argument(
        "--rates",
        default="100,5000",
        help="Offered loads of the latency phases, events/s, run in this order (highest last: a "
        "phase the worker cannot keep up with ends the run).",
    )
    parser.add_argument("--seconds", type=float, default=20, help="Length of each latency phase.")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=15,
        help="A paced phase before the measured ones, reported apart (0: none).",
    )
    parser.add_argument("--warmup-rate", type=float, default=1000)
    parser.add_argument(
        "--drain-seconds", type=float, default=30, help="How long after a phase's last publish its outputs may take."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Whole rounds, each on a fresh stack; the summary gives the median and min-max of them.",
    )
    parser.add_argument("--profile", action="store_true", help="Add a py-spy pass over our worker to each round.")
    parser.add_argument("--profile-seconds", type=int, default=20)
    parser.add_argument("--keep-profile", type=Path, default=None, help="Copy the last py-spy raw output here.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args()

    rates = [float(rate) for rate in args.rates.split(",")]
    # a warm-up phase first (not reported with the others): each round's broker is a fresh JVM, and its JIT
    # compiles the transaction paths during the first minute of traffic (bench/notes/validation_tail.md)
    planned = ([(args.warmup_rate, args.warmup_seconds)] if args.warmup_seconds > 0 else []) + [
        (rate, args.seconds) for rate in rates
    ]
    print(f"generating {args.events:,} + {sum(int(r * t) for r, t in planned):,} invoices ...", flush=True)
    data: dict[str, Any] = {
        "invoices": interleaved_invoices(args.events, args.sellers, "bench"),
        "phases": [
            (rate, interleaved_invoices(int(rate * seconds), args.sellers, f"paced{n}"))
            for n, (rate, seconds) in enumerate(planned)
        ],
        "warmup_phases": 1 if args.warmup_seconds > 0 else 0,
    }
    data["avro_value_bytes"] = avro_size(data["invoices"][:2000])
    # The invoices above are millions of objects that live until the end: frozen, this process's full
    # collections skip them. Otherwise each one pauses the paced publisher and the watching consumer for
    # hundreds of milliseconds, and that pause shows in the latency charged to the worker.
    gc.collect()
    gc.freeze()
    rounds = []
    for number in range(1, args.rounds + 1):
        result = run_round(number, data, args)
        rounds.append(result)
        gc.collect()  # the round's producers sit in closure cycles: free them before their broker is gone for long
        print_round(number, result)
    conditions = {
        **machine(),
        "events": args.events,
        "sellers": args.sellers,
        "partitions": PARTITIONS,
        "latency_offered_per_s": rates,
        "latency_seconds": args.seconds,
        "latency_drain_seconds": args.drain_seconds,
        "warmup": f"{args.warmup_seconds:g} s at {args.warmup_rate:g}/s before the measured phases, not reported",
        "avro_value_bytes_mean": data["avro_value_bytes"],
        "value_sizes": rounds[0]["value_bytes"],
        "producer": "acks=all, idempotence on, linger.ms=5 (streams.publish.THROUGHPUT + DURABILITY)",
        "workers": "one process each. ours: the validation agent on the transactional engine (librdkafka, batches "
        "of up to 2,000, a transaction per 25 ms); peer: a faust agent, memory store, "
        "broker_commit_every=1000, commit interval 1 s, acks=-1",
        "throughput": "(N-1) / (last - first output record timestamp), N pre-published events",
        "bench_process": "the pre-generated invoices are gc.freeze()d, so the bench's own collector does not pause "
        "its publisher and consumer threads during a phase",
        "latency": "the bench consumer's arrival time of the output (read_committed: ours is visible only once its "
        "transaction commits) minus the bench's wall clock just before publishing the input; "
        "record_timestamp_ms uses the output record's timestamp instead",
    }
    summary = summarize(rounds, ["ours", "peer"], rates, [("ours", "peer")])
    print_summary(summary, {"ours": "ours: streams worker --agents validation", "peer": "peer: faust JSON passthrough"})
    print(json.dumps({"conditions": conditions}, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"conditions": conditions, "summary": summary, "rounds": rounds}, indent=2, default=str) + "\n"
        )


def avro_size(invoices: list[dict[str, Any]]) -> int:
    """Mean Avro value size of these invoices, encoded offline with the schema's native codec."""
    from streams.schemas.codec import AvroCodec  # noqa: PLC0415

    codec = AvroCodec(json.loads((ROOT / "schemas" / "invoice.created.avsc").read_text()), 1)
    return round(statistics.mean(len(codec.encode(inv)) for inv in invoices))


if __name__ == "__main__":
    main()
