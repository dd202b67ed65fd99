"""bench/user_agents: a user's windowed count (60 s tumbling, per user_id) in ours, Quix Streams and faust, one run.

Each round starts a local stack of its own (Kafka + our registry, bench/catalog/topics.yaml applied: 6
partitions), publishes the same N user.action events (Avro, Confluent wire format, our Publisher) to one
input topic per path, then for each path in turn: starts one worker process reading from the beginning,
measures events/s from its first output to its last (the broker's LogAppendTime of the outputs), then offers
a paced load (default 5,000 events/s for 20 s) and measures publish -> output arrival at a read_committed
consumer; samples the worker's RSS and CPU from /proc. Every path emits the current count per event; the
bench checks each user's counts run 1, 2, 3, ... per window, with no output missing or doubled.
Paths: ours (`streams worker --app bench.apps.velocity:app`, exactly-once), quix (bench/quix_velocity.py
in a virtualenv of its own: quixstreams pins confluent-kafka < 2.13), faust (bench/faust_velocity.py).
Run: `python bench/user_agents.py [--events N] [--rounds 3] [--paths ours,quix,faust] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
from harness import Side, load, measure, print_summary, summarize, uptime

from streams.admin import apply_plan, plan_changes
from streams.catalog import load_catalog
from streams.local.kafka import kafka_version
from streams.local.processes import free_port
from streams.local.stack import start_stack, stop_stack
from streams.publish import Publisher
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "bench" / "catalog" / "topics.yaml"
OUTPUT_SCHEMA = ROOT / "bench" / "catalog" / "user.velocity.avsc"
QUIX_VERSION = "3.28.1"
QUIX_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streams" / "bench-quix-venv"
ACTIONS = ["invoice.approve", "invoice.view", "invoice.export", "login", "report.download", "user.invite"]


@dataclass(frozen=True)
class PathSpec:
    """One path's topics and how its row is labelled."""

    source: str
    sink: str
    label: str


PATHS = {
    "ours": PathSpec("user.action", "bench.velocity.ours", "ours: streams worker --app bench.apps.velocity:app"),
    "quix": PathSpec("bench.user.action.quix", "bench.velocity.quix", f"quix: quixstreams {QUIX_VERSION}, EOS"),
    "faust": PathSpec("bench.user.action.faust", "bench.velocity.faust", "faust: faust-streaming Table, tumbling"),
}


# ---------------------------------------------------------------- data


def user_actions(count: int, users: int, rng: random.Random) -> list[dict[str, Any]]:
    """`count` user.action payloads from `users` users picked uniformly at random."""
    now = datetime.now(UTC)
    return [
        {
            "user_id": f"user-{rng.randrange(users):05d}",
            "tenant_id": f"tenant-{rng.randrange(20):02d}",
            "action": rng.choice(ACTIONS),
            "resource": f"invoice/{rng.randrange(10**6):06d}",
            "ip_address": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench",
            "occurred_at": now,
        }
        for _ in range(count)
    ]


def sequence_ids(actions: list[dict[str, Any]], seen: Counter[str]) -> list[str]:
    """Each action's id as the outputs are matched: `<user>#<n>`, the user's n-th event on this input so far.

    Outputs are keyed by user_id and each user's events stay in one partition, in order, so a user's n-th
    output (at a read_committed consumer, exactly once) answers the user's n-th input."""
    ids = []
    for action in actions:
        seen[action["user_id"]] += 1
        ids.append(f"{action['user_id']}#{seen[action['user_id']]}")
    return ids


class OutputCheck:
    """Matches outputs to inputs by per-user sequence and keeps the values to check the counts afterwards."""

    def __init__(self) -> None:
        self.seen: Counter[bytes] = Counter()
        self.values: list[tuple[bytes, bytes]] = []

    def match(self, message: Any) -> str:
        key = message.key() or b""
        self.seen[key] += 1
        self.values.append((key, message.value()))
        return f"{key.decode()}#{self.seen[key]}"

    def verify(self, expected_per_user: Counter[str]) -> dict[str, Any]:
        """Per user, in output order: count is the previous + 1 in the same window, or 1 in a new one."""
        schema = fastavro.parse_schema(json.loads(OUTPUT_SCHEMA.read_text()))
        last: dict[str, tuple[int, int]] = {}
        bad: list[str] = []
        for key, value in self.values:
            record: Any = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)
            user = record["user_id"]
            window, count = record["window_start_ms"], record["count"]
            previous = last.get(user)
            expected = previous[1] + 1 if previous is not None and previous[0] == window else 1
            if count != expected or user != key.decode():
                bad.append(f"{user}: count {count} in window {window}, expected {expected}")
            last[user] = (window, count)
        got = Counter({k.decode(): v for k, v in self.seen.items()})
        return {
            "outputs": len(self.values),
            "count_errors": len(bad),
            "first_errors": bad[:3],
            "users_with_outputs_missing": sum(1 for u, n in expected_per_user.items() if got[u] < n),
            "users_with_outputs_extra": sum(1 for u, n in got.items() if n > expected_per_user[u]),
        }


