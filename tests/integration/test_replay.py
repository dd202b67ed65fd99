"""Replay selection against the real broker and registry: time boundaries, pinned ranges, exact filters.

Also the `replay_world` fixture (import `replay_world_fixture`) and `cli` group other test_replay_* use.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.admin import apply_plan, plan_changes
from streams.catalog import load_catalog
from streams.cli import StreamsGroup
from streams.demo.samples import invoice
from streams.publish import EventEncoder
from streams.replay.commands import evidence, replay
from streams.schemas.registry_client import RegistryClient
from streams.settings import KafkaConfig, Settings
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
# 2026-11-01T08:00:00.000Z. Topics keep records forever: with a finite retention the broker could delete
# these fixed, past timestamps in the middle of a test.
T0 = 1_793_520_000_000


@click.group(cls=StreamsGroup)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """The root group as streams.cli builds it, with the replay commands."""
    ctx.obj = Settings()


cli.add_command(replay)
cli.add_command(evidence)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Sent:
    """One produced record, as the broker stored it."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    payload: dict[str, Any] = field(repr=False)


@dataclass
class ReplayWorld:
    """A fresh 3-partition invoice topic with its schema registered, and the means to fill and replay it."""

    bootstrap: str
    registry: str
    topic: str
    tmp: Path
    encoder: EventEncoder
    env: dict[str, str]
    sent: list[Sent] = field(default_factory=list)

    def produce(
        self,
        partition: int,
        timestamp: int,
        seq: int,
        *,
        key: str | None = None,
        tenant: str = "acme",
        event_type: str | None = None,
        seller_vat: str | None = None,
    ) -> Sent:
        """One invoice event with an exact partition and timestamp (a raw producer of encoded bytes)."""
        return self.produce_many(
            [(partition, timestamp, seq)], key=key, tenant=tenant, event_type=event_type, seller_vat=seller_vat
        )[0]

    def produce_many(self, placed: list[tuple[int, int, int]], **options: Any) -> list[Sent]:
        """Invoice events at (partition, timestamp, seq), sent in that order and flushed once."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        delivered: list[Any] = []
        pending = []
        for partition, timestamp, seq in placed:
            payload = invoice(seq, tenant=options.get("tenant", "acme"), seller_vat=options.get("seller_vat"))
            record = self.encoder.encode(
                self.topic, payload, key=options.get("key"), event_type=options.get("event_type"), event_id=f"ev-{seq}"
            )
            headers = [(name, value) for name, value in record.headers if isinstance(value, bytes)]
            producer.produce(
                self.topic,
                value=record.value,
                key=record.key,
                partition=partition,
                timestamp=timestamp,
                headers=list[tuple[str, str | bytes | None]](headers),
                on_delivery=lambda err, msg: delivered.append((err, msg)),
            )
            pending.append((partition, timestamp, record, headers, payload))
        assert producer.flush(30) == 0
        assert all(error is None for error, _ in delivered), delivered
        offsets = sorted((m.partition(), m.offset()) for _, m in delivered)
        sent = []
        by_partition: dict[int, list[int]] = {}
        for partition, offset in offsets:
            by_partition.setdefault(partition, []).append(offset)
        for partition, timestamp, record, headers, payload in pending:  # per partition, offsets follow send order
            offset = by_partition[partition].pop(0)
            sent.append(Sent(partition, offset, timestamp, record.key, record.value, headers, payload))
        self.sent.extend(sent)
        return sent

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.env)

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        return result

    def fails(self, *args: str) -> str:
        """The single error line of a command that must exit 1."""
        result = self.cli(*args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, result.output
        assert "Traceback" not in result.output
        return lines[0]

    def plan(self, *args: str) -> dict[str, Any]:
        """The `--dry-run --output json` report of a replay."""
        report: dict[str, Any] = json.loads(
            self.ok("replay", self.topic, *args, "--dry-run", "--output", "json").output
        )
        return report

    def exported(self, *args: str) -> list[dict[str, Any]]:
        """(Records of) a JSONL export of a replay, in bundle order."""
        directory = self.tmp / f"export-{len(list(self.tmp.glob('export-*')))}"
        self.ok("replay", self.topic, *args, "--export", str(directory), "--format", "jsonl")
        assert self.ok("evidence", "verify", str(directory)).output.startswith(f"OK {directory}")
        lines = (directory / "records.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def read(self, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
        return read_topic(self.bootstrap, topic, expected, timeout)


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-reader", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])
        messages: list[Any] = []
        while len(messages) < expected:
            message = consumer.poll(timeout)
            if message is None:
                break
            assert message.error() is None, message.error()
            messages.append(message)
        extra = consumer.poll(0.5)
        assert extra is None, f"more than {expected} records in {topic}"
        return messages
    finally:
        consumer.close()


@pytest.fixture(name="replay_world")
def replay_world_fixture(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> Iterator[ReplayWorld]:
    topic = unique_name("invoice")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    (tmp_path / "topics.yaml").write_text(f"""
