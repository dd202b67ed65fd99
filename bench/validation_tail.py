"""bench/validation_tail: where the validation worker's p99 latency comes from (issue 13), on a stack of its own.

For each offered rate it measures, in one run: the floor (the bench's own publisher -> broker ->
read_committed consumer, no worker), then `streams worker --agents validation` under probes
(bench/probe_worker.py: its GC pauses, each transaction commit and each processed slice), splitting each
event's latency into publish -> output produced (the output's CreateTime) and produced -> visible to the
read_committed consumer (the commit), with the CPU of the worker, the broker and this process, the
machine's busy share, and the broker JVM's GC time (jstat). The slowest 1% of events are then matched
against what overlapped them: a worker GC pause, a slow commit, a slow slice.
Run: `python bench/validation_tail.py [--rates 100,1000,5000] [--seconds 20] [--commit-intervals 0.025,0.1]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from agents import CLEARED, SOURCE, interleaved_invoices, prepare_stack
from harness import Output, Sampler, Watch, header_value, paced, percentile_ms, start_process, stop_process, uptime

from streams.agents.zatca import outcome_id
from streams.local.processes import free_port
from streams.local.stack import running_stack, stop_stack
from streams.publish import Publisher

ROOT = Path(__file__).resolve().parents[1]


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def jvm_gc_seconds(pid: int) -> tuple[int, float]:
    """(collections, seconds) the broker's JVM spent in GC so far, from `jstat -gc` (0, 0 without jstat)."""
    jstat = shutil.which("jstat")
    if jstat is None:
        return 0, 0.0
    out = subprocess.run([jstat, "-gc", str(pid)], capture_output=True, text=True, check=False).stdout.split()  # noqa: S603
    half = len(out) // 2
    row = dict(zip(out[:half], out[half:], strict=True))
    count = sum(int(float(row.get(name, "0") or 0)) for name in ("YGC", "FGC", "CGC"))
    return count, float(row.get("GCT", "0") or 0)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread name of a process (the broker's: request handlers, replica fetchers, ...)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return out


def top_delta(before: dict[str, float], after: dict[str, float], n: int = 5) -> dict[str, float]:
    deltas = sorted(((v - before.get(k, 0.0), k) for k, v in after.items()), reverse=True)[:n]
    return {k: round(v, 2) for v, k in deltas if v > 0}


def stats_ms(values: list[float]) -> dict[str, float] | None:
    return percentile_ms(values) if len(values) > 1 else None


class Phase:
    """One paced phase: publish at `rate`, watch the outputs, and record what the machine did meanwhile."""

    def __init__(
        self,
        publisher: Publisher,
        watch: Watch,
        invoices: list[dict[str, Any]],
        rate: float,
        to_output: Any,
        samplers: dict[str, Sampler],
        broker_pid: int,
    ) -> None:
        self.publisher, self.watch, self.invoices, self.rate = publisher, watch, invoices, rate
        self.to_output, self.samplers, self.broker_pid = to_output, samplers, broker_pid

    def run(self, drain_s: float) -> dict[str, Any]:
        before_outputs = len(self.watch.outputs)
        busy0, cpu0, gc0, own0 = busy_jiffies(), time.time(), jvm_gc_seconds(self.broker_pid), os.times()
        threads0 = thread_cpu(self.broker_pid)
        ids, sent, achieved = paced(
            lambda i: self.publisher.publish_nowait(SOURCE, self.invoices[i]),
            len(self.invoices),
            self.rate,
            lambda: self.publisher.poll(0),
        )
        deadline = time.monotonic() + drain_s
        while len(self.watch.outputs) - before_outputs < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = time.time()
        busy1, gc1, own1 = busy_jiffies(), jvm_gc_seconds(self.broker_pid), os.times()
        broker_threads = top_delta(threads0, thread_cpu(self.broker_pid))
        sent_at = {self.to_output(i): s for i, s in zip(ids, sent, strict=True)}
        matched = [(sent_at[o.match], o) for o in self.watch.outputs[before_outputs:] if o.match in sent_at]
        e2e = [(o.received - s) * 1000 for s, o in matched]
        cpu_s = {name: round(sampler.cpu_between(cpu0, ended), 2) for name, sampler in self.samplers.items()}
        own_cpu = (own1.user + own1.system) - (own0.user + own0.system)
        return {
            "offered_per_s": self.rate,
            "achieved_per_s": round(achieved),
            "events": len(ids),
            "matched": len(matched),
            "e2e_ms": stats_ms(e2e),
            "publish_to_produced_ms": stats_ms([o.timestamp_ms - s * 1000 for s, o in matched]),
            "produced_to_visible_ms": stats_ms([o.received * 1000 - o.timestamp_ms for _, o in matched]),
            "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
            "cpu_seconds": {**cpu_s, "bench": round(own_cpu, 2)},
            "seconds": round(ended - cpu0, 1),
            "broker_gc": {"collections": gc1[0] - gc0[0], "seconds": round(gc1[1] - gc0[1], 3)},
            "broker_threads_cpu_s": broker_threads,
            "_matched": matched,
        }


def attribute(phase: dict[str, Any], probes: list[list[Any]]) -> dict[str, Any]:
    """What overlapped the slowest 1% of the phase's events (each event's span: publish to arrival)."""
    matched: list[tuple[float, Output]] = phase.pop("_matched")
    if len(matched) < 100:
        return {}
    e2e = sorted(((o.received - s) * 1000, s, o.received) for s, o in matched)
    slow = e2e[-max(1, len(e2e) // 100) :]
    start, end = matched[0][0], max(o.received for _, o in matched)
    window = [p for p in probes if start - 1 <= p[1] <= end]
    gc_pauses = [p for p in window if p[0] == "gc"]
    commits = [p[2] * 1000 for p in window if p[0] == "commit"]
    slices = [p[2] * 1000 for p in window if p[0] == "process"]

    def overlapping(kind: str, min_ms: float) -> float:
        spans = [(p[1], p[1] + p[2]) for p in window if p[0] == kind and p[2] * 1000 >= min_ms]
        hit = sum(1 for _, s, r in slow if any(a < r and b > s for a, b in spans))
        return round(hit / len(slow), 2)

    buckets = {int(s * 10) for _, s, _ in slow}  # 100 ms buckets of publish time: few = stalls, many = spread
    return {
        "slowest_1pct": {
            "events": len(slow),
            "from_ms": round(slow[0][0], 1),
            "distinct_100ms_publish_buckets": len(buckets),
        },
        "worker_gc": {
            "pauses": len(gc_pauses),
            "gen2": sum(1 for p in gc_pauses if p[3] == 2),
            "max_ms": round(max((p[2] for p in gc_pauses), default=0) * 1000, 1),
            "total_ms": round(sum(p[2] for p in gc_pauses) * 1000, 1),
        },
        "commits": {"count": len(commits), **(stats_ms(commits) or {})},
        "slices": {
            "count": len(slices),
            **(stats_ms(slices) or {}),
            "records_mean": round(statistics.mean([p[3] for p in window if p[0] == "process"] or [0]), 1),
        },
        "share_of_slowest_overlapping": {
            "worker_gc_ge_5ms": overlapping("gc", 5),
            "commit_ge_30ms": overlapping("commit", 30),
            "slice_ge_30ms": overlapping("process", 30),
        },
    }


def read_probes(path: Path) -> list[list[Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_worker(
    interval: float,
    warm: int,
    batches: list[list[dict[str, Any]]],
    rates: list[float],
    settings: Any,
    broker: Sampler,
    broker_pid: int,
    publisher: Publisher,
    workdir: Path,
    drain_s: float,
) -> list[dict[str, Any]]:
    """One validation worker under probes, with this engine commit interval: a phase per rate."""
    log, probe_log = workdir / f"worker-{interval}.log", workdir / f"probe-{interval}.jsonl"
    env = {
        **os.environ,
        "STREAMS_DATA_DIR": str(settings.data_dir),
        "STREAMS_CATALOG_PATH": str(settings.catalog_path),
        "BENCH_PROBE_LOG": str(probe_log),
        "BENCH_COMMIT_INTERVAL": str(interval),
        "PYTHONWARNINGS": "ignore",
    }
    command = [
        sys.executable,
        str(ROOT / "bench" / "probe_worker.py"),
        "worker",
        "--agents",
        "validation",
        "--app-id",
        f"bench-tail-{uuid.uuid4().hex[:8]}",
        "--web-port",
        str(free_port()),
    ]
    watch = Watch(settings.bootstrap_servers(), CLEARED, lambda m: header_value(m, "ce_id"))
    process = start_process(command, env, log)
    worker = Sampler(process.pid)
    worker.start()
    phases = []
    try:
        watch.wait_for(warm, process, 600, log)
        time.sleep(1.0)
        for rate, batch in zip(rates, batches, strict=True):
            phase = Phase(
                publisher,
                watch,
                batch,
                rate,
                lambda event_id: outcome_id(event_id, "cleared"),
                {"broker": broker, "worker": worker},
                broker_pid,
            ).run(drain_s)
            time.sleep(1.5)  # the probe log is flushed once a second
            phase["attribution"] = attribute(phase, read_probes(probe_log))
            phases.append(phase)
            print(
                f"worker {interval * 1000:g} ms {rate:>6g}/s: {phase['e2e_ms']}  produced "
                f"{phase['publish_to_produced_ms']}  visible {phase['produced_to_visible_ms']}  "
                f"busy {phase['machine_busy']:.0%} cpu {phase['cpu_seconds']} broker gc "
                f"{phase['broker_gc']}\n    broker threads {phase['broker_threads_cpu_s']}\n    "
                f"{json.dumps(phase['attribution'])}",
                flush=True,
            )
    finally:
        worker.stopped.set()
        stop_process(process)
        watch.close()
    # the whole run's probes, warm-up included: shows the probes work (the engine's start collects once)
    totals = Counter(str(p[0]) if p[0] != "gc" else f"gc gen{p[3]}" for p in read_probes(probe_log))
    print(f"worker {interval * 1000:g} ms: probes over the whole run {dict(totals)}", flush=True)
    return phases


def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    per_phase = {rate: int(rate * args.seconds) for rate in rates}
    total = sum(per_phase[rate] for rate in rates)  # a rate may come back later in the list
    intervals = [float(x) for x in args.commit_intervals.split(",")]
    invoices = interleaved_invoices(total * (1 + len(intervals)) + 400, 60, "tail")
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {"uptime_before": uptime(), "rates": rates, "seconds": args.seconds, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-tail-") as temp:
        workdir = Path(temp)
        settings = prepare_stack(workdir / "data")
        try:
            state = running_stack(settings.data_dir)
            broker_pid = state.services["kafka"].pid if state is not None else 0
            bootstrap = settings.bootstrap_servers()
            publisher = Publisher(settings, source="billing-api")
            cursor = 0

            def take(count: int) -> list[dict[str, Any]]:
                nonlocal cursor
                cursor += count
                return invoices[cursor - count : cursor]

            broker = Sampler(broker_pid)
            broker.start()
            # the floor: our publisher -> broker -> the bench's read_committed consumer, no worker at all
            watch = Watch(bootstrap, SOURCE, lambda m: header_value(m, "ce_id"))
            floor = []
            for rate in rates:
                phase = Phase(
                    publisher, watch, take(per_phase[rate]), rate, lambda i: i, {"broker": broker}, broker_pid
                ).run(args.drain_seconds)
                phase.pop("_matched")
                floor.append(phase)
                print(
                    f"floor   {rate:>6g}/s: {phase['e2e_ms']}  busy {phase['machine_busy']:.0%} "
                    f"cpu {phase['cpu_seconds']} broker threads {phase['broker_threads_cpu_s']}",
                    flush=True,
                )
            watch.close()
            out["runs"]["floor"] = floor
            for interval in intervals:
                warm = cursor  # the worker reads invoice.created from the start: all published so far warms it
                out["runs"][f"worker commit {interval * 1000:g} ms"] = run_worker(
                    interval,
                    warm,
                    [take(per_phase[rate]) for rate in rates],
                    rates,
                    settings,
                    broker,
                    broker_pid,
                    publisher,
                    workdir,
                    args.drain_seconds,
                )
            broker.stopped.set()
            publisher.close()
        finally:
            stop_stack(settings.data_dir)
    out["uptime_after"] = uptime()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,1000,5000")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--drain-seconds", type=float, default=20)
    parser.add_argument("--commit-intervals", default="0.025", help="Engine commit intervals to try, seconds.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args)
    print(f"{result['uptime_before']} -> {result['uptime_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
