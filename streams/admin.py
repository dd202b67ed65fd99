"""Plan and apply the topic catalog against a live cluster (topics as code).

Compares only what the catalog sets, tells catalog changes from drift made outside the tool.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from streams.catalog import Catalog, TopicSpec
from streams.errors import AdminError
from streams.kafka_util import read_compacted
from streams.settings import KafkaConfig

# Compacted record of what apply last set per topic: lets plan tell a catalog change from drift.
STATE_TOPIC = "_streams_catalog_state"
TIMEOUT_S = 30.0
# Topics the platform makes for itself, never declared in the catalog: agents' state changelogs
# (`<app>-<agent>-store-changelog`, faust's `<app>-<table>-changelog`), leader elections (`<app>-audit-leader`,
# faust's `<app>-__assignor-__leader`), repartition topics, and replay shadows (`<topic>.replay.<id>`).
# Names starting with `_` (`_schemas`, `__consumer_offsets`, the catalog state) are never read at all.
INTERNAL_SUFFIXES = ("-changelog", "-leader", "-__leader", "-repartition")
INTERNAL_INFIXES = (".replay.",)


def platform_internal(name: str) -> bool:
    """True for a topic the platform creates for itself, which `topics plan` neither flags nor notes."""
    return name.startswith("_") or name.endswith(INTERNAL_SUFFIXES) or any(i in name for i in INTERNAL_INFIXES)


class ChangeKind(StrEnum):
    CREATE = "create"
    ALTER_CONFIG = "alter-config"
    ADD_PARTITIONS = "add-partitions"
    DELETE = "delete"


@dataclass(frozen=True)
class ConfigDiff:
    """One topic config whose cluster value differs from the catalog's."""

    key: str
    current: str | None
    desired: str | None
    drift: bool  # the cluster value is not what streams last applied: changed by another client


@dataclass(frozen=True)
class TopicChange:
    kind: ChangeKind
    topic: str
    partitions: int | None = None
    current_partitions: int | None = None
    replication_factor: int | None = None
    configs: dict[str, str] = field(default_factory=dict)
    diffs: tuple[ConfigDiff, ...] = ()
    warning: str | None = None


@dataclass(frozen=True)
class Plan:
    """What apply would do; `errors` are refusals that stop apply from doing anything."""

    changes: tuple[TopicChange, ...]
    errors: tuple[str, ...]
    notes: tuple[str, ...]  # drift and differences apply leaves alone (unmanaged overrides, topics)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [asdict(change) for change in self.changes],
            "errors": list(self.errors),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _ClusterTopic:
    partitions: int
    replication_factor: int
    configs: dict[str, ConfigEntry]


def normalize(key: str, value: str | None) -> str | None:
    """Kafka spells some values in more than one way; compare their canonical form."""
    if value is None:
        return None
    if key == "cleanup.policy":
        return ",".join(sorted(part.strip() for part in value.split(",")))
    return value.strip()


def plan_changes(catalog: Catalog, kafka_config: KafkaConfig, *, allow_delete: tuple[str, ...] = ()) -> Plan:
    """Diff the catalog against the cluster `kafka_config` points at."""
    admin = AdminClient(kafka_config)
    metadata = _metadata(admin)
    brokers = len(metadata.brokers)
    cluster = _describe(admin, metadata)
    applied = _applied_state(kafka_config, metadata)
    changes: list[TopicChange] = []
    errors: list[str] = []
    notes: list[str] = []

    for spec in catalog.topics:
        if spec.replication_factor > brokers:
            errors.append(
                f"{_where(catalog, spec)} field 'replication_factor': "
                f"{spec.replication_factor} is more than the {brokers} broker(s) in the cluster; "
                f"use at most {brokers} (or another profile)"
            )
            continue
        existing = cluster.get(spec.name)
        if existing is None:
            changes.append(
                TopicChange(
                    kind=ChangeKind.CREATE,
                    topic=spec.name,
                    partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    configs=spec.kafka_configs(),
                )
            )
            continue
        changes.extend(_topic_changes(catalog, spec, existing, applied.get(spec.name, {}), errors, notes))

    declared = set(catalog.names())
    for name in allow_delete:
        if name in declared:
            errors.append(f"--allow-delete {name}: the topic is declared in {catalog.path}; remove it there first")
        elif name not in cluster:
            errors.append(f"--allow-delete {name}: no such topic on the cluster")
        else:
            changes.append(TopicChange(kind=ChangeKind.DELETE, topic=name))
    notes.extend(
        f"topic '{name}' exists on the cluster but not in the catalog (left alone)"
        for name in sorted(set(cluster) - declared - set(allow_delete))
        if not platform_internal(name)
    )
    return Plan(changes=tuple(changes), errors=tuple(errors), notes=tuple(notes))


