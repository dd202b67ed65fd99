"""A webhooks test world: its own topic (compliance.violation's schema), a catalog whose `webhooks:` section
posts to a receiver on loopback, the registry's schema, the runner as a child process, and readers."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from streams.admin import apply_plan, plan_changes
from streams.catalog import Catalog, load_catalog
from streams.publish import Publisher
from streams.schemas.registry_client import RegistryClient
from streams.settings import KafkaConfig, Settings
from tests.bridge.harness import ROOT, Proc, read_topic

SECRET_NAME = "partner"  # noqa: S105 - the name a route refers to, not a secret
SECRET = "whsec_" + base64.b64encode(b"integration-test-secret-32-bytes").decode()


@dataclass
class HooksWorld:
    directory: Path
    catalog_path: Path
    bootstrap: str
    registry: str
    topic: str
    group: str
    processes: list[Proc] = field(default_factory=list)

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"

    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_path)

    def settings(self) -> Settings:
        return Settings(
            kafka_bootstrap_servers=self.bootstrap,
            schema_registry_url=self.registry,
            catalog_path=self.catalog_path,
            data_dir=self.directory / "data",
            webhook_secrets=json.dumps({SECRET_NAME: SECRET}),
        )

    def env(self) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "STREAMS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAMS_SCHEMA_REGISTRY_URL": self.registry,
            "STREAMS_CATALOG_PATH": str(self.catalog_path),
            "STREAMS_DATA_DIR": str(self.directory / "data"),
            "STREAMS_WEBHOOK_SECRETS": f'{{"{SECRET_NAME}": "{SECRET}"}}',
        }

    def runner(self, *args: str, instance: str = "hooks-1") -> Proc:
        command = [sys.executable, "-m", "streams.webhooks", "--instance-id", instance, *args]
        proc = Proc("webhooks", command, self.env(), self.directory / f"{instance}.log")
        self.processes.append(proc)
        return proc

    def publisher(self) -> Publisher:
        return Publisher(self.settings(), catalog=self.catalog(), source="tests")

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.stop()

    def records(self, expected: int) -> list[Message]:
        return read_topic(self.bootstrap, self.topic, expected)

    def dead_letters(self) -> list[Message]:
        """Every record of the DLQ up to its current end."""
        return read_to_end(self.bootstrap, self.dlq)

    def committed(self) -> dict[int, int]:
        """The group's committed offset per partition (0 where none)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False})
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            found = consumer.committed([TopicPartition(self.topic, p) for p in partitions], timeout=10)
            return {tp.partition: max(0, tp.offset) for tp in found}
        finally:
            consumer.close()

    def end_offsets(self) -> dict[int, int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            return {p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1] for p in partitions}
        finally:
            consumer.close()


def make_hooks_world(
    tmp_path: Path,
    unique: Callable[[str], str],
    bootstrap: str,
    registry: str,
    routes_yaml: str,
    *,
    partitions: int = 3,
    **fields: Any,
) -> HooksWorld:
    """Fresh topic and catalog; `routes_yaml` (indented under `routes:`) may use {topic} and any of `fields`."""
    topic, group = unique("violation"), f"hooks-{uuid.uuid4().hex[:8]}"
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    routes = routes_yaml.format(topic=topic, **fields)
    (tmp_path / "topics.yaml").write_text(
        f"""\
version: 1
defaults: {{partitions: {partitions}, replication_factor: 1, min_insync_replicas: 1, retention: 1d}}
topics:
  {topic}: {{owner: tests, key: invoice_id, schema: schemas/compliance.violation.avsc}}
webhooks:
  group: {group}
  routes:
"""
        + "".join(f"    {line}\n" for line in routes.strip("\n").splitlines())
    )
    catalog = load_catalog(tmp_path / "topics.yaml")
    config: KafkaConfig = {"bootstrap.servers": bootstrap}
    apply_plan(plan_changes(catalog, config), catalog, config)
    with RegistryClient(registry) as client:
        client.register(f"{topic}-value", (tmp_path / "schemas" / "compliance.violation.avsc").read_text())
    return HooksWorld(tmp_path, tmp_path / "topics.yaml", bootstrap, registry, topic, group)


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record of `topic` up to the end offsets it has now."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        position = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + timeout
        while any(position[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end offsets {ends} (at {position})")
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    messages.append(message)
                    position[message.partition()] = (message.offset() or 0) + 1
        return messages
    finally:
        consumer.close()


def headers_of(message: Message) -> dict[str, str]:
    raw = message.headers() or []
    pairs: list[tuple[str, str | bytes | None]] = list(raw.items()) if isinstance(raw, dict) else raw
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in pairs}
