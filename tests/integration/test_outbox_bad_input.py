"""Bad input at both ends of the outbox: an invalid event never reaches the table; a row Kafka cannot take
is parked with its reason without holding up other rows; a database that goes away pauses the relay."""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from streams.admin import apply_plan, plan_changes
from streams.catalog import Catalog, load_catalog
from streams.cli import main
from streams.demo.samples import invoice
from streams.errors import PublishError
from streams.local.databases import DatabaseServer, start_mariadb, start_postgres
from streams.local.processes import free_port
from streams.outbox import Outbox
from streams.outbox.commands import create_table
from streams.outbox.table import connect
from streams.schemas.registry_client import RegistryClient
from tests.integration.outbox_support import (  # noqa: F401 - fixtures
    World,
    database_fixture,
    header,
    mariadb_fixture,
    pending,
    postgres_fixture,
    read_topic,
    relay_process,
    split,
    world_fixture,
)
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.test_outbox import relay_until_empty

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def commit(conn: object, dsn: str) -> None:
    if dsn.startswith("sqlite"):
        conn.execute("COMMIT")  # type: ignore[attr-defined]
    else:
        conn.commit()  # type: ignore[attr-defined]


def test_an_event_that_fails_its_schema_raises_before_anything_is_written(
    world: World, database: str, request: pytest.FixtureRequest
) -> None:
    dsn, table = split(database)
    outbox = Outbox(world.settings, table=table)
    request.addfinalizer(outbox.close)
    conn = connect(dsn)
    try:
        if dsn.startswith("sqlite"):
            conn.execute("BEGIN")
        good = outbox.add(conn, world.topic, invoice(1, tenant="a"))
        bad = {**invoice(2, tenant="a"), "icv": "not a number"}
        with pytest.raises(PublishError, match="icv"):
            outbox.add(conn, world.topic, bad)
        with pytest.raises(PublishError, match=r"unknown topic 'no\.such\.topic'"):
            outbox.add(conn, "no.such.topic", invoice(3, tenant="a"))
        commit(conn, dsn)  # the service decided to keep its transaction: only the good event is in it
    finally:
        conn.close()
    assert pending(dsn, table) == (1, 0)
    relay_until_empty(world, dsn, table)
    assert [header(m, "ce_id").decode() for m in read_topic(world.settings.bootstrap_servers(), world.topic)] == [good]


def add_second_topic(world: World, doomed: str, kafka_bootstrap: str) -> Catalog:
    """The world's catalog plus topic `doomed` (created, schema registered); the catalog of both."""
    catalog = world.root / "topics.yaml"
    catalog.write_text(
        catalog.read_text()
        + f"""
  {doomed}:
    owner: tests
    key: tenant_id
    schema: schemas/invoice.created.avsc
"""
    )
    both = load_catalog(catalog)
    apply_plan(plan_changes(both, {"bootstrap.servers": kafka_bootstrap}), both, {"bootstrap.servers": kafka_bootstrap})
    with RegistryClient(world.registry) as client:
        client.register(f"{doomed}-value", (world.root / "schemas" / "invoice.created.avsc").read_text())
    return both


