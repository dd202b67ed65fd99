"""The outbox end to end on real SQLite, PostgreSQL and MariaDB: add in a transaction, relay, read from Kafka."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import sqlalchemy
from click.testing import CliRunner
from sqlalchemy.orm import Session

from streams.cli import main
from streams.demo.samples import invoice
from streams.local.databases import DatabaseServer
from streams.outbox import Outbox
from streams.outbox.commands import create_table
from streams.outbox.relay import Relay, RelayOptions
from streams.outbox.table import connect
from streams.publish import EventEncoder
from streams.schemas.registry_client import RegistryClient
from tests.integration.outbox_support import (  # noqa: F401 - fixtures
    World,
    database_fixture,
    header,
    mariadb_fixture,
    pending,
    postgres_fixture,
    read_topic,
    split,
    world_fixture,
)
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path


def relay_until_empty(world: World, dsn: str, table: str, timeout: float = 60.0) -> Relay:
    """Run a relay in this process until the outbox is empty; returns it (its metrics, counts)."""
    relay = Relay(RelayOptions(dsn=dsn, table=table, batch_size=500), world.settings)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while pending(dsn, table)[0] > 0:
            assert time.monotonic() < deadline, "the relay did not empty the outbox"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(30)
    return relay


def test_add_encodes_as_the_publisher_and_the_relay_publishes_committed_rows_only(
    world: World, database: str, request: pytest.FixtureRequest
) -> None:
    dsn, table = split(database)
    outbox = Outbox(world.settings, source="erp", table=table)
    request.addfinalizer(outbox.close)
    moment, trace = datetime(2026, 11, 5, 9, 30, tzinfo=UTC), f"00-{'a' * 32}-{'b' * 16}-01"
    committed = [invoice(i, tenant=f"t{i % 3}") for i in range(30)]
    rolled_back = [invoice(100 + i, tenant="t0") for i in range(5)]
    conn = connect(dsn)
    try:
        if dsn.startswith("sqlite"):
            conn.execute("BEGIN")
        ids = [outbox.add(conn, world.topic, event, time_=moment, traceparent=trace) for event in committed]
        conn.commit() if not dsn.startswith("sqlite") else conn.execute("COMMIT")
        if dsn.startswith("sqlite"):
            conn.execute("BEGIN")
        lost = [outbox.add(conn, world.topic, event) for event in rolled_back]
        conn.rollback() if not dsn.startswith("sqlite") else conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert pending(dsn, table) == (30, 0)

    relay = relay_until_empty(world, dsn, table)
    messages = read_topic(world.settings.bootstrap_servers(), world.topic)
    assert sorted(header(m, "ce_id").decode() for m in messages) == sorted(ids)
    assert not {header(m, "ce_id").decode() for m in messages} & set(lost)
    # Byte for byte what the publisher's encoder makes of the same event, id and time.
    with RegistryClient(world.registry) as registry:
        encoder = EventEncoder(world.catalog, registry, source="erp")
        by_id = {m.headers()[1][1].decode(): m for m in messages}
        for event_id, event in zip(ids, committed, strict=True):
            key, value, headers, _ = encoder.build(
                world.topic, event, event_id=event_id, time_=moment, traceparent=trace
            )
            message = by_id[event_id]
            assert (message.key(), message.value(), message.headers()) == (key, value, headers)
    # Per key, in the order added (one writer: commit order).
    for tenant in ("t0", "t1", "t2"):
        order = [header(m, "ce_id").decode() for m in messages if m.key() == tenant.encode()]
        assert order == [i for i, e in zip(ids, committed, strict=True) if e["tenant_id"] == tenant]
    assert relay.metrics.registry.get_sample_value("streams_outbox_relayed_total", {"topic": world.topic}) == 30
    assert relay.metrics.registry.get_sample_value("streams_outbox_commit_to_kafka_seconds_count") == 30
    assert relay.metrics.registry.get_sample_value("streams_outbox_pending_rows") == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sqlalchemy_connection_and_session_join_the_service_transaction(
    world: World, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        dsn = f"sqlite:///{tmp_path / 'orm.db'}"
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'orm.db'}")
    else:
        dsn = request.getfixturevalue("postgres").dsn
        engine = sqlalchemy.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    table = "orm_outbox"
    create_table(dsn, table)
    outbox = Outbox(world.settings, table=table)
    request.addfinalizer(outbox.close)
    invoices = sqlalchemy.Table(
        "invoices_" + backend, sqlalchemy.MetaData(), sqlalchemy.Column("id", sqlalchemy.String(64), primary_key=True)
    )
    invoices.metadata.create_all(engine)
    kept, dropped = invoice(1, tenant="core"), invoice(2, tenant="core")
    with engine.begin() as connection:  # Core: commits
        connection.execute(invoices.insert().values(id=kept["invoice_id"]))
        core_id = outbox.add(connection, world.topic, kept)

    def fail_after_adding() -> None:
        with engine.begin() as connection:  # Core: rolls back
            connection.execute(invoices.insert().values(id=dropped["invoice_id"]))
            outbox.add(connection, world.topic, dropped)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_after_adding()
    with Session(engine) as session:  # ORM: commits
        session.execute(invoices.insert().values(id="orm-1"))
        orm_id = outbox.add(session, world.topic, invoice(3, tenant="orm"))
        session.commit()
    with Session(engine) as session:  # ORM: rolls back
        outbox.add(session, world.topic, invoice(4, tenant="orm"))
        session.rollback()
    engine.dispose()
    assert pending(dsn, table) == (2, 0)
    relay_until_empty(world, dsn, table)
    messages = read_topic(world.settings.bootstrap_servers(), world.topic)
    assert sorted(header(m, "ce_id").decode() for m in messages) == sorted([core_id, orm_id])


def test_init_prints_ddl_and_creates_the_table(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(main, ["outbox", "init", "--dsn", "postgresql://erp@db/erp", "--print"])
    assert printed.exit_code == 0, printed.output
    assert "CREATE TABLE IF NOT EXISTS streams_outbox (" in printed.output
    assert "FOR UPDATE" not in printed.output
    dsn = f"sqlite:///{tmp_path / 'x.db'}"
    for _ in range(2):  # idempotent
        created = runner.invoke(main, ["outbox", "init", "--dsn", dsn])
        assert created.exit_code == 0, created.output
    assert pending(dsn, "streams_outbox") == (0, 0)
    bad = runner.invoke(main, ["outbox", "init", "--dsn", "oracle://x/y"])
    assert bad.exit_code == 1
    assert bad.output.startswith("error: outbox DSN 'oracle://x/y': expected sqlite:///")
    missing = runner.invoke(main, ["outbox", "relay", "--dsn", dsn, "--table", "nope"])
    assert missing.exit_code == 1
    assert missing.output == (
        f"error: cannot read outbox table nope in {dsn}: no such table: nope "
        "(create it with `streams outbox init --dsn ...`)\n"
    )


def test_the_demo_erp_step_commits_invoices_and_relays_their_events(world: World) -> None:
    from streams.demo.outbox import erp_through_outbox  # noqa: PLC0415

    invoices = [invoice(i, tenant=f"s{i % 2}") for i in range(12)]
    said = erp_through_outbox(world.settings, world.catalog, invoices, topic=world.topic)
    assert "12 invoices committed" in said
    assert "the relay published 12" in said
    assert "parked 0" in said
    messages = read_topic(world.settings.bootstrap_servers(), world.topic)
    assert len(messages) == 12
    conn = connect(f"sqlite:///{world.settings.data_dir / 'erp' / 'erp.db'}")
    try:
        stored = {row[0] for row in conn.execute("SELECT invoice_id FROM invoices")}
    finally:
        conn.close()
    assert stored == {event["invoice_id"] for event in invoices}


def test_django_connection_inside_atomic_is_the_documented_helper(
    world: World, postgres: DatabaseServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import django  # noqa: PLC0415 - Django is a test dependency only
    from django.conf import settings as django_settings  # noqa: PLC0415

    sqlite_path = tmp_path / "django.db"
    port = postgres.dsn.rsplit(":", 1)[1].split("/")[0]
    if not django_settings.configured:
        django_settings.configure(
            INSTALLED_APPS=[],
            USE_TZ=True,
            DATABASES={
                "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(sqlite_path)},
                "pg": {
                    "ENGINE": "django.db.backends.postgresql",
                    "HOST": "127.0.0.1",
                    "PORT": port,
                    "NAME": "streams",
                    "USER": "postgres",
                },
            },
        )
        django.setup()
    from django.db import connections, transaction  # noqa: PLC0415

    request.addfinalizer(connections.close_all)
    outbox = Outbox(world.settings, table="django_outbox")
    request.addfinalizer(outbox.close)
    kept: list[str] = []
    for alias, dsn in (("default", f"sqlite:///{django_settings.DATABASES['default']['NAME']}"), ("pg", postgres.dsn)):
        create_table(dsn, "django_outbox")
        with transaction.atomic(using=alias):
            kept.append(outbox.add(connections[alias], world.topic, invoice(1, tenant=alias)))

        def fail(alias: str = alias) -> None:
            with transaction.atomic(using=alias):
                outbox.add(connections[alias], world.topic, invoice(2, tenant=alias))
                raise RuntimeError

        with pytest.raises(RuntimeError):
            fail()
        assert pending(dsn, "django_outbox") == (1, 0)
        relay_until_empty(world, dsn, "django_outbox")
    assert sorted(
        header(m, "ce_id").decode() for m in read_topic(world.settings.bootstrap_servers(), world.topic)
    ) == sorted(kept)
