"""CLI error cases that need a live broker: unknown topic on the cluster, undecodable records, internal topics."""

from __future__ import annotations

import json
import shutil
import time
from typing import TYPE_CHECKING

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.admin import plan_changes
from streams.catalog import load_catalog
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.test_cli_errors import REPO, run_streams

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _project(tmp_path: Path) -> Path:
    shutil.copy(REPO / "topics.yaml", tmp_path / "topics.yaml")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    return tmp_path


def _topic_with_records(admin: AdminClient, bootstrap: str, name: str, values: list[bytes]) -> None:
    for future in admin.create_topics([NewTopic(name, 1, 1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(name, value=value)
    assert producer.flush(30) == 0


def test_consuming_a_topic_the_cluster_lacks_is_one_line(
    tmp_path: Path, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("absent")
    result = run_streams(
        f"consume {topic}",
        {"STREAMS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAMS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1"},
        _project(tmp_path),
    )
    assert (result.returncode, result.stderr) == (1, f"error: topic '{topic}' does not exist on the cluster\n")


def test_consume_with_an_unreachable_registry_exits_1_at_the_first_record(
    tmp_path: Path, kafka_bootstrap: str, admin_client: AdminClient, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("avro")
    # Confluent framing: magic byte 0, schema id 1, then the Avro body.
    framed = [b"\x00\x00\x00\x00\x01\x02", b"\x00\x00\x00\x00\x01\x04"]
    _topic_with_records(admin_client, kafka_bootstrap, topic, framed)
    result = run_streams(
        f"consume {topic}",
        {"STREAMS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAMS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1"},
        _project(tmp_path),
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"error: cannot decode '{topic}': cannot reach the schema registry at http://127.0.0.1:1"
    )
    assert len(result.stderr.splitlines()) == 1


def test_consume_prints_undecodable_records_then_exits_1(
    tmp_path: Path,
    kafka_bootstrap: str,
    admin_client: AdminClient,
    unique_name: Callable[[str], str],
    registry_url: str,  # noqa: F811
) -> None:
    topic = unique_name("unknown-schema")
    _topic_with_records(admin_client, kafka_bootstrap, topic, [b"\x00\x00\x0f\x42\x3f\x02", b"not avro at all"])
    result = run_streams(
        f"consume {topic}",
        {"STREAMS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAMS_SCHEMA_REGISTRY_URL": registry_url},
        _project(tmp_path),
    )
    assert result.returncode == 1
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["offset"] for row in printed] == [0, 1]
    assert all(row["error"] and row["value_base64"] for row in printed)  # the bytes are kept for the reader
    assert result.stderr == (
        f"error: 2 of 2 record(s) of '{topic}' could not be decoded (partition:offset 0:0, 0:1);"
        " see their `error` field\n"
    )


def test_replay_of_a_topic_the_cluster_lacks_is_one_line(
    tmp_path: Path, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("absent")
    result = run_streams(
        f"replay {topic} --from -1h --dry-run", {"STREAMS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}, _project(tmp_path)
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert topic in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_is_silent_about_the_platforms_own_topics(
    tmp_path: Path, kafka_bootstrap: str, admin_client: AdminClient, unique_name: Callable[[str], str]
) -> None:
    app = unique_name("app")
    internal = [
        f"{app}-validation-store-changelog",
        f"{app}-audit-leader",
        f"{app}-__assignor-__leader",
        f"{app}.replay.0123456789",
        f"{app}-table-changelog",
    ]
    stray = f"{app}-stray"
    for future in admin_client.create_topics([NewTopic(name, 1, 1) for name in [*internal, stray]]).values():
        future.result(timeout=30)
    (tmp_path / "topics.yaml").write_text(
        "version: 1\ndefaults: {partitions: 1, replication_factor: 1, dlq: false}\n"
        f"topics:\n  {app}-declared: {{owner: tests}}\n"
    )
    # Topic creation reaches the metadata asynchronously: plan once every topic is listed.
    deadline = time.monotonic() + 30
    while not {*internal, stray} <= set(admin_client.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "the created topics never showed in the metadata"
        time.sleep(0.2)
    plan = plan_changes(load_catalog(tmp_path / "topics.yaml"), {"bootstrap.servers": kafka_bootstrap})
    assert [change.topic for change in plan.changes] == [f"{app}-declared"]  # the one create, nothing else
    mentioned = " ".join(plan.notes)
    assert f"'{stray}' exists on the cluster but not in the catalog" in mentioned
    assert not any(name in mentioned for name in internal)