@pytest.mark.timeout(300)
def test_rows_kafka_cannot_take_are_parked_with_a_reason_and_hold_up_nothing(
    world: World, database: str, unique_name: Callable[[str], str], kafka_bootstrap: str, request: pytest.FixtureRequest
) -> None:
    dsn, table = split(database)
    doomed = unique_name("doomed")
    both = add_second_topic(world, doomed, kafka_bootstrap)
    outbox = Outbox(world.settings, catalog=both, table=table)
    request.addfinalizer(outbox.close)
    conn = connect(dsn)
    expected: list[str] = []
    try:
        if dsn.startswith("sqlite"):
            conn.execute("BEGIN")
        expected.append(outbox.add(conn, world.topic, invoice(0, tenant="x")))
        to_deleted = outbox.add(conn, doomed, invoice(1, tenant="x"))  # its topic is deleted below
        too_big = outbox.add(conn, world.topic, invoice(2, tenant="x", lines=120))  # over the new size limit
        unknown_schema = outbox.add(conn, world.topic, invoice(3, tenant="y"))  # its schema id is rewritten
        expected += [outbox.add(conn, world.topic, invoice(4 + i, tenant=t)) for i, t in enumerate("xyzxyz")]
        commit(conn, dsn)
        mark = "?" if dsn.startswith("sqlite") else "%s"
        cursor = conn.cursor()
        if dsn.startswith("sqlite"):
            conn.execute("BEGIN")
        cursor.execute(f"SELECT value FROM {table} WHERE event_id = {mark}", (unknown_schema,))  # noqa: S608
        value = bytes(cursor.fetchone()[0])
        cursor.execute(
            f"UPDATE {table} SET value = {mark} WHERE event_id = {mark}",  # noqa: S608
            (value[:1] + (987_654).to_bytes(4, "big") + value[5:], unknown_schema),
        )
        cursor.close()
        commit(conn, dsn)
    finally:
        conn.close()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([doomed])[doomed].result(30)
    admin.incremental_alter_configs(
        [
            ConfigResource(
                ConfigResource.Type.TOPIC,
                world.topic,
                incremental_configs=[
                    ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)
                ],
            )
        ]
    )[ConfigResource(ConfigResource.Type.TOPIC, world.topic)].result(30)

    relay = relay_until_empty(world, dsn, table)
    messages = read_topic(kafka_bootstrap, world.topic)
    listed = CliRunner().invoke(main, ["outbox", "list", "--dsn", dsn, "--table", table, "--parked", "-o", "json"])
    assert sorted(header(m, "ce_id").decode() for m in messages) == sorted(expected)
    assert pending(dsn, table) == (0, 3)
    samples = relay.metrics.registry
    assert samples.get_sample_value("streams_outbox_parked_rows") == 3
    for reason in ("topic_missing", "too_large", "unknown_schema"):
        assert samples.get_sample_value("streams_outbox_parked_total", {"reason": reason}) == 1

    listed = CliRunner().invoke(main, ["outbox", "list", "--dsn", dsn, "--table", table, "--parked", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    reasons = {row["event_id"]: row["reason"] for row in json.loads(listed.output)}
    assert reasons[to_deleted] == f"topic '{doomed}' does not exist on the cluster"
    assert "max.message.bytes 2000" in reasons[too_big]
    assert reasons[unknown_schema] == "schema id 987654 is unknown to the registry"
    shown = CliRunner().invoke(main, ["outbox", "list", "--dsn", dsn, "--table", table, "--parked"])
    assert shown.exit_code == 0
    assert "3)" in shown.output


def metric(port: int, name: str) -> float | None:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_database_that_goes_away_pauses_the_relay_which_resumes_by_itself(
    world: World, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server: DatabaseServer = (start_postgres if kind == "postgresql" else start_mariadb)(tmp_path / kind)
    request.addfinalizer(server.stop)
    create_table(server.dsn)
    outbox = Outbox(world.settings)
    request.addfinalizer(outbox.close)

    def add_committed(count: int, start: int) -> list[str]:
        conn = connect(server.dsn)
        try:
            ids = [outbox.add(conn, world.topic, invoice(start + i, tenant=f"t{i % 4}")) for i in range(count)]
            conn.commit()
            return ids
        finally:
            conn.close()

    port = free_port()
    log = tmp_path / "relay.log"
    relay = relay_process(world, server.dsn, "streams_outbox", log, "--metrics-port", str(port))
    request.addfinalizer(lambda: relay.kill() if relay.poll() is None else None)
    expected = add_committed(50, 0)

    def wait(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 90
        while not condition():
            assert relay.poll() is None, f"the relay exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{what}:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)

    def up() -> float | None:
        try:
            return metric(port, "streams_outbox_database_up")
        except httpx.HTTPError:
            return None

    wait(lambda: pending(server.dsn, "streams_outbox")[0] == 0, "the first batch was not relayed")
    server.stop(remove=False)
    wait(lambda: up() == 0.0, "the relay did not notice the database went away")
    time.sleep(1.0)  # a relay that crashes on a lost database would be gone by now
    assert relay.poll() is None
    server.start()
    expected += add_committed(50, 100)
    wait(lambda: pending(server.dsn, "streams_outbox")[0] == 0, "the relay did not resume")
    assert up() == 1.0
    assert (metric(port, 'streams_outbox_pauses_total{cause="database"}') or 0) >= 1
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    seen = {header(m, "ce_id").decode() for m in read_topic(world.settings.bootstrap_servers(), world.topic)}
    assert seen == set(expected)