def _topic_changes(
    catalog: Catalog,
    spec: TopicSpec,
    existing: _ClusterTopic,
    applied: dict[str, str],
    errors: list[str],
    notes: list[str],
) -> list[TopicChange]:
    changes: list[TopicChange] = []
    where = _where(catalog, spec)
    if spec.partitions < existing.partitions:
        errors.append(
            f"{where} field 'partitions': the cluster has {existing.partitions} partitions and "
            f"partitions can never be lowered; set partitions: {existing.partitions} or more"
        )
    elif spec.partitions > existing.partitions:
        warning = None
        if spec.key_field:
            warning = (
                f"'{spec.name}' is keyed by '{spec.key_field}': adding partitions changes which "
                "partition a key maps to, so per-key ordering breaks across the change"
            )
        changes.append(
            TopicChange(
                kind=ChangeKind.ADD_PARTITIONS,
                topic=spec.name,
                partitions=spec.partitions,
                current_partitions=existing.partitions,
                warning=warning,
            )
        )
    if spec.replication_factor != existing.replication_factor:
        notes.append(
            f"topic '{spec.name}': replication factor is {existing.replication_factor} on the cluster "
            f"and {spec.replication_factor} in the catalog; changing it needs a partition reassignment, "
            "which apply does not do"
        )

    desired = spec.kafka_configs()
    diffs: list[ConfigDiff] = []
    for key, value in sorted(desired.items()):
        entry = existing.configs.get(key)
        current = entry.value if entry is not None else None
        if normalize(key, current) == normalize(key, value):
            continue
        last = applied.get(key)
        drift = last is not None and normalize(key, last) != normalize(key, current)
        diffs.append(ConfigDiff(key=key, current=current, desired=value, drift=drift))
    for key, entry in sorted(existing.configs.items()):
        if key not in desired and ConfigSource(entry.source) is ConfigSource.DYNAMIC_TOPIC_CONFIG:
            notes.append(
                f"drift: topic '{spec.name}' has '{key}={entry.value}' set outside the catalog "
                "(left alone; declare it under `configs:` to manage it)"
            )
    if diffs:
        changes.append(TopicChange(kind=ChangeKind.ALTER_CONFIG, topic=spec.name, configs=desired, diffs=tuple(diffs)))
    return changes


def _where(catalog: Catalog, spec: TopicSpec) -> str:
    """file:line of the topic's entry; a derived dead-letter topic points at its source's entry."""
    line = catalog.topic(spec.dead_letter_of).line if spec.dead_letter_of else spec.line
    return f"{catalog.path}:{line}: topic '{spec.name}'"


