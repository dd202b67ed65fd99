"""bench/agents: one `streams worker --agents validation` vs a plain faust JSON passthrough agent, same broker.

Each round starts a local stack of its own (Kafka + our registry under a temp data dir, catalog topics and
schemas applied), pre-publishes N valid invoices (Publisher, ~60 sellers) to invoice.created and N JSON
records of the same size, key and headers to a 6-partition peer topic, then for each path: starts one
worker process reading from the beginning, measures events/s from its first output record to its last
(record timestamps), then offers a paced load (default 5,000 events/s for 20 s) and measures the
end-to-end latency from publish to the output's arrival at a read_committed consumer; samples the worker's
RSS and CPU from /proc throughout. `--profile` adds a py-spy pass over a fresh worker and splits its time
into the engine's and our stages.
Run: `python bench/agents.py [--events N] [--rounds 2] [--profile] [--json bench/results/agents.json]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.admin import apply_plan, plan_changes
from streams.agents.zatca import outcome_id
from streams.catalog import load_catalog
from streams.local.kafka import kafka_version
from streams.local.processes import free_port
from streams.local.stack import start_stack, stop_stack
from streams.publish import DURABILITY, THROUGHPUT, Publisher
from streams.samples import invoice_chain
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6
SOURCE, CLEARED = "invoice.created", "invoice.cleared"
PEER_IN, PEER_OUT = "bench.passthrough.in", "bench.passthrough.out"
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- data


def interleaved_invoices(count: int, sellers: int, prefix: str) -> list[dict[str, Any]]:
    """`count` valid invoices from `sellers` sellers, each seller's ICV/hash chain intact, sellers interleaved."""
    per_seller = -(-count // sellers)
    chains = [invoice_chain(per_seller, tenant=f"{prefix}-{n:02d}", seed=n) for n in range(sellers)]
    return [chain[i] for i in range(per_seller) for chain in chains][:count]


def peer_value(record_id: str, invoice: dict[str, Any], size: int) -> bytes:
    """A JSON invoice summary padded to `size` bytes: the peer moves values as large as our Avro ones."""
    doc = {"id": record_id, "invoice_id": invoice["invoice_id"], "tenant_id": invoice["tenant_id"],
           "invoice_number": invoice["invoice_number"], "icv": invoice["icv"],
           "issued_at": invoice["issued_at"].isoformat(), "seller_vat_number": invoice["seller"]["vat_number"],
           "tax_inclusive_total": str(invoice["tax_inclusive_total"]), "vat_total": str(invoice["vat_total"]),
           "currency": invoice["currency"], "memo": ""}
    body = json.dumps(doc, separators=(",", ":"))
    doc["memo"] = "x" * max(0, size - len(body))
    return json.dumps(doc, separators=(",", ":")).encode()


def peer_headers(template: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Our CloudEvents header list with a fresh ce_id: the same names and sizes as the Avro records carry."""
    return [(name, str(uuid.uuid4()).encode() if name == "ce_id" else value) for name, value in template]


# ---------------------------------------------------------------- processes and observation


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
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
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
                    self.side[message.topic()] += 1

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
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603 - our scripts
                                start_new_session=True)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def paced(send: Callable[[int], str], count: int, rate: float,
          poll: Callable[[], None]) -> tuple[list[str], list[float], float]:
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
    send: Callable[[float, int], str]  # publish record i of the phase at this rate; return its published id
    poll: Callable[[], None]
    output_id: Callable[[str], str]  # the published id -> the id matched on the output


def measure(path: Side, bootstrap: str, events: int, phases: list[tuple[float, int]], drain_s: float,
            workdir: Path) -> dict[str, Any]:
    """Throughput over the pre-published backlog, then each (rate, count) latency phase in order."""
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
        for rate, count in phases:
            phase_load = load()
            ids, sent, achieved = paced(lambda i, rate=rate: path.send(rate, i), count, rate, path.poll)
            sent_at = {path.output_id(i): s for i, s in zip(ids, sent, strict=True)}
            expected += count
            drained = watch.wait_until(expected, process, drain_s, log)
            latency.append(latency_of(watch.outputs, sent_at, rate, achieved, count, drained, phase_load))
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
        "latency": latency,
        "peak_rss_mb": round(sampler.peak_rss() / 2**20, 1),
        "rss_after_throughput_mb": round(rss_after_throughput / 2**20, 1),
        "load_avg_before": load_before, "load_avg_after_throughput": load_mid, "load_avg_after": load_after,
    }


def latency_of(outputs: list[Output], sent_at: dict[str, float], rate: float, achieved: float, count: int,
               drained: bool, phase_load: list[float]) -> dict[str, Any]:
    by_record, by_arrival = [], []
    for output in outputs:
        at = sent_at.get(output.match)
        if at is not None:
            by_record.append(output.timestamp_ms - at * 1000)
            by_arrival.append((output.received - at) * 1000)
    return {
        "offered_per_s": rate, "achieved_offered_per_s": round(achieved), "events": count,
        "outputs_within_drain": len(by_record), "sustained": drained,
        "record_timestamp_ms": percentile_ms(by_record) if len(by_record) > 1 else None,
        "consumer_arrival_ms": percentile_ms(by_arrival) if len(by_arrival) > 1 else None,
        "load_avg_before": phase_load,
    }


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
        other = "other threads: faust loop (web, timers), audit, librdkafka callbacks"
    else:
        stages, part = HANDLE_STAGES, frames[handle + 1:]
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
        "samples": total, "rate_hz": rate_hz, "events": events,
        "stages": {k: {"share": round(v / total, 3), "us_per_event": round(v * per_event, 1)}
                   for k, v in stages.most_common()},
        "self_by_package": {k: round(v / total, 3) for k, v in leaf_packages.most_common(12)},
    }


def profile_ours(bootstrap: str, env: dict[str, str], workdir: Path, seconds: int,
                 rate_hz: int) -> dict[str, Any]:
    """A fresh worker (new group: it re-reads invoice.created) under py-spy for `seconds` once it is producing."""
    watch = Watch(bootstrap, CLEARED, lambda m: "")
    log = workdir / "ours-profile.log"
    command = worker_command(f"bench-agents-profile-{uuid.uuid4().hex[:8]}")
    process = start_process(command, env, log)
    raw = workdir / "profile.txt"
    try:
        watch.wait_for(1, process, 300, log)
        started = time.time()
        spy_command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(process.pid),
                       "--rate", str(rate_hz), "--duration", str(seconds), "--format", "raw", "--nonblocking",
                       "--output", str(raw)]
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
    return [sys.executable, "-m", "streams.cli", "worker", "--agents", "validation", "--app-id", app_id,
            "--web-port", str(free_port())]


def header_value(message: Any, name: str) -> str:
    for key, value in message.headers() or ():
        if key == name:
            return value.decode()
    return ""


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
            env = {**os.environ, "STREAMS_DATA_DIR": str(settings.data_dir),
                   "STREAMS_CATALOG_PATH": str(settings.catalog_path)}
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
                produce(raw, PEER_IN, invoice["tenant_id"].encode(), peer_value(f"t-{i}", invoice, size),
                        peer_headers(template))
            raw.flush(120)
            phases = [(rate, len(invoices)) for rate, invoices in data["latency"].items()]
            peer_phase = {rate: [(inv["tenant_id"].encode(), peer_value(f"l{rate:g}-{i}", inv, size))
                                 for i, inv in enumerate(invoices)] for rate, invoices in data["latency"].items()}

            def send_ours(rate: float, i: int) -> str:
                return publisher.publish_nowait(SOURCE, data["latency"][rate][i])

            def send_peer(rate: float, i: int) -> str:
                record_key, record_value = peer_phase[rate][i]
                produce(raw, PEER_IN, record_key, record_value, peer_headers(template))
                return f"l{rate:g}-{i}"

            paths = {
                "ours": Side("ours", worker_command(f"bench-agents-{uuid.uuid4().hex[:8]}"), env, CLEARED,
                             lambda m: header_value(m, "ce_id"), ("compliance.violation", "invoice.created.dlq"),
                             send_ours, lambda: publisher.poll(0),
                             lambda event_id: outcome_id(event_id, "cleared")),
                "peer": Side("peer", [sys.executable, str(ROOT / "bench" / "faust_passthrough.py"), "--broker",
                                      bootstrap, "--app-id", f"bench-passthrough-{uuid.uuid4().hex[:8]}",
                                      "--source", PEER_IN, "--sink", PEER_OUT, "--datadir", str(workdir / "peer")],
                             env, PEER_OUT, lambda m: json.loads(m.value())["id"], (), send_peer,
                             lambda: raw.poll(0), lambda record_id: record_id),
            }
            order = ["ours", "peer"] if number % 2 else ["peer", "ours"]
            results: dict[str, Any] = {}
            for name in order:
                print(f"round {number}: {name} ...", flush=True)
                results[name] = measure(paths[name], bootstrap, len(data["invoices"]), phases, args.drain_seconds,
                                        workdir)
                print(f"  {name}: {results[name]['events_per_s']:,} events/s, latency "
                      f"{[(p['offered_per_s'], p['consumer_arrival_ms']) for p in results[name]['latency']]}, "
                      f"load {load()}", flush=True)
            if args.profile:
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
    results["value_bytes"] = {"avro_invoice_created": len(value), "json_peer": peer_bytes,
                              "key": len(key or b""), "headers": len(template),
                              "header_bytes": sum(len(k) + len(v) for k, v in template)}
    return results


def produce(producer: Producer, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


# ---------------------------------------------------------------- report


def print_round(number: int, result: dict[str, Any]) -> None:
    print(f"\nround {number} (order {' then '.join(result['order'])}; {result['uptime_before']})")
    print(f"{'path':<42} {'events/s':>9} {'ev/CPU-s':>9} {'offered':>8} {'p50 ms':>9} {'p99 ms':>9} {'done':>6} "
          f"{'peak RSS':>9}  load 1m before/after")
    labels = (("ours", "ours: streams worker --agents validation"), ("peer", "peer: faust JSON passthrough"))
    for name, label in labels:
        r = result[name]
        for n, phase in enumerate(r["latency"]):
            lat = phase["consumer_arrival_ms"] or {"p50": float("nan"), "p99": float("nan")}
            head = (f"{label:<42} {r['events_per_s']:>9,} {r['events_per_worker_cpu_s'] or 0:>9,}" if n == 0
                    else " " * 62)
            tail_ = (f" {r['peak_rss_mb']:>7.1f}MB  {r['load_avg_before'][0]}/{r['load_avg_after'][0]}" if n == 0
                     else "")
            done = f"{phase['outputs_within_drain'] / phase['events']:.0%}"
            offered = phase["achieved_offered_per_s"]
            print(f"{head} {offered:>8,} {lat['p50']:>9.1f} {lat['p99']:>9.1f} {done:>6}{tail_}")
    ours, peer = result["ours"], result["peer"]
    cpu_ratio = (ours["events_per_worker_cpu_s"] or 0) / (peer["events_per_worker_cpu_s"] or 1)
    print(f"ours/peer: {result['ratio_events_per_s']:.2f}x events/s, {cpu_ratio:.2f}x events per worker CPU-second "
          "(done: share of the phase's outputs seen within the drain time; below 100% the load was not sustained)")
    if "profile" in result:
        profile = result["profile"]
        print(f"profile of ours ({profile['samples']} samples, {profile['events']:,} events, "
              f"{profile['events_per_s_while_profiled']:,} events/s under py-spy):")
        for label, stage in profile["stages"].items():
            print(f"  {label:<78} {stage['share']:>6.1%} {stage['us_per_event']:>8.1f} us/event")
        print(f"  self time by package: {profile['self_by_package']}")


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    memory = next(line.split(":", 1)[1].strip() for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    import faust  # noqa: PLC0415 - only for its version

    return {"machine": platform.machine(), "cpu": model, "cores": os.cpu_count(), "memory": memory,
            "python": platform.python_version(), "kafka": kafka_version(), "faust_streaming": faust.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="Pre-published events for the throughput phase.")
    parser.add_argument("--sellers", type=int, default=60)
    parser.add_argument("--rates", default="100,5000",
                        help="Offered loads of the latency phases, events/s, run in this order (highest last: a "
                             "phase the worker cannot keep up with ends the run).")
    parser.add_argument("--seconds", type=float, default=20, help="Length of each latency phase.")
    parser.add_argument("--drain-seconds", type=float, default=30,
                        help="How long after a phase's last publish its outputs may take.")
    parser.add_argument("--rounds", type=int, default=2, help="Whole rounds, each on a fresh stack.")
    parser.add_argument("--profile", action="store_true", help="Add a py-spy pass over our worker to each round.")
    parser.add_argument("--profile-seconds", type=int, default=20)
    parser.add_argument("--keep-profile", type=Path, default=None, help="Copy the last py-spy raw output here.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args()

    rates = [float(rate) for rate in args.rates.split(",")]
    latency_events = {rate: int(rate * args.seconds) for rate in rates}
    print(f"generating {args.events:,} + {sum(latency_events.values()):,} invoices ...", flush=True)
    data: dict[str, Any] = {
        "invoices": interleaved_invoices(args.events, args.sellers, "bench"),
        "latency": {rate: interleaved_invoices(count, args.sellers, f"paced{rate:g}")
                    for rate, count in latency_events.items()},
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
        **machine(), "events": args.events, "sellers": args.sellers, "partitions": PARTITIONS,
        "latency_offered_per_s": rates, "latency_seconds": args.seconds, "latency_drain_seconds": args.drain_seconds,
        "avro_value_bytes_mean": data["avro_value_bytes"], "value_sizes": rounds[0]["value_bytes"],
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
    print(json.dumps({"conditions": conditions}, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"conditions": conditions, "rounds": rounds}, indent=2, default=str) + "\n")


def avro_size(invoices: list[dict[str, Any]]) -> int:
    """Mean Avro value size of these invoices, encoded offline with the schema's native codec."""
    from streams.schemas.codec import AvroCodec  # noqa: PLC0415

    codec = AvroCodec(json.loads((ROOT / "schemas" / "invoice.created.avsc").read_text()), 1)
    return round(statistics.mean(len(codec.encode(inv)) for inv in invoices))


if __name__ == "__main__":
    main()
