"""Fixtures of the outbox tests: real PostgreSQL and MariaDB servers, a topic with its schema, a relay process.

Test modules import the *_fixture functions (`# noqa: F401`), which registers the fixtures they name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.admin import apply_plan, plan_changes
from streams.catalog import Catalog, load_catalog
from streams.local.databases import DatabaseServer, start_mariadb, start_postgres
from streams.outbox.commands import create_table
from streams.schemas.registry_client import RegistryClient
from streams.settings import KafkaConfig, Settings
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServer]:
    """A real PostgreSQL (the Debian package's binaries) on a free loopback port, for the session."""
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture(scope="session", name="mariadb")
def mariadb_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServer]:
    """A real MariaDB (the Debian package's mariadbd) on a free loopback port, for the session."""
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"], name="database")
def database_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An outbox DSN with a fresh table name per test, on each of the three databases."""
    table = f"outbox_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        dsn = f"sqlite:///{tmp_path / 'service.db'}"
    else:
        server: DatabaseServer = request.getfixturevalue("postgres" if request.param == "postgresql" else "mariadb")
        dsn = server.dsn
    create_table(dsn, table)
    return f"{dsn}#{table}"


def split(database: str) -> tuple[str, str]:
    """(dsn, table) of the `database` fixture's value."""
    dsn, table = database.rsplit("#", 1)
    return dsn, table


@dataclass(frozen=True)
class World:
    catalog: Catalog
    settings: Settings
    topic: str
    registry: str
    root: Path


@pytest.fixture(name="world")
def world_fixture(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> World:
    """A catalog of one fresh invoice topic (3 partitions, keyed by tenant), applied, schema registered."""
    topic = unique_name("outbox")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    (tmp_path / "topics.yaml").write_text(f"""
version: 1
defaults: {{partitions: 3, replication_factor: 1, min_insync_replicas: 1, retention: 1d, dlq: false}}
topics:
  {topic}:
    owner: tests
    key: tenant_id
    schema: schemas/invoice.created.avsc
""")
    catalog = load_catalog(tmp_path / "topics.yaml")
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    apply_plan(plan_changes(catalog, config), catalog, config)
    with RegistryClient(registry_url) as client:
        spec = catalog.topic(topic)
        assert spec.schema_file is not None
        client.register(f"{topic}-value", Path(spec.schema_file).read_text())
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        schema_registry_url=registry_url,
        catalog_path=tmp_path / "topics.yaml",
        data_dir=tmp_path / ".streams",
    )
    return World(catalog, settings, topic, registry_url, tmp_path)


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list[Any]:
    """Every record of `topic`, partition by partition in offset order (stops after `idle_s` of silence)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Any] = []
        seen = dict.fromkeys(partitions, 0)
        while any(seen[p] < ends[p] for p in partitions):
            message = consumer.poll(idle_s)
            if message is None:
                break
            assert message.error() is None, message.error()
            messages.append(message)
            seen[message.partition() or 0] = (message.offset() or 0) + 1
        return sorted(messages, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def header(message: Any, name: str) -> bytes:
    value: bytes = dict(message.headers())[name]
    return value


def relay_process(world: World, dsn: str, table: str, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`streams outbox relay` as a child process of its own, with the world's settings in its environment."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": world.settings.bootstrap_servers(),
        "STREAMS_SCHEMA_REGISTRY_URL": world.registry,
        "STREAMS_CATALOG_PATH": str(world.root / "topics.yaml"),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "outbox", "relay", "--dsn", dsn, "--table", table, *extra],
            env=env,
            cwd=world.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def pending(dsn: str, table: str) -> tuple[int, int]:
    """(pending rows, parked rows) in the outbox table."""
    from streams.outbox.table import Dialect, connect, family_of_dsn  # noqa: PLC0415

    conn = connect(dsn)
    try:
        cursor = conn.cursor()
        cursor.execute(Dialect(family_of_dsn(dsn), table).stats_sql())
        waiting, _, parked = cursor.fetchone()
        cursor.close()
        return int(waiting or 0), int(parked or 0)
    finally:
        conn.close()