version: 1
defaults: {{partitions: 3, replication_factor: 1, min_insync_replicas: 1, retention: infinite, dlq: false}}
topics:
  {topic}:
    owner: tests
    key: invoice_id
    schema: schemas/invoice.created.avsc
""")
    catalog = load_catalog(tmp_path / "topics.yaml")
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    apply_plan(plan_changes(catalog, config), catalog, config)
    registry = RegistryClient(registry_url)
    registry.register(f"{topic}-value", (tmp_path / "schemas" / "invoice.created.avsc").read_text())
    env = {
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMS_SCHEMA_REGISTRY_URL": registry_url,
        "STREAMS_DATA_DIR": str(tmp_path / ".streams"),
        "STREAMS_CATALOG_PATH": str(tmp_path / "topics.yaml"),
    }
    encoder = EventEncoder(catalog, registry, source="replay-tests")
    yield ReplayWorld(kafka_bootstrap, registry_url, topic, tmp_path, encoder, env)
    registry.close()


def keys(records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(r["partition"], r["offset"]) for r in records]


def test_time_range_is_from_inclusive_to_exclusive_at_the_exact_millisecond(replay_world: ReplayWorld) -> None:
    world = replay_world
    layout = {0: [T0, T0 + 1, T0 + 1, T0 + 2, T0 + 3], 1: [T0 + 1, T0 + 3], 2: [T0 + 2, T0 + 4]}
    seq = 0
    for partition, stamps in layout.items():
        for stamp in stamps:
            world.produce(partition, stamp, seq)
            seq += 1

    plan = world.plan("--from", iso(T0 + 1), "--to", iso(T0 + 3))
    assert plan["plan"]["ranges_arg"] == "0:1-4,1:0-1,2:0-1"
    assert plan["plan"]["from"] == {"ms": T0 + 1, "time": "2026-11-01T08:00:00.001Z"}

    records = world.exported("--from", iso(T0 + 1), "--to", iso(T0 + 3))
    expected = [(s.partition, s.offset) for s in world.sent if T0 + 1 <= s.timestamp < T0 + 3]
    assert keys(records) == sorted(expected) == [(0, 1), (0, 2), (0, 3), (1, 0), (2, 0)]
    assert all(T0 + 1 <= r["timestamp"] < T0 + 3 for r in records)

    only_first_ms = world.exported("--from", iso(T0 + 1), "--to", iso(T0 + 2))
    assert keys(only_first_ms) == [(0, 1), (0, 2), (1, 0)]  # both records of T0+1, none of T0+2
    assert keys(world.exported("--from", iso(T0 + 4))) == [(2, 1)]
    message = world.fails("replay", world.topic, "--from", iso(T0 + 3), "--to", iso(T0 + 3), "--dry-run")
    assert "is not before --to" in message


def test_offsets_pin_per_partition_and_ranges_repeat_exactly(replay_world: ReplayWorld) -> None:
    world = replay_world
    for seq in range(12):
        world.produce(seq % 3, T0 + seq, seq)
    by_offsets = world.plan("--from", "0:1,1:2", "--to", "0:3")["plan"]
    assert by_offsets["ranges_arg"] == "0:1-3,1:2-4"  # unnamed partitions are out; --to defaults to the end

    first = world.ok("replay", world.topic, "--from", iso(T0 + 2), "--export", str(world.tmp / "a"))
    ranges = next(line for line in first.output.splitlines() if "--ranges" in line).split("--ranges ")[1]
    world.produce(0, T0 + 100, 100)  # later data does not change a pinned replay
    world.ok("replay", world.topic, "--ranges", ranges, "--export", str(world.tmp / "b"))
    manifests = [json.loads((world.tmp / d / "manifest.json").read_text()) for d in ("a", "b")]
    assert manifests[0]["merkle_root"] == manifests[1]["merkle_root"]
    assert manifests[0]["counts"]["records"] == 10
    assert manifests[0]["replay_id"] != manifests[1]["replay_id"]
    for name in ("records.sha256", *(f["name"] for f in manifests[0]["records"]["files"])):
        assert (world.tmp / "a" / name).read_bytes() == (world.tmp / "b" / name).read_bytes()
    only = world.plan("--ranges", ranges, "--partition", "1")["plan"]["ranges"]
    assert only == [{"partition": 1, "start": 1, "end": 4}]


def test_key_tenant_type_and_field_filters_are_exact(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce(0, T0, 0, key="inv-1")
    world.produce(0, T0, 1, key="inv-10")
    world.produce(1, T0, 2, key="INV-1")
    world.produce(1, T0, 3, tenant="acme-2")
    world.produce(2, T0, 4, event_type="invoice.created.v2")
    world.produce(2, T0, 5, seller_vat="310000000000003")
    world.produce(2, T0, 6, tenant="globex", seller_vat="300000000000033")

    def hits(*args: str) -> list[int]:
        return sorted(int(r["headers"][1][1]["text"].removeprefix("ev-")) for r in world.exported(*args))

    assert hits("--key", "inv-1") == [0]
    assert hits("--tenant", "acme") == [0, 1, 2, 4, 5]
    assert hits("--tenant", "acme-2") == [3]
    assert hits("--type", "invoice.created.v2") == [4]
    assert hits("--type", world.topic) == [0, 1, 2, 3, 5, 6]
    assert hits("--where", "seller.vat_number=310000000000003") == [5]
    assert hits("--where", "seller.vat_number=300000000000003", "--tenant", "acme") == [0, 1, 2, 4]
    assert hits("--where", "tenant_id=globex") == [6]
    message = world.fails("replay", world.topic, "--where", "seller.vat=1", "--to-topic")
    assert "has no field 'vat'" in message


def test_a_range_partly_beyond_retention_reports_what_was_removed(replay_world: ReplayWorld) -> None:
    world = replay_world
    for seq in range(8):
        world.produce(0, T0 + 1000 * seq, seq)
    admin = AdminClient({"bootstrap.servers": world.bootstrap})
    # What retention does to old segments, done now: the log start moves to offset 3.
    deleted = admin.delete_records([TopicPartition(world.topic, 0, 3)])
    for future in deleted.values():
        future.result(timeout=15)

    message = world.fails("replay", world.topic, "--from", iso(T0), "--export", str(world.tmp / "bundle"))
    assert message == (
        f"error: topic '{world.topic}': the range is partly beyond retention: partition 0: retention "
        "already removed offsets 0-2; the earliest available is offset 3 at "
        f"{iso(T0 + 3000)}; requested from {iso(T0)}"
    )
    assert "retention already removed offsets 0-2" in world.fails("replay", world.topic, "--from", "0:1", "--dry-run")
    assert "retention already removed" in world.fails("replay", world.topic, "--ranges", "0:0-5", "--dry-run")
    assert not (world.tmp / "bundle").exists()
    assert not (world.tmp / "bundle.partial").exists()
    kept = world.plan("--from", iso(T0 + 3500))["plan"]
    assert kept["ranges"][0] == {"partition": 0, "start": 4, "end": 8}
    assert kept["removed_below"] == {"0": 3}
    assert world.plan()["plan"]["ranges"][0]["start"] == 3  # no --from: what is left, no error


def test_bad_selectors_are_one_clear_error_each(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce(0, T0, 0)
    topic = world.topic
    cases = {
        ("replay", "t.nope.u0", "--dry-run"): "unknown topic 't.nope.u0'",
        ("replay", topic, "--from", iso(T0 + 5), "--to", iso(T0), "--dry-run"): "is not before --to",
        ("replay", topic, "--from", "0:1", "--to", "0:0", "--dry-run"): "is after --to",
        ("replay", topic, "--from", "2026-11-01T08:00:00", "--dry-run"): "has no timezone",
        ("replay", topic, "--partition", "7", "--dry-run"): "has partitions 0-2",
        ("replay", topic, "--ranges", "0:0-9", "--dry-run"): "ends at offset 1",
        ("replay", topic): "choose a target",
        ("replay", topic, "--group", "g"): "add --reset",
        ("replay", topic, "--group", "g", "--reset", "--key", "k"): "cannot apply to --group",
        ("replay", topic, "--to-topic", "--export", str(world.tmp / "x")): "choose one target",
        ("replay", topic, "--to-topic", "--id", "Bad Id"): "--id 'Bad Id'",
    }
    for args, expected in cases.items():
        assert expected in world.fails(*args), args
    assert not (world.tmp / "x").exists()
