"""The relay kill -9'd mid-run on SQLite, PostgreSQL and MariaDB: nothing lost, nothing rolled back leaks out,
commit order per key, and duplicates only of event ids (counted and reported)."""

from __future__ import annotations

import random
import signal
import time
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.demo.samples import invoice
from streams.outbox import Outbox
from streams.outbox.table import connect
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

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

TRANSACTIONS = 1_000
PER_TRANSACTION = 10  # 10k events
KEYS = 20
KILL_AT = (250, 500, 750)  # transactions committed when the relay is kill -9'd


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def wait_for_progress(world: World, relay: subprocess.Popen[bytes], since: int, log: Path) -> int:
    """Until the relay has published something past `since` records; the topic's end offsets then."""
    deadline = time.monotonic() + 90
    while (now := end_offsets(world.settings.bootstrap_servers(), world.topic)) <= since:
        assert relay.poll() is None, f"the relay exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the relay published nothing:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)
    return now


def write_and_kill(
    world: World,
    outbox: Outbox,
    dsn: str,
    table: str,
    log: Path,
    relays: list[subprocess.Popen[bytes]],
    arguments: tuple[str, ...],
) -> tuple[subprocess.Popen[bytes], dict[str, list[str]], set[str]]:
    """Add the events (one writer, so commit order is add order) and kill -9 the relay at KILL_AT.

    Returns the running relay, the committed event ids per key in commit order, the rolled-back ids.
    """
    relay = relays[-1]
    rng = random.Random(16)
    by_key: dict[str, list[str]] = {}  # committed event ids per key, in commit order
    rolled_back: set[str] = set()
    sqlite = dsn.startswith("sqlite")
    conn = connect(dsn)
    published = kills = 0
    try:
        for number in range(TRANSACTIONS):
            if number in KILL_AT:
                published = wait_for_progress(world, relay, published, log)
                relay.send_signal(signal.SIGKILL)
                relay.wait(10)
                kills += 1
                relay = relay_process(world, dsn, table, log, *arguments)
                relays.append(relay)
            if sqlite:
                conn.execute("BEGIN")
            added = []
            for _ in range(PER_TRANSACTION):
                tenant = f"k{rng.randrange(KEYS)}"
                added.append((tenant, outbox.add(conn, world.topic, invoice(number, tenant=tenant))))
            if rng.random() < 0.1:
                conn.execute("ROLLBACK") if sqlite else conn.rollback()
                rolled_back.update(event_id for _, event_id in added)
            else:
                conn.execute("COMMIT") if sqlite else conn.commit()
                for tenant, event_id in added:
                    by_key.setdefault(tenant, []).append(event_id)
    finally:
        conn.close()
    assert kills == 3
    return relay, by_key, rolled_back


