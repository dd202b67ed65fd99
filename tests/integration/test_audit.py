"""The audit chain writer and `streams audit verify/export` on the real broker and our registry.

The chain is read back here with a plain confluent-kafka consumer and fastavro, not with streams' own reader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from fastavro import parse_schema, schemaless_reader

from streams.admin import apply_plan, plan_changes
from streams.agents.audit import AuditChainWriter
from streams.agents.audit_chain import ChainDecoder, ChainEntry, read_jsonl, write_jsonl
from streams.agents.audit_commands import audit
from streams.catalog import load_catalog
from streams.demo.samples import invoice, user_action, workflow_completed
from streams.publish import Publisher
from streams.schemas.registry_client import RegistryClient
from streams.settings import KafkaConfig, Settings
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
GENESIS = "0" * 64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RUN_WRITER = "from streams.agents.audit_commands import audit; audit(prog_name='streams audit')"
Source = tuple[str, int, int]


@dataclass(frozen=True)
class AuditWorld:
    """A catalog of fresh topics (three audited, one not, a chain) applied, with schemas registered."""

    settings: Settings
    chain: str
    actions: str
    workflows: str
    invoices: str
    plain: str
    group: str
    transactional_id: str
    leader_topic: str
    schema_ids: dict[str, int]

    @property
    def audited(self) -> tuple[str, str, str]:
        return self.actions, self.workflows, self.invoices

    def env(self) -> dict[str, str]:
        return {
            "STREAMS_KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers(),
            "STREAMS_SCHEMA_REGISTRY_URL": self.settings.registry_url(),
            "STREAMS_CATALOG_PATH": str(self.settings.catalog_path),
        }

    def writer(self) -> AuditChainWriter:
        catalog = load_catalog(self.settings.catalog_path)
        return AuditChainWriter(
            self.settings,
            catalog,
            chain_topic=self.chain,
            group_id=self.group,
            transactional_id=self.transactional_id,
            leader_topic=self.leader_topic,
        )

    def writer_command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            RUN_WRITER,
            "run",
            "--chain-topic",
            self.chain,
            "--group-id",
            self.group,
            "--transactional-id",
            self.transactional_id,
            "--leader-topic",
            self.leader_topic,
        ]

    def cli(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(audit, list(args), env=self.env())
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output


@pytest.fixture
def audit_world(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> AuditWorld:
    names = {role: unique_name(role) for role in ("actions", "workflows", "invoices", "plain", "chain")}
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    kept = "legal_retention: 1d"  # what the catalog requires of audited topics (Kafka keeps them 1d here)
    (tmp_path / "topics.yaml").write_text(f"""
version: 1
defaults: {{partitions: 3, replication_factor: 1, min_insync_replicas: 1, retention: 1d, dlq: false}}
topics:
  {names["actions"]}: {{owner: tests, key: user_id, schema: schemas/user.action.avsc, audit: true, {kept}}}
  {names["workflows"]}: {{owner: tests, key: workflow_id, schema: schemas/workflow.completed.avsc, audit: true, {kept}}}
  {names["invoices"]}: {{owner: tests, key: tenant_id, schema: schemas/invoice.created.avsc, audit: true, {kept}}}
  {names["plain"]}: {{owner: tests, key: user_id, schema: schemas/user.action.avsc}}
  {names["chain"]}: {{owner: tests, partitions: 1, key: tenant_id, schema: schemas/audit.trail.avsc}}
""")
    catalog = load_catalog(tmp_path / "topics.yaml")
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    apply_plan(plan_changes(catalog, config), catalog, config)
    ids = {}
    with RegistryClient(registry_url) as client:
        for spec in catalog.topics:
            assert spec.schema_file is not None
            ids[spec.name] = client.register(f"{spec.name}-value", Path(spec.schema_file).read_text())
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        schema_registry_url=registry_url,
        catalog_path=tmp_path / "topics.yaml",
        data_dir=tmp_path / ".streams",
    )
    suffix = names["chain"].rsplit(".", 1)[-1]
    return AuditWorld(
        settings,
        names["chain"],
        names["actions"],
        names["workflows"],
        names["invoices"],
        names["plain"],
        f"t.audit-leader.{suffix}",
        f"t.audit-chain.{suffix}",
        f"t.audit-leader.{suffix}",
        ids,
    )


class ChainTail:
    """The committed chain as it grows (read_committed), decoded here with fastavro."""

    def __init__(self, world: AuditWorld) -> None:
        self.topic = world.chain
        self.consumer = Consumer(
            {
                "bootstrap.servers": world.settings.bootstrap_servers(),
                "group.id": "t.tail",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self.consumer.assign([TopicPartition(world.chain, 0, OFFSET_BEGINNING)])
        self.schema = parse_schema(json.loads((ROOT / "schemas" / "audit.trail.avsc").read_text()))
        self.entries: list[dict[str, Any]] = []

    def poll(self, seconds: float = 0.2) -> int:
        for message in self.consumer.consume(5000, seconds):
            assert message.error() is None, message.error()
            value = message.value()
            assert value is not None
            entry = schemaless_reader(io.BytesIO(value[5:]), self.schema, None)
            assert isinstance(entry, dict)
            self.entries.append(entry)
        return len(self.entries)

    def wait_for(self, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the chain has {len(self.entries)} of {count} entries after {timeout}s")
        return len(self.entries)

    def read_to_end(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Everything committed (call once every writer stopped)."""
        partition = TopicPartition(self.topic, 0)
        high = self.consumer.get_watermark_offsets(partition, timeout=10, cached=False)[1]
        deadline = time.monotonic() + timeout
        while self.consumer.position([partition])[0].offset < high:
            self.poll()
            assert time.monotonic() < deadline, f"could not read the chain to its end offset {high}"
        return self.entries

    def close(self) -> None:
        self.consumer.close()


