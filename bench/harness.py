"""The measuring half of bench/agents.py and bench/user_agents.py: worker processes and what they are judged by.

Owns the output watcher (a read_committed consumer in a thread), the /proc sampler (RSS, CPU), the paced
publisher loop, one path's throughput-then-latency measurement, and the median/spread summary of rounds.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Output:
    """Output records as the bench's consumer sees them: record timestamp, arrival time and matching id."""

    timestamp_ms: int
    received: float
    match: str


class Watch:
    """Consumes the output topic from its current end in a thread; counts the side topics (violations, DLQ)."""

    def __init__(self, bootstrap: str, topic: str, match: Callable[[Any], str], side: tuple[str, ...] = ()) -> None:
        self.topic, self.match = topic, match
        self.outputs: list[Output] = []
        self.side: Counter[str] = Counter()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        assignment = []
        for name in (topic, *side):
            metadata = self.consumer.list_topics(name, timeout=10).topics[name]
            for partition in metadata.partitions:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
                assignment.append(TopicPartition(name, partition, high if high > 0 else OFFSET_BEGINNING))
        self.consumer.assign(assignment)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            # poll() returns on the first record; consume(n, timeout) would wait for n or the whole timeout,
            # adding up to that much to every arrival time
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            for message in [first, *self.consumer.consume(2000, timeout=0)]:
                now = time.time()
                if message.error() is not None:
                    continue
                if message.topic() == self.topic:
                    self.outputs.append(Output(message.timestamp()[1], now, self.match(message)))
                else:
                    self.side[message.topic() or ""] += 1

    def wait_for(self, count: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
        deadline = time.monotonic() + timeout
        while len(self.outputs) < count:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}; log {log}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.outputs)} of {count} outputs after {timeout} s; log {log}:\n{tail(log)}")
            time.sleep(0.05)

    def wait_until(self, count: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> bool:
        """Like wait_for, but False when `timeout` passes first."""
        try:
            self.wait_for(count, process, timeout, log)
        except RuntimeError:
            if process.poll() is not None:
                raise
            return False
        return True

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        self.consumer.close()


@dataclass
class Sampler:
    """RSS and CPU seconds of one process from /proc, every `interval` seconds, in a thread."""

    pid: int
    interval: float = 0.2
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (time, rss bytes, cpu seconds)
    hwm_bytes: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name="sampler", daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(fields["VmRSS"].split()[0]) * 1024
            self.hwm_bytes = int(fields["VmHWM"].split()[0]) * 1024
            self.samples.append((time.time(), rss, (int(stat[11]) + int(stat[12])) / TICK))

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the process used between two wall-clock times (nearest samples outside them)."""
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        return after[0][2] - before[-1][2]

    def peak_rss(self) -> int:
        return max([s[1] for s in self.samples] + [self.hwm_bytes])


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def start_process(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - our scripts
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def paced(
    send: Callable[[int], str], count: int, rate: float, poll: Callable[[], object]
) -> tuple[list[str], list[float], float]:
    """Call send(i) for i in range(count) at `rate` per second; returns ids, wall send times, achieved rate."""
    ids, sent = [""] * count, [0.0] * count
    started = time.perf_counter()
    for i in range(count):
        ahead = started + i / rate - time.perf_counter()
        if ahead > 0.001:  # sleep only when a millisecond ahead: small bursts, no busy wait
            poll()
            time.sleep(ahead)
        sent[i] = time.time()
        ids[i] = send(i)
    achieved = count / (time.perf_counter() - started)
    poll()
    return ids, sent, achieved


def percentile_ms(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p99": round(cuts[98], 1), "max": round(max(values), 1)}


def uptime() -> str:
    """`uptime`'s line (with the load averages), recorded before and after each round."""
    command = shutil.which("uptime")
    if command is None:
        return f"load average: {os.getloadavg()}"
    return subprocess.run([command], capture_output=True, text=True, check=False).stdout.strip()  # noqa: S603


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- one path: throughput, then latency


@dataclass
class Side:
    """How to run and observe one path: the worker command, its output topic, how outputs match inputs."""

    name: str
    command: list[str]
    env: dict[str, str]
    output: str
    match: Callable[[Any], str]
    side: tuple[str, ...]
    send: Callable[[int, int], str]  # publish record i of phase n (measure's phases list); return its published id
    poll: Callable[[], object]  # what it returns is ignored (Producer.poll's count, ...)
    output_id: Callable[[str], str]  # the published id -> the id matched on the output


def measure(
    path: Side,
    bootstrap: str,
    events: int,
    phases: list[tuple[float, int]],
    drain_s: float,
    workdir: Path,
    warmup: int = 0,
) -> dict[str, Any]:
    """Throughput over the pre-published backlog, then each (rate, count) latency phase in order; the first
    `warmup` phases only warm the broker and the worker up (reported apart, under "warmup")."""
    watch = Watch(bootstrap, path.output, path.match, path.side)
    log = workdir / f"{path.name}.log"
    load_before = load()
    launched = time.time()
    process = start_process(path.command, path.env, log)
    sampler = Sampler(process.pid)
    sampler.start()
    latency = []
    try:
        watch.wait_for(events, process, 1800, log)
        produced = watch.outputs[:events]
        first = min(o.timestamp_ms for o in produced) / 1000
        last = max(o.timestamp_ms for o in produced) / 1000
        time.sleep(0.5)
        cpu = sampler.cpu_between(first, last)
        load_mid = load()
        rss_after_throughput = sampler.samples[-1][1]
        expected = events
        for n, (rate, count) in enumerate(phases):
            phase_load = load()

            def send(i: int, n: int = n) -> str:
                return path.send(n, i)

            ids, sent, achieved = paced(send, count, rate, path.poll)
            sent_at = {path.output_id(i): s for i, s in zip(ids, sent, strict=True)}
            expected += count
            drained = watch.wait_until(expected, process, drain_s, log)
            latency.append(latency_of(watch.outputs, sent_at, rate, achieved, count, drained, phase_load))
            if n < warmup:
                latency[-1]["warmup"] = True
            if not drained:
                break  # a backlog left behind would be charged to the next phase
        load_after = load()
    finally:
        sampler.stopped.set()
        stop_process(process)
        watch.close()
    return {
        "events": events,
        "events_per_s": round((events - 1) / (last - first)),
        "seconds_first_to_last_output": round(last - first, 3),
        "seconds_start_to_first_output": round(first - launched, 2),
        "worker_cpu_seconds": round(cpu, 2),
        "events_per_worker_cpu_s": round(events / cpu) if cpu > 0 else None,
        "outputs_total": len(watch.outputs),
        "side_topics": dict(watch.side),
        "latency": [phase for phase in latency if not phase.get("warmup")],
        "warmup": [phase for phase in latency if phase.get("warmup")],
        "peak_rss_mb": round(sampler.peak_rss() / 2**20, 1),
        "rss_after_throughput_mb": round(rss_after_throughput / 2**20, 1),
        "load_avg_before": load_before,
        "load_avg_after_throughput": load_mid,
        "load_avg_after": load_after,
    }


def latency_of(
    outputs: list[Output],
    sent_at: dict[str, float],
    rate: float,
    achieved: float,
    count: int,
    drained: bool,
    phase_load: list[float],
) -> dict[str, Any]:
    by_record, by_arrival = [], []
    for output in outputs:
        at = sent_at.get(output.match)
        if at is not None:
            by_record.append(output.timestamp_ms - at * 1000)
            by_arrival.append((output.received - at) * 1000)
    return {
        "offered_per_s": rate,
        "achieved_offered_per_s": round(achieved),
        "events": count,
        "outputs_within_drain": len(by_record),
        "sustained": drained,
        "record_timestamp_ms": percentile_ms(by_record) if len(by_record) > 1 else None,
        "consumer_arrival_ms": percentile_ms(by_arrival) if len(by_arrival) > 1 else None,
        "load_avg_before": phase_load,
    }


def header_value(message: Any, name: str) -> str:
    for key, value in message.headers() or ():
        if key == name:
            text: str = value.decode()
            return text
    return ""


def produce(producer: Producer, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=[*headers])
            return
        except BufferError:
            producer.poll(0.05)


# ---------------------------------------------------------------- rounds: median and spread


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of one metric over rounds (rounds that lack it are left out)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {
        "median": round(statistics.median(present), 2),
        "min": round(min(present), 2),
        "max": round(max(present), 2),
        "rounds": len(present),
    }


def path_metrics(result: dict[str, Any], rate: float) -> dict[str, float | None]:
    """The per-round numbers of one path that the summary reports: rate, CPU, RSS, latency at `rate`."""
    phase = next((p for p in result["latency"] if p["offered_per_s"] == rate), None)
    arrival = (phase or {}).get("consumer_arrival_ms") or {}
    return {
        "events_per_s": result["events_per_s"],
        "events_per_worker_cpu_s": result["events_per_worker_cpu_s"],
        "peak_rss_mb": result["peak_rss_mb"],
        f"p50_ms_at_{rate:g}": arrival.get("p50"),
        f"p99_ms_at_{rate:g}": arrival.get("p99"),
        f"max_ms_at_{rate:g}": arrival.get("max"),
        f"done_at_{rate:g}": None if phase is None else round(phase["outputs_within_drain"] / phase["events"], 3),
    }


def summarize(
    rounds: list[dict[str, Any]], paths: Sequence[str], rates: Sequence[float], ratios: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Median and spread (min-max) over rounds of each path's metrics and of the per-round ratios."""
    summary: dict[str, Any] = {}
    for name in paths:
        per_round = [{k: v for rate in rates for k, v in path_metrics(r[name], rate).items()} for r in rounds]
        summary[name] = {key: spread([m[key] for m in per_round]) for key in per_round[0]}
    for ours, peer in ratios:
        summary[f"{ours}/{peer}"] = {
            "events_per_s": spread([r[ours]["events_per_s"] / r[peer]["events_per_s"] for r in rounds]),
            "events_per_worker_cpu_s": spread(
                [(r[ours]["events_per_worker_cpu_s"] or 0) / (r[peer]["events_per_worker_cpu_s"] or 1) for r in rounds]
            ),
        }
    return summary


def print_summary(summary: dict[str, Any], labels: dict[str, str]) -> None:
    """One line per path and metric: median [min-max] over the rounds."""
    rounds = next(v["rounds"] for m in summary.values() for v in m.values() if v)
    print(f"\nsummary over {rounds} round(s): median [min - max]")
    for name, metrics in summary.items():
        print(f"  {labels.get(name, name)}")
        for key, value in metrics.items():
            if value is not None:
                print(f"    {key:<26} {value['median']:>12,.2f}  [{value['min']:,.2f} - {value['max']:,.2f}]")