@pytest.mark.timeout(900)
def test_relay_killed_three_times_loses_nothing_and_keeps_commit_order_per_key(
    world: World, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn, table = split(database)
    log = tmp_path / "relay.log"
    outbox = Outbox(world.settings, source="erp", table=table)
    request.addfinalizer(outbox.close)
    # A stable name: a restarted relay takes over the SQLite lease of its killed self at once.
    arguments = ("--name", "relay-under-test", "--batch-size", "500")
    relays = [relay_process(world, dsn, table, log, *arguments)]
    request.addfinalizer(lambda: kill_all(relays))
    relay, by_key, rolled_back = write_and_kill(world, outbox, dsn, table, log, relays, arguments)
    deadline = time.monotonic() + 180
    while pending(dsn, table)[0] > 0:
        assert relay.poll() is None, f"the relay exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the outbox did not drain:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(30) == 0, log.read_text()[-3000:]

    committed = {event_id for ids in by_key.values() for event_id in ids}
    assert 0 < len(rolled_back) < TRANSACTIONS * PER_TRANSACTION // 5
    messages = read_topic(world.settings.bootstrap_servers(), world.topic)
    seen = [header(m, "ce_id").decode() for m in messages]
    assert set(seen) == committed, f"{len(committed - set(seen))} committed events missing"
    assert not set(seen) & rolled_back
    for tenant, ids in by_key.items():
        first_seen = list(dict.fromkeys(header(m, "ce_id").decode() for m in messages if m.key() == tenant.encode()))
        assert first_seen == ids, f"key {tenant}: Kafka's order (deduplicated by ce_id) is not commit order"
    duplicates = len(seen) - len(set(seen))
    request.node.user_properties.append(("duplicates", duplicates))
    print(  # noqa: T201
        f"\n{dsn.split(':', 1)[0]}: {len(committed)} committed, {len(rolled_back)} rolled back, "
        f"3 kills, {duplicates} duplicate records (same ce_id)"
    )
    assert pending(dsn, table) == (0, 0)


def kill_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()


@pytest.mark.timeout(600)
def test_several_relays_share_one_database_without_reordering_a_key(
    world: World, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn, table = split(database)
    outbox = Outbox(world.settings, table=table)
    request.addfinalizer(outbox.close)
    logs = [tmp_path / f"relay-{i}.log" for i in range(3)]
    relays = [relay_process(world, dsn, table, log, "--batch-size", "200") for log in logs]
    request.addfinalizer(lambda: kill_all(relays))
    by_key: dict[str, list[str]] = {}
    conn = connect(dsn)
    try:
        for number in range(300):
            if dsn.startswith("sqlite"):
                conn.execute("BEGIN")
            for i in range(10):
                tenant = f"k{(number + i) % 12}"
                by_key.setdefault(tenant, []).append(outbox.add(conn, world.topic, invoice(number, tenant=tenant)))
            conn.execute("COMMIT") if dsn.startswith("sqlite") else conn.commit()
            if number % 50 == 0:
                time.sleep(0.2)  # let the relays catch up now and then, so each cycle is small
    finally:
        conn.close()
    deadline = time.monotonic() + 120
    while pending(dsn, table)[0] > 0:
        assert time.monotonic() < deadline, "the relays did not drain the outbox"
        time.sleep(0.2)
    published = []
    for process, log in zip(relays, logs, strict=True):
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()[-3000:]
        line = next(line for line in log.read_text().splitlines() if line.startswith("relay stopped: "))
        published.append(int(line.split()[2]))
    messages = read_topic(world.settings.bootstrap_servers(), world.topic)
    assert {header(m, "ce_id").decode() for m in messages} == {i for ids in by_key.values() for i in ids}
    for tenant, ids in by_key.items():
        order = list(dict.fromkeys(header(m, "ce_id").decode() for m in messages if m.key() == tenant.encode()))
        assert order == ids, f"key {tenant} reordered"
    assert sum(published) >= 3000
    if not dsn.startswith("sqlite"):  # SQLite's lease admits one relay at a time; the others stand by
        assert sum(1 for count in published if count > 0) >= 2, published
    print(f"\n{dsn.split(':', 1)[0]}: published per relay {published}")  # noqa: T201


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_transactions_adding_one_key_serialize_so_id_order_is_commit_order(
    world: World, kind: str, request: pytest.FixtureRequest
) -> None:
    from streams.outbox.commands import create_table  # noqa: PLC0415

    server = request.getfixturevalue(kind)
    create_table(server.dsn, "locks_outbox")
    outbox = Outbox(world.settings, table="locks_outbox")
    request.addfinalizer(outbox.close)
    first, second = connect(server.dsn), connect(server.dsn)
    try:
        cursor = second.cursor()
        if kind == "postgres":
            cursor.execute("SET lock_timeout = '300ms'")
        else:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cursor.close()
        second.commit()
        outbox.add(first, world.topic, invoice(1, tenant="same"))  # holds the key until it commits
        with pytest.raises(Exception, match=r"(?i)lock") as refused:  # each driver has its own class
            outbox.add(second, world.topic, invoice(2, tenant="same"))
        assert type(refused.value).__module__.split(".")[0] in {"psycopg", "pymysql"}
        second.rollback()
        outbox.add(second, world.topic, invoice(3, tenant="other"))  # another key does not wait
        second.commit()
        first.commit()
        outbox.add(second, world.topic, invoice(2, tenant="same"))  # now it may
        second.commit()
    finally:
        first.close()
        second.close()
    assert pending(server.dsn, "locks_outbox") == (3, 0)