def sources_of(entries: list[dict[str, Any]]) -> list[Source]:
    return [(e["source"]["topic"], e["source"]["partition"], e["source"]["offset"]) for e in entries]


def assert_exactly_once(entries: list[dict[str, Any]], delivered: set[Source]) -> None:
    """One entry per delivered record, none twice, sequences 0..N-1, every link and hash right."""
    sources = sources_of(entries)
    assert len(sources) == len(set(sources)), "a source record was chained twice"
    assert set(sources) == delivered
    assert [e["sequence"] for e in entries] == list(range(len(delivered)))
    previous = GENESIS
    for entry in entries:
        assert entry["previous_entry_hash"] == previous, f"fork at sequence {entry['sequence']}"
        body = {k: v for k, v in entry.items() if k not in {"entry_hash", "checkpoint"}}  # outside the hash
        body["occurred_at"] = (entry["occurred_at"] - EPOCH) // timedelta(milliseconds=1)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert entry["entry_hash"] == hashlib.sha256(canonical).hexdigest()
        previous = entry["entry_hash"]


@pytest.fixture
def writer_thread(audit_world: AuditWorld) -> Iterator[AuditChainWriter]:
    writer = audit_world.writer()
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    yield writer
    stop.set()
    thread.join(20)
    assert not thread.is_alive(), "the writer did not return after stop was set"


def publish_samples(world: AuditWorld, per_topic: int) -> dict[Source, dict[str, Any]]:
    """Publish sample events to the audited topics (and the plain one); what landed where."""
    makers = {world.actions: user_action, world.workflows: workflow_completed, world.invoices: invoice}
    with Publisher(world.settings, source="audit-test") as publisher:
        payloads = [
            (topic, maker(i, tenant=f"tenant-{i % 2}")) for topic, maker in makers.items() for i in range(per_topic)
        ]
        futures = [(topic, payload, publisher.publish(topic, payload)) for topic, payload in payloads]
        publisher.publish(world.plain, user_action(99))
    published = {}
    for topic, payload, future in futures:
        landed = future.result()
        published[(topic, landed.partition, landed.offset)] = {"payload": payload, "event_id": landed.event_id}
    return published


def test_writer_chains_every_audited_event_once_and_verify_passes(
    audit_world: AuditWorld, writer_thread: AuditChainWriter
) -> None:
    world = audit_world
    published = publish_samples(world, per_topic=10)
    garbage = b"\x07 not avro at all"
    producer = Producer({"bootstrap.servers": world.settings.bootstrap_servers()})
    landed: list[Source] = []
    producer.produce(
        world.invoices,
        value=garbage,
        partition=1,
        on_delivery=lambda _e, m: landed.append((m.topic() or "", m.partition() or 0, m.offset() or 0)),
    )
    assert producer.flush(10) == 0
    tail = ChainTail(world)
    try:
        tail.wait_for(31, timeout=60)
        tail.poll(1.0)  # nothing more may come: the plain topic is not audited
        entries = tail.entries
    finally:
        tail.close()
    assert_exactly_once(entries, {*published, *landed})
    by_source = dict(zip(sources_of(entries), entries, strict=True))
    for source, sent in published.items():
        entry, payload = by_source[source], sent["payload"]
        assert (entry["event_id"], entry["event_type"], entry["tenant_id"]) == (
            sent["event_id"],
            source[0],
            payload["tenant_id"],
        )
        expected_actor = {world.actions: payload.get("user_id"), world.workflows: payload.get("actor")}
        assert entry["actor"] == expected_actor.get(source[0])
        assert entry["occurred_at"].tzinfo is not None
    undecodable = by_source[landed[0]]
    assert (undecodable["event_id"], undecodable["actor"], undecodable["tenant_id"]) == (
        f"{landed[0][0]}/1/{landed[0][2]}",
        None,
        "",
    )
    assert undecodable["payload_sha256"] == hashlib.sha256(garbage).hexdigest()
    assert writer_thread.leading
    counted = writer_thread.metrics.registry  # the writer's own registry: nothing is global
    assert counted.get_sample_value("streams_audit_entries_total", {"chain": world.chain}) == 31
    assert counted.get_sample_value("streams_audit_leader", {"chain": world.chain}) == 1

    code, output = world.cli("verify", "--chain-topic", world.chain, "--check-sources", "--output", "json")
    assert code == 0, output
    report = json.loads(output)
    assert (report["ok"], report["entries"], report["tip"]["sequence"], report["first_break"]) == (True, 31, 30, None)
    assert report["sources_checked"]
    assert report["source_problem_counts"] == {}