def apply_plan(plan: Plan, catalog: Catalog, kafka_config: KafkaConfig) -> None:
    """Carry out a plan with no errors; records what was set so later plans can spot drift."""
    admin = AdminClient(kafka_config)
    if plan.errors:
        raise AdminError(f"plan has {len(plan.errors)} error(s); nothing applied: {plan.errors[0]}")
    creates = [
        NewTopic(
            c.topic, num_partitions=c.partitions or 1, replication_factor=c.replication_factor or 1, config=c.configs
        )
        for c in plan.changes
        if c.kind is ChangeKind.CREATE
    ]
    if creates:
        _wait_all(admin.create_topics(creates, request_timeout=TIMEOUT_S), "create topic")
    alters = [
        ConfigResource(
            ResourceType.TOPIC,
            c.topic,
            incremental_configs=[
                ConfigEntry(d.key, d.desired, incremental_operation=AlterConfigOpType.SET) for d in c.diffs
            ],
        )
        for c in plan.changes
        if c.kind is ChangeKind.ALTER_CONFIG
    ]
    if alters:
        _wait_all(admin.incremental_alter_configs(alters, request_timeout=TIMEOUT_S), "alter configs of")
    grows = [NewPartitions(c.topic, c.partitions or 0) for c in plan.changes if c.kind is ChangeKind.ADD_PARTITIONS]
    if grows:
        _wait_all(admin.create_partitions(grows, request_timeout=TIMEOUT_S), "add partitions to")
    deletes = [c.topic for c in plan.changes if c.kind is ChangeKind.DELETE]
    if deletes:
        _wait_all(admin.delete_topics(deletes, request_timeout=TIMEOUT_S), "delete topic")
    _record_applied(admin, catalog, kafka_config)


def _record_applied(admin: AdminClient, catalog: Catalog, kafka_config: KafkaConfig) -> None:
    metadata = _metadata(admin)
    if STATE_TOPIC not in metadata.topics:
        replication = min(3, len(metadata.brokers))
        new = NewTopic(
            STATE_TOPIC, num_partitions=1, replication_factor=replication, config={"cleanup.policy": "compact"}
        )
        _wait_all(admin.create_topics([new], request_timeout=TIMEOUT_S), "create topic", exist_ok=True)
    producer = Producer({**kafka_config, "acks": "all", "enable.idempotence": True})
    for spec in catalog.topics:
        producer.produce(STATE_TOPIC, key=spec.name.encode(), value=json.dumps(spec.kafka_configs()).encode())
    if producer.flush(TIMEOUT_S) > 0:
        raise AdminError(f"applied, but could not record the applied state in '{STATE_TOPIC}' in time")


def _applied_state(kafka_config: KafkaConfig, metadata: Any) -> dict[str, dict[str, str]]:
    if STATE_TOPIC not in metadata.topics:
        return {}
    records = read_compacted(kafka_config, STATE_TOPIC)
    return {key.decode(): json.loads(value) for key, value in records.items() if value is not None}


def _metadata(admin: AdminClient) -> Any:
    try:
        return admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise AdminError(f"cannot reach the Kafka cluster: {exc.args[0]}") from exc


def _describe(admin: AdminClient, metadata: Any) -> dict[str, _ClusterTopic]:
    names = [name for name in metadata.topics if not name.startswith("_")]
    if not names:
        return {}
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, name) for name in names], request_timeout=TIMEOUT_S
    )
    topics: dict[str, _ClusterTopic] = {}
    for resource, future in futures.items():
        try:
            configs = future.result()
        except KafkaException as exc:
            raise AdminError(f"cannot describe topic '{resource.name}': {exc.args[0]}") from exc
        partitions = metadata.topics[resource.name].partitions
        replication = max((len(p.replicas) for p in partitions.values()), default=0)
        topics[resource.name] = _ClusterTopic(len(partitions), replication, dict(configs))
    return topics


def _wait_all(futures: dict[Any, Any], action: str, *, exist_ok: bool = False) -> None:
    failures: list[str] = []
    for key, future in futures.items():
        name = getattr(key, "name", None) or getattr(key, "topic", None) or key
        try:
            future.result()
        except KafkaException as exc:
            if exist_ok and "TOPIC_ALREADY_EXISTS" in str(exc.args[0]):
                continue
            failures.append(f"{action} '{name}': {exc.args[0]}")
    if failures:
        raise AdminError("; ".join(failures))