# ---------------------------------------------------------------- the peers' processes


def quix_python(version: str) -> Path:
    """The Quix virtualenv's python, created (python -m venv, pip install quixstreams) on first use."""
    python = QUIX_VENV / "bin" / "python"
    probe = [str(python), "-c", "import quixstreams, fastavro; print(quixstreams.__version__)"]
    if (
        python.exists()
        and subprocess.run(  # noqa: S603 - our venv
            probe,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        == version
    ):
        return python
    print(f"creating {QUIX_VENV} with quixstreams {version} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)  # noqa: S603
    subprocess.run(  # noqa: S603
        [str(python), "-m", "pip", "install", "-q", f"quixstreams[avro]=={version}"],
        check=True,
    )
    return python


def commands(names: list[str], settings: Settings, workdir: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    bootstrap, registry, run = settings.bootstrap_servers(), settings.registry_url(), uuid.uuid4().hex[:8]
    out: dict[str, list[str]] = {}
    if "ours" in names:
        out["ours"] = [
            sys.executable,
            "-m",
            "streams.cli",
            "worker",
            "--app",
            args.ours_app,
            "--web-port",
            str(free_port()),
        ]
    if "quix" in names:
        out["quix"] = [
            str(quix_python(args.quix_version)),
            str(ROOT / "bench" / "quix_velocity.py"),
            "--broker",
            bootstrap,
            "--registry",
            registry,
            "--group",
            f"bench-quix-{run}",
            "--source",
            PATHS["quix"].source,
            "--sink",
            PATHS["quix"].sink,
            "--state-dir",
            str(workdir / "quix-state"),
            "--schema",
            str(OUTPUT_SCHEMA),
        ]
        if args.quix_commit_interval is not None:
            out["quix"] += ["--commit-interval", str(args.quix_commit_interval)]
    if "faust" in names:
        out["faust"] = [
            sys.executable,
            str(ROOT / "bench" / "faust_velocity.py"),
            "--broker",
            bootstrap,
            "--registry",
            registry,
            "--app-id",
            f"bench-faust-velocity-{run}",
            "--source",
            PATHS["faust"].source,
            "--sink",
            PATHS["faust"].sink,
            "--datadir",
            str(workdir / "faust"),
        ]
    return out


# ---------------------------------------------------------------- a round


def prepare_stack(data_dir: Path) -> Settings:
    """Kafka and our registry, bench/catalog/topics.yaml's topics and schemas applied."""
    start_stack(data_dir, with_redis=False, catalog=CATALOG)
    settings = Settings(data_dir=data_dir, catalog_path=CATALOG)
    catalog = load_catalog(settings.catalog_path)
    config = settings.kafka_config(settings.bootstrap_servers())
    apply_plan(plan_changes(catalog, config), catalog, config)
    with RegistryClient(settings.registry_url()) as client:
        apply_schemas(catalog, client)
    return settings


def run_round(number: int, names: list[str], data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    uptime_before = uptime()
    results: dict[str, Any] = {}
    order = names[number % len(names) :] + names[: number % len(names)]  # each path goes first in turn
    with tempfile.TemporaryDirectory(prefix="bench-user-agents-") as temp:
        workdir = Path(temp)
        settings = prepare_stack(workdir / "data")
        try:
            bootstrap = settings.bootstrap_servers()
            env = {
                **os.environ,
                "STREAMS_DATA_DIR": str(settings.data_dir),
                "STREAMS_CATALOG_PATH": str(settings.catalog_path),
                "PYTHONPATH": str(ROOT),
                "PYTHONWARNINGS": "ignore",
                "BENCH_VELOCITY_SINK": PATHS["ours"].sink,
            }
            publisher = Publisher(settings, source="web-app")
            started = time.perf_counter()
            for name in names:
                for action in data["backlog"]:
                    publisher.publish_nowait(PATHS[name].source, action)
            publisher.flush(120)
            publish_s = time.perf_counter() - started
            phases = [(rate, len(actions)) for rate, actions in data["phases"]]
            command = commands(names, settings, workdir, args)
            for name in order:
                spec, check = PATHS[name], OutputCheck()

                def send(n: int, i: int, source: str = spec.source) -> str:
                    publisher.publish_nowait(source, data["phases"][n][1][i])
                    return str(data["phase_ids"][n][i])

                side = Side(
                    name,
                    command[name],
                    env,
                    spec.sink,
                    check.match,
                    (),
                    send,
                    lambda: publisher.poll(0),
                    lambda event_id: event_id,
                )
                print(f"round {number}: {name} ...", flush=True)
                results[name] = measure(
                    side,
                    bootstrap,
                    len(data["backlog"]),
                    phases,
                    args.drain_seconds,
                    workdir,
                    warmup=data["warmup_phases"],
                )
                results[name]["check"] = check.verify(data["expected_per_user"])
                r = results[name]
                print(
                    f"  {name}: {r['events_per_s']:,} events/s, latency "
                    f"{[(p['offered_per_s'], p['consumer_arrival_ms']) for p in r['latency']]}, check {r['check']}, "
                    f"load {load()}",
                    flush=True,
                )
            publisher.close()
        finally:
            stop_stack(settings.data_dir)
    results["order"], results["uptime_before"], results["uptime_after"] = order, uptime_before, uptime()
    results["publish_events_per_s"] = round(len(names) * len(data["backlog"]) / publish_s)
    return results


# ---------------------------------------------------------------- report


def ratios(names: list[str]) -> list[tuple[str, str]]:
    return [("ours", peer) for peer in ("quix", "faust") if "ours" in names and peer in names]


def print_round(number: int, names: list[str], result: dict[str, Any]) -> None:
    print(f"\nround {number} (order {' then '.join(result['order'])}; {result['uptime_before']})")
    print(
        f"{'path':<54} {'events/s':>9} {'ev/CPU-s':>9} {'offered':>8} {'p50 ms':>9} {'p99 ms':>9} {'done':>6} "
        f"{'peak RSS':>9}  counts  load 1m before/after"
    )
    for name in names:
        r = result[name]
        for n, phase in enumerate(r["latency"]):
            lat = phase["consumer_arrival_ms"] or {"p50": float("nan"), "p99": float("nan")}
            head = (
                f"{PATHS[name].label:<54} {r['events_per_s']:>9,} {r['events_per_worker_cpu_s'] or 0:>9,}"
                if n == 0
                else " " * 74
            )
            ok = "ok" if not (r["check"]["count_errors"] or r["check"]["users_with_outputs_extra"]) else "WRONG"
            tail = (
                f" {r['peak_rss_mb']:>7.1f}MB  {ok:<6}  {r['load_avg_before'][0]}/{r['load_avg_after'][0]}"
                if n == 0
                else ""
            )
            done = f"{phase['outputs_within_drain'] / phase['events']:.0%}"
            print(f"{head} {phase['achieved_offered_per_s']:>8,} {lat['p50']:>9.1f} {lat['p99']:>9.1f} {done:>6}{tail}")
    for ours, peer in ratios(names):
        o, p = result[ours], result[peer]
        cpu = (o["events_per_worker_cpu_s"] or 0) / (p["events_per_worker_cpu_s"] or 1)
        print(
            f"{ours}/{peer}: {o['events_per_s'] / p['events_per_s']:.2f}x events/s, {cpu:.2f}x events per worker "
            "CPU-second"
        )


def print_targets(summary: dict[str, Any], rates: list[float]) -> None:
    """Issue 13's targets against the medians: ours >= 2x quix and >= 5x faust events/s, p99 < 50 ms at 5k/s."""
    checks = [
        (f"ours/{peer} events/s", summary.get(f"ours/{peer}", {}).get("events_per_s"), floor, ">=")
        for peer, floor in (("quix", 2.0), ("faust", 5.0))
    ]
    if 5000.0 in rates and "ours" in summary:
        checks.append(("ours p99 ms at 5000/s", summary["ours"].get("p99_ms_at_5000"), 50.0, "<"))
    print("targets (median of the rounds):")
    for label, value, bound, sense in checks:
        if value is None:
            continue
        met = value["median"] >= bound if sense == ">=" else value["median"] < bound
        print(
            f"  {label:<24} {value['median']:>9,.2f} (spread {value['min']:,.2f} - {value['max']:,.2f}), "
            f"target {sense} {bound:g}: {'met' if met else 'NOT met'}"
        )


def versions(names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    import faust  # noqa: PLC0415 - only for its version

    commit = subprocess.run(  # noqa: S603 - git
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    return {
        "machine": platform.machine(),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kafka": kafka_version(),
        "streams_commit": commit,
        "faust_streaming": faust.__version__,
        "quixstreams": args.quix_version if "quix" in names else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000, help="Pre-published events for the throughput phase.")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", default="5000", help="Offered loads of the latency phases, events/s, in order.")
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
    parser.add_argument("--rounds", type=int, default=3, help="Whole rounds, each on a fresh stack.")
    parser.add_argument("--paths", default="ours,quix,faust", help="Comma-separated subset of ours,quix,faust.")
    parser.add_argument("--ours-app", default="bench.apps.velocity:app", help="What `streams worker --app` hosts.")
    parser.add_argument("--quix-version", default=QUIX_VERSION)
    parser.add_argument(
        "--quix-commit-interval",
        type=float,
        default=None,
        help="Quix's commit_interval in seconds; unset: its default (5 s).",
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args()
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    if not names or set(names) - set(PATHS):
        parser.error(f"--paths: choose from {', '.join(PATHS)}")

    rng = random.Random(args.seed)
    rates = [float(rate) for rate in args.rates.split(",")]
    seen: Counter[str] = Counter()
    backlog = user_actions(args.events, args.users, rng)
    sequence_ids(backlog, seen)
    # a warm-up phase first, reported apart: each round's broker is a fresh JVM whose JIT is still compiling
    # the transaction paths in the first minute (bench/notes/validation_tail.md)
    planned = ([(args.warmup_rate, args.warmup_seconds)] if args.warmup_seconds > 0 else []) + [
        (rate, args.seconds) for rate in rates
    ]
    data: dict[str, Any] = {
        "backlog": backlog,
        "phases": [],
        "phase_ids": [],
        "warmup_phases": 1 if args.warmup_seconds > 0 else 0,
    }
    for rate, seconds in planned:
        data["phases"].append((rate, user_actions(int(rate * seconds), args.users, rng)))
        data["phase_ids"].append(sequence_ids(data["phases"][-1][1], seen))
    data["expected_per_user"] = seen
    # as bench/agents.py: the pre-generated events live to the end, so this process's collector skips them
    gc.collect()
    gc.freeze()
    rounds = []
    for number in range(1, args.rounds + 1):
        result = run_round(number, names, data, args)
        rounds.append(result)
        gc.collect()
        print_round(number, names, result)
    summary = summarize(rounds, names, rates, ratios(names))
    print_summary(summary, {name: PATHS[name].label for name in names})
    print_targets(summary, rates)
    conditions = {
        **versions(names, args),
        "events": args.events,
        "users": args.users,
        "partitions": 6,
        "latency_offered_per_s": rates,
        "latency_seconds": args.seconds,
        "latency_drain_seconds": args.drain_seconds,
        "warmup": f"{args.warmup_seconds:g} s at {args.warmup_rate:g}/s before the measured phases, not reported",
        "input": "user.action Avro (schemas/user.action.avsc), Confluent wire format + CloudEvents headers, "
        "published by streams.publish.Publisher (acks=all, idempotent, linger 5 ms), keyed by user_id",
        "logic": "per event: count += 1 in the user's 60 s tumbling window (record timestamp), emit "
        "{user_id, window_start_ms, count} as Avro keyed by user_id",
        "ours": f"`streams worker --app {args.ours_app}`: exactly-once (transactional engine)",
        "quix": f"quixstreams {args.quix_version}: processing_guarantee=exactly-once, RocksDB state + changelog, "
        f"commit_interval {args.quix_commit_interval or 'default (5 s)'}, Avro via its schema-registry "
        "serializers (confluent-kafka 2.12 AvroSerializer/AvroDeserializer on our registry)",
        "faust": "faust-streaming: at-least-once (its default), memory store + changelog, commit every 1,000 "
        "events or 1 s, Avro via fastavro on our registry's wire format (bench/faust_velocity.py)",
        "throughput": "(N-1) / (last - first output's LogAppendTime), N pre-published events",
        "latency": "the bench consumer's (read_committed) arrival time of the output minus the bench's wall clock "
        "just before publishing the input; an exactly-once path's output is visible once its "
        "transaction commits",
    }
    print(json.dumps({"conditions": conditions}, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"conditions": conditions, "summary": summary, "rounds": rounds}, indent=2, default=str) + "\n"
        )


if __name__ == "__main__":
    main()