def test_partitions_added_to_an_audited_topic_are_audited_without_a_restart(audit_world: AuditWorld) -> None:
    world = audit_world
    writer, stop = world.writer(), threading.Event()
    writer.refresh_interval_s = 0.5
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    tail = ChainTail(world)
    try:
        published = publish_samples(world, per_topic=2)
        tail.wait_for(6, timeout=60)
        admin = AdminClient({"bootstrap.servers": world.settings.bootstrap_servers()})
        admin.create_partitions([NewPartitions(world.actions, 4)])[world.actions].result(timeout=30)
        producer = Producer({"bootstrap.servers": world.settings.bootstrap_servers()})
        landed: list[Source] = []
        producer.produce(
            world.actions,
            value=b"late",
            partition=3,
            on_delivery=lambda _e, m: landed.append((m.topic() or "", m.partition() or 0, m.offset() or 0)),
        )
        assert producer.flush(10) == 0
        tail.wait_for(7, timeout=60)
        entries = tail.read_to_end()
    finally:
        tail.close()
        stop.set()
        thread.join(20)
    assert_exactly_once(entries, {*published, *landed})
    assert entries[-1]["source"]["partition"] == 3


def build_chain(world: AuditWorld, per_topic: int) -> int:
    publish_samples(world, per_topic)
    writer, stop = world.writer(), threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    tail = ChainTail(world)
    try:
        return tail.wait_for(3 * per_topic, timeout=60)
    finally:
        tail.close()
        stop.set()
        thread.join(20)


def tampered(source: Path, target: Path, change: Callable[[list[ChainEntry]], list[ChainEntry]]) -> Path:
    entries = [e for e in read_jsonl(source) if isinstance(e, ChainEntry)]
    write_jsonl(target, change(entries))
    return target


def edit(entries: list[ChainEntry]) -> list[ChainEntry]:
    entries[5] = dataclasses.replace(entries[5], actor="mallory")
    return entries


def delete(entries: list[ChainEntry]) -> list[ChainEntry]:
    del entries[9]
    return entries


def insert(entries: list[ChainEntry]) -> list[ChainEntry]:
    forged = dataclasses.replace(
        entries[12], event_id="forged", actor="mallory", previous_entry_hash=entries[11].entry_hash
    ).sealed()
    entries.insert(12, forged)
    return entries


def swap(entries: list[ChainEntry]) -> list[ChainEntry]:
    entries[15], entries[16] = entries[16], entries[15]
    return entries


def test_verify_names_each_kind_of_tampering_in_an_exported_copy(audit_world: AuditWorld, tmp_path: Path) -> None:
    world = audit_world
    assert build_chain(world, per_topic=8) == 24
    exported = tmp_path / "chain.jsonl"
    code, output = world.cli("export", str(exported), "--chain-topic", world.chain)
    assert code == 0, output
    assert "exported 24 entries (sequences 0..23)" in output
    assert world.cli("verify", "--file", str(exported))[0] == 0

    cases = [
        ("edit", edit, "modified", 5, 5),
        ("delete", delete, "deleted", 9, 9),
        ("insert", insert, "inserted", 12, 12),
        ("swap", swap, "reordered", 15, 15),
    ]
    for name, change, kind, sequence, position in cases:
        copy = tampered(exported, tmp_path / f"{name}.jsonl", change)
        code, output = world.cli("verify", "--file", str(copy), "--output", "json")
        assert code == 1, (name, output)
        found = json.loads(output)["first_break"]
        assert (found["kind"], found["sequence"], found["position"]) == (kind, sequence, position), (name, found)
        code, text = world.cli("verify", "--file", str(copy))
        assert code == 1
        assert f"BROKEN at position {position}, sequence {sequence}: {kind}" in text, text


