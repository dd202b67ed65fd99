"""The archive on the real broker: retention of seconds deletes what the archiver (killed -9 three times)
copied, and a replay export over the whole period reads the archive for those offsets and Kafka for the rest.

The bundle made after deletion must equal the one made before it: same records, same bytes, same Merkle root.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader

from streams.admin import apply_plan, plan_changes
from streams.archive.commands import archive
from streams.archive.segments import manifest_name, segment_name
from streams.archive.store import ArchiveStore, LocalStore, ObjectStore
from streams.catalog import load_catalog
from streams.cli import StreamsGroup
from streams.kafka_util import read_all
from streams.local.processes import free_port
from streams.publish import Publisher
from streams.replay.commands import replay
from streams.replay.encoding import RecordEncoder, record_hash
from streams.schemas.registry_client import RegistryClient
from streams.settings import KafkaConfig, Settings
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.s3_fixtures import BUCKET, s3_endpoint  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.local.s3proxy import S3Endpoint

ROOT = Path(__file__).resolve().parents[2]
EVENTS = int(os.environ.get("STREAMS_ARCHIVE_EVENTS", "20000"))
RETENTION_S = 30  # long enough for an archiver restart after kill -9, short enough to wait for


@click.group(cls=StreamsGroup)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """The root group as streams.cli builds it, with the commands used here."""
    ctx.obj = Settings()


cli.add_command(replay)
cli.add_command(archive)


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def low_watermarks(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t.archive.watermarks"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0] for p in range(partitions)]
    finally:
        consumer.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def start_archiver(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "streams.cli",
        "archive",
        "run",
        "--web-port",
        str(free_port()),
        "--commit-interval",
        "0.5",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    process.wait(timeout=60)


def bundle(path: Path) -> tuple[dict[str, Any], list[str]]:
    return json.loads((path / "manifest.json").read_text()), (path / "records.sha256").read_text().splitlines()


@dataclass(frozen=True)
class World:
    topic: str
    settings: Settings
    env: dict[str, str]
    tmp: Path
    store: ArchiveStore  # the archive, opened here (not by the code under test) for tampering


@pytest.fixture(params=["directory", "s3"])
def world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> World:
    """An archived, audited topic whose Kafka retention is seconds, its schema registered, and its archive in
    a local directory or in S3Proxy."""
    topic = unique_name("archived")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    (tmp_path / "topics.yaml").write_text(f"""
version: 1
defaults: {{partitions: 3, replication_factor: 1, min_insync_replicas: 1, dlq: false}}
topics:
  {topic}:
    owner: tests
    key: user_id
    schema: schemas/user.action.avsc
    audit: true
    legal_retention: 6y
    archive: true
    retention: {RETENTION_S}s
    configs: {{segment.ms: "2000"}}     # roll often, so whole segments age out