def test_check_sources_catches_a_fully_rehashed_forgery(audit_world: AuditWorld, tmp_path: Path) -> None:
    world = audit_world
    build_chain(world, per_topic=4)
    exported = tmp_path / "chain.jsonl"
    assert world.cli("export", str(exported), "--chain-topic", world.chain)[0] == 0

    def rewrite(entries: list[ChainEntry]) -> list[ChainEntry]:
        """Change a payload hash, append an entry for a record that never existed, rehash everything."""
        entries[3] = dataclasses.replace(entries[3], payload_sha256="0" * 64)
        entries.append(dataclasses.replace(entries[-1], sequence=len(entries), offset=entries[-1].offset + 1000))
        out, previous = [], GENESIS
        for entry in entries:
            out.append(dataclasses.replace(entry, previous_entry_hash=previous).sealed())
            previous = out[-1].entry_hash
        return out

    copy = tampered(exported, tmp_path / "rewritten.jsonl", rewrite)
    code, output = world.cli("verify", "--file", str(copy), "--output", "json")
    assert code == 0, output  # self-consistent: the hash links alone cannot tell
    code, output = world.cli("verify", "--file", str(copy), "--check-sources", "--output", "json")
    assert code == 1, output
    report = json.loads(output)
    assert report["first_break"] is None
    assert report["source_problem_counts"] == {"payload_mismatch": 1, "unknown_source": 1}
    kinds = {p["kind"]: p["sequences"] for p in report["source_problems"]}
    assert kinds == {"payload_mismatch": [3], "unknown_source": [12]}


class WriterProcess:
    """`streams audit run` in a subprocess; logs (JSON lines) go to `log_path`."""

    def __init__(self, world: AuditWorld, log_path: Path) -> None:
        self.world, self.log_path = world, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            **self.world.env(),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"--- start {self.starts} at {datetime.now(UTC).isoformat()}\n")
            log.flush()
            self.process = subprocess.Popen(
                self.world.writer_command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return self.process.returncode

    def incarnation_log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text.rsplit("--- start", 1)[-1]

    def wait_for_event(self, event: str, timeout: float = 60.0) -> None:
        """Until the current incarnation logged `event` (e.g. audit.writer.started)."""
        deadline = time.monotonic() + timeout
        while f'"{event}"' not in self.incarnation_log():
            assert self.process is not None
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no {event} from the writer within {timeout}s"
            time.sleep(0.1)

    def elected_at(self) -> int:
        """The chain's next sequence when the current incarnation last became the writer."""
        lines = [line for line in self.incarnation_log().splitlines() if '"audit.leader.elected"' in line]
        assert lines, "this writer was never elected"
        return int(json.loads(lines[-1])["next_sequence"])

    def leading(self) -> bool:
        """Whether the current incarnation's last leadership event says it writes the chain."""
        state = False
        for line in self.incarnation_log().splitlines():
            if '"audit.leader.elected"' in line:
                state = True
            elif '"audit.leader.stepped_down"' in line:
                state = False
        return state and self.process is not None and self.process.poll() is None


def test_the_checkpoint_field_is_a_compatible_evolution_of_the_chain_schema(
    unique_name: Callable[[str], str],
    registry_url: str,  # noqa: F811
) -> None:
    """audit.trail gained `checkpoint` (optional, default null): the registry takes it under FULL compatibility,
    and an entry written under the schema before it decodes to the same entry, with the same hash."""
    current = json.loads((ROOT / "schemas" / "audit.trail.avsc").read_text())
    before = {**current, "fields": [f for f in current["fields"] if f["name"] != "checkpoint"]}
    assert len(before["fields"]) == len(current["fields"]) - 1
    subject = f"{unique_name('chain')}-value"
    entry = ChainEntry(
        7, "acme", "invoice.created", 2, 41, "e-41", "invoice.created", None, 1_700_000_000_000, "ab" * 32, GENESIS
    ).sealed()
    with RegistryClient(registry_url) as client:
        old_id = client.register(subject, json.dumps(before))
        client.set_compatibility(subject, "FULL")
        compatible, messages = client.test_compatibility(subject, json.dumps(current))
        assert compatible, messages
        new_id = client.register(subject, json.dumps(current))
        assert new_id != old_id
        from streams.schemas.codec import AvroCodec  # noqa: PLC0415

        decoder = ChainDecoder(client)
        old_record = AvroCodec(before, old_id).encode(entry.to_json())
        assert decoder.decode(old_record) == entry
        carried = dataclasses.replace(entry, checkpoint='{"sequence":7}')
        assert decoder.decode(AvroCodec(current, new_id).encode(carried.to_json())) == carried
        assert carried.sealed().entry_hash == entry.entry_hash