""")
    catalog = load_catalog(tmp_path / "topics.yaml")
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    apply_plan(plan_changes(catalog, config), catalog, config)
    with RegistryClient(registry_url) as client:
        client.register(f"{topic}-value", (ROOT / "schemas" / "user.action.avsc").read_text())
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        schema_registry_url=registry_url,
        catalog_path=tmp_path / "topics.yaml",
        data_dir=tmp_path / ".streams",
    )
    env = {
        **os.environ,
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMS_SCHEMA_REGISTRY_URL": registry_url,
        "STREAMS_CATALOG_PATH": str(tmp_path / "topics.yaml"),
        "STREAMS_DATA_DIR": str(tmp_path / ".streams"),
        "STREAMS_ARCHIVE_URL": str(tmp_path / "archive"),
    }
    store: ArchiveStore = LocalStore(tmp_path / "archive")
    if request.param == "s3":
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        env |= {**endpoint.environment(), "STREAMS_ARCHIVE_URL": f"s3://{BUCKET}/{topic}"}
        store = ObjectStore(
            f"s3://{BUCKET}/{topic}",
            {
                "key": endpoint.access_key,
                "secret": endpoint.secret_key,
                "client_kwargs": {"endpoint_url": endpoint.url},
            },
        )
    return World(topic, settings, env, tmp_path, store)


def publish_killing_the_archiver(
    world: World,
    archiver: subprocess.Popen[bytes],
    log: Path,
) -> tuple[list[dict[str, Any]], subprocess.Popen[bytes]]:
    """EVENTS user actions in 8 chunks; the archiver is killed -9 (and started again) during three of them."""
    published: list[dict[str, Any]] = []
    chunks = 8
    with Publisher(world.settings, source="web-app") as publisher:
        for n in range(chunks):
            for i in range(n * EVENTS // chunks, (n + 1) * EVENTS // chunks):
                event = {
                    "user_id": f"u{i % 97:02d}",
                    "tenant_id": f"t{i % 5}",
                    "action": "invoice.approve",
                    "resource": f"inv-{i}",
                    "occurred_at": 1_700_000_000_000 + i,
                }
                publisher.publish_nowait(world.topic, event)
                published.append(event)
            sealed = len(manifests(world))
            publisher.flush()
            if n in (1, 3, 5):  # kill -9 while it archives the chunk (it has sealed some of it), then restart
                wait_for(lambda: len(manifests(world)) > sealed, 120, "the archiver to seal a segment")  # noqa: B023
                stop(archiver, signal.SIGKILL)
                archiver = start_archiver(world.env, log)
            time.sleep(1.0)
    return published, archiver


def manifests(world: World, partition: int | None = None) -> list[str]:
    prefix = f"{world.topic}/" if partition is None else f"{world.topic}/{partition:05d}/"
    return sorted(name for name in world.store.list(prefix) if name.endswith(".manifest.json"))


def hash_lines(topic: str, stored: list[Any]) -> list[str]:
    """`partition offset sha256` of each record as Kafka stored it (the evidence bundle's records.sha256)."""
    encoder = RecordEncoder(topic)
    lines = []
    for m in stored:
        prefix = encoder.prefix(m.partition(), m.offset(), m.timestamp()[1], m.key(), m.headers())
        lines.append(f"{m.partition()} {m.offset()} {record_hash(prefix, m.value()).hex()}")
    return sorted(lines)


@pytest.mark.timeout(600)
def test_replay_reads_the_archive_for_what_retention_deleted_across_kill_9(world: World) -> None:
    topic, env, bootstrap = world.topic, world.env, world.env["STREAMS_KAFKA_BOOTSTRAP_SERVERS"]
    log = world.tmp / "archiver.log"
    archiver = start_archiver(env, log)
    try:
        published, archiver = publish_killing_the_archiver(world, archiver, log)
        # The reference, before anything is deleted: the records as Kafka holds them, and a bundle.
        assert low_watermarks(bootstrap, topic, 3) == [0, 0, 0], "retention deleted records too early"
        stored = read_all({"bootstrap.servers": bootstrap}, topic)
        result = run(env, "replay", topic, "--export", str(world.tmp / "before"))
        assert result.exit_code == 0, result.output
        # Kafka deletes the old segments (retention of seconds); the archiver keeps running meanwhile.
        wait_for(
            lambda: all(low > 0 for low in low_watermarks(bootstrap, topic, 3)),
            180,
            "retention to delete segments of every partition",
        )
        deleted = low_watermarks(bootstrap, topic, 3)
        time.sleep(2.0)  # the archiver is far ahead of retention: its last transaction is sealed by now
        result = run(env, "replay", topic, "--export", str(world.tmp / "after"))
        assert result.exit_code == 0, result.output
    finally:
        stop(archiver)
    manifest_before, hashes_before = bundle(world.tmp / "before")
    manifest_after, hashes_after = bundle(world.tmp / "after")
    assert manifest_before["counts"]["records"] == manifest_after["counts"]["records"] == EVENTS
    assert "from_archive" not in json.dumps(manifest_before["counts"])
    assert manifest_after["merkle_root"] == manifest_before["merkle_root"]
    assert hashes_after == hashes_before  # every record: same partition, offset and SHA-256
    for partition, low in enumerate(deleted):
        sources = manifest_after["counts"]["by_partition"][str(partition)]
        assert sources["from_archive"][0] == 0
        assert sources["from_archive"][1] >= low  # Kafka no longer had these: they came from the archive
        assert sources["from_kafka"][1] == sources["end"]
    # the bundle's records are the bytes Kafka stored (key, headers, timestamp, value), and the events sent
    assert sorted(hashes_after) == hash_lines(topic, stored)
    schema = parse_schema(json.loads((ROOT / "schemas" / "user.action.avsc").read_text()))
    sent = [schemaless_reader(io.BytesIO((m.value() or b"")[5:]), schema) for m in stored]
    assert sorted(e["resource"] for e in sent if isinstance(e, dict)) == sorted(e["resource"] for e in published)
    verified = run(env, "archive", "verify", "--output", "json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.output)
    assert report["ok"] is True
    assert report["records"] == EVENTS  # archived from the first offset: nothing lost, nothing twice
    assert log.read_text().count("engine.started") == 4  # the first run and three restarts after kill -9
    tamper_and_verify(world)


def tamper_and_verify(world: World) -> None:
    """A bit flipped in one segment, another segment deleted, a third's manifest edited: verify names each."""
    segments = manifests(world, 0)
    assert len(segments) >= 4, segments
    offsets = [int(name.rsplit("/", 1)[1].split(".")[0]) for name in segments]
    flipped, deleted, edited = offsets[0], offsets[1], offsets[-2]
    data = bytearray(world.store.get(segment_name(world.topic, 0, flipped)))
    data[-17] ^= 0x01  # the last byte of the segment's last record (before the 16-byte sync marker)
    world.store.put(segment_name(world.topic, 0, flipped), bytes(data))
    world.store.delete(segment_name(world.topic, 0, deleted))
    world.store.delete(manifest_name(world.topic, 0, deleted))
    manifest = json.loads(world.store.get(manifest_name(world.topic, 0, edited)))
    manifest["count"] -= 1  # pretend a record was never there
    manifest["records"].pop()
    world.store.put(manifest_name(world.topic, 0, edited), json.dumps(manifest).encode())
    result = run(world.env, "archive", "verify", "--output", "json")
    assert result.exit_code == 1, result.output
    problems = json.loads(result.output)["problems"]
    at = f"{world.topic} partition 0"
    file = segment_name(world.topic, 0, flipped)
    assert f"{at}: segment {flipped}: the file {file} differs from the SHA-256 in its manifest" in problems
    assert any(p.startswith(f"{at}: segment {flipped}: record at offset ") and "altered" in p for p in problems)
    assert any(p.startswith(f"{at}: offsets {deleted}-") and "(a segment was deleted)" in p for p in problems)
    link = f"segment {offsets[-1]} links a different one"
    assert f"{at}: manifest of segment {edited} was edited or replaced ({link})" in problems
    assert f"{at}: segment {edited}: manifest edited: its Merkle root does not match its record hashes" in problems
