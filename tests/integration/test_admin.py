"""topics plan/apply against the real broker: create, alter, drift, partitions, delete protection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from streams.admin import ChangeKind, Plan, apply_plan, plan_changes
from streams.catalog import Catalog, load_catalog
from streams.cli import main
from streams.errors import AdminError
from streams.settings import KafkaConfig


def write_catalog(path: Path, topics: dict[str, dict[str, object]], *, dlq: bool = False) -> Catalog:
    lines = [
        "version: 1",
        "defaults:",
        "  partitions: 2",
        "  replication_factor: 1",
        "  min_insync_replicas: 1",
        "  retention: 7d",
        f"  dlq: {str(dlq).lower()}",
        "topics:",
    ]
    for name, fields in topics.items():
        lines.append(f"  {name}:")
        lines.append("    owner: tests")
        lines.extend(f"    {key}: {json.dumps(value)}" for key, value in fields.items())
    path.write_text("\n".join(lines) + "\n")
    return load_catalog(path)


def topic_configs(admin: AdminClient, name: str) -> dict[str, str]:
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)])
    (future,) = futures.values()
    return {key: entry.value for key, entry in future.result().items()}


def partition_count(admin: AdminClient, name: str) -> int:
    return len(admin.list_topics(name, timeout=10).topics[name].partitions)


def settled_plan(catalog: Catalog, config: KafkaConfig, **kwargs: tuple[str, ...]) -> Plan:
    """Plan once the broker's metadata has caught up with the last admin call (it is asynchronous)."""
    deadline = time.monotonic() + 10
    result = plan_changes(catalog, config, **kwargs)
    while result.changes and time.monotonic() < deadline:
        time.sleep(0.3)
        result = plan_changes(catalog, config, **kwargs)
    return result


@pytest.fixture
def kafka_config(kafka_bootstrap: str) -> KafkaConfig:
    return {"bootstrap.servers": kafka_bootstrap}


def test_apply_creates_every_topic_and_second_apply_has_nothing_to_do(
    tmp_path: Path, unique_name: Callable[[str], str], kafka_config: KafkaConfig, admin_client: AdminClient
) -> None:
    orders, events = unique_name("orders"), unique_name("events")
    catalog = write_catalog(
        tmp_path / "topics.yaml",
        {
            orders: {"partitions": 3, "retention": "2d"},
            events: {"cleanup_policy": "compact"},
        },
        dlq=True,
    )

    first = plan_changes(catalog, kafka_config)
    created = {c.topic for c in first.changes if c.kind is ChangeKind.CREATE}
    assert created == {orders, events, f"{orders}.dlq", f"{events}.dlq"}
    apply_plan(first, catalog, kafka_config)

    assert partition_count(admin_client, orders) == 3
    assert topic_configs(admin_client, orders)["retention.ms"] == str(2 * 86_400_000)
    assert topic_configs(admin_client, events)["cleanup.policy"] == "compact"
    assert settled_plan(catalog, kafka_config).changes == ()


def test_changing_one_retention_plans_exactly_that_change(
    tmp_path: Path, unique_name: Callable[[str], str], kafka_config: KafkaConfig, admin_client: AdminClient
) -> None:
    a, b = unique_name("a"), unique_name("b")
    catalog = write_catalog(tmp_path / "topics.yaml", {a: {}, b: {}})
    apply_plan(plan_changes(catalog, kafka_config), catalog, kafka_config)

    changed = write_catalog(tmp_path / "topics.yaml", {a: {"retention": "3d"}, b: {}})
    result = settled_plan(changed, kafka_config)

    assert len(result.changes) == 1
    (change,) = result.changes
    assert (change.kind, change.topic) == (ChangeKind.ALTER_CONFIG, a)
    assert [(d.key, d.current, d.desired, d.drift) for d in change.diffs] == [
        ("retention.ms", str(7 * 86_400_000), str(3 * 86_400_000), False)
    ]
    apply_plan(result, changed, kafka_config)
    assert topic_configs(admin_client, a)["retention.ms"] == str(3 * 86_400_000)
    assert settled_plan(changed, kafka_config).changes == ()


def test_config_changed_by_another_client_is_reported_as_drift(
    tmp_path: Path, unique_name: Callable[[str], str], kafka_config: KafkaConfig, admin_client: AdminClient
) -> None:
    name = unique_name("drift")
    catalog = write_catalog(tmp_path / "topics.yaml", {name: {}})
    apply_plan(plan_changes(catalog, kafka_config), catalog, kafka_config)

    resource = ConfigResource(
        ResourceType.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    for future in admin_client.incremental_alter_configs([resource]).values():
        future.result()

    deadline = time.monotonic() + 10
    result = plan_changes(catalog, kafka_config)
    while not result.changes and time.monotonic() < deadline:
        time.sleep(0.3)
        result = plan_changes(catalog, kafka_config)

    (change,) = result.changes
    assert [(d.key, d.current, d.drift) for d in change.diffs] == [("retention.ms", "60000", True)]
    assert any(name in note and "segment.ms=3600000" in note and "drift" in note for note in result.notes)

    runner = CliRunner()
    catalog_arg = ["--catalog", str(tmp_path / "topics.yaml"), "--output", "json"]
    env = {"STREAMS_KAFKA_BOOTSTRAP_SERVERS": str(kafka_config["bootstrap.servers"])}
    planned = runner.invoke(main, ["topics", "plan", *catalog_arg], env=env)
    assert planned.exit_code == 2, planned.output
    assert json.loads(planned.output)["changes"][0]["diffs"][0]["drift"] is True

    applied = runner.invoke(main, ["topics", "apply", *catalog_arg], env=env)
    assert applied.exit_code == 0, applied.output
    assert topic_configs(admin_client, name)["retention.ms"] == str(7 * 86_400_000)


def test_partitions_grow_with_a_warning_for_keyed_topics_and_never_shrink(
    tmp_path: Path, unique_name: Callable[[str], str], kafka_config: KafkaConfig, admin_client: AdminClient
) -> None:
    keyed, plain = unique_name("keyed"), unique_name("plain")
    path = tmp_path / "topics.yaml"
    (tmp_path / "keyed.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Keyed",
                "fields": [{"name": "invoice_id", "type": "string"}],
            }
        )
    )
    keyed_fields = {"key": "invoice_id", "schema": "keyed.avsc"}
    catalog = write_catalog(path, {keyed: {"partitions": 2, **keyed_fields}, plain: {"partitions": 2}})
    apply_plan(plan_changes(catalog, kafka_config), catalog, kafka_config)
    grown = write_catalog(path, {keyed: {"partitions": 4, **keyed_fields}, plain: {"partitions": 3}})

    result = plan_changes(grown, kafka_config)
    by_topic = {c.topic: c for c in result.changes}
    assert by_topic[keyed].kind is ChangeKind.ADD_PARTITIONS
    assert (by_topic[keyed].current_partitions, by_topic[keyed].partitions) == (2, 4)
    warning = by_topic[keyed].warning
    assert warning is not None
    assert "invoice_id" in warning
    assert by_topic[plain].warning is None
    apply_plan(result, grown, kafka_config)
    assert partition_count(admin_client, keyed) == 4

    shrunk = write_catalog(path, {keyed: {"partitions": 1, **keyed_fields}, plain: {"partitions": 3}})
    refused = plan_changes(shrunk, kafka_config)
    assert len(refused.errors) == 1
    assert keyed in refused.errors[0]
    assert "never be lowered" in refused.errors[0]
    with pytest.raises(AdminError, match="nothing applied"):
        apply_plan(refused, shrunk, kafka_config)
    assert partition_count(admin_client, keyed) == 4

    invoked = CliRunner().invoke(
        main,
        ["topics", "apply", "--catalog", str(path)],
        env={"STREAMS_KAFKA_BOOTSTRAP_SERVERS": str(kafka_config["bootstrap.servers"])},
    )
    assert invoked.exit_code == 1
    assert "never be lowered" in invoked.output


def test_delete_only_when_named_and_undeclared(
    tmp_path: Path, unique_name: Callable[[str], str], kafka_config: KafkaConfig, admin_client: AdminClient
) -> None:
    kept, legacy = unique_name("kept"), unique_name("legacy")
    path = tmp_path / "topics.yaml"
    both = write_catalog(path, {kept: {}, legacy: {}})
    apply_plan(plan_changes(both, kafka_config), both, kafka_config)

    only_kept = write_catalog(path, {kept: {}})
    silent = plan_changes(only_kept, kafka_config)
    assert all(c.kind is not ChangeKind.DELETE for c in silent.changes)
    assert any(legacy in note and "not in the catalog" in note for note in silent.notes)
    apply_plan(silent, only_kept, kafka_config)
    assert legacy in admin_client.list_topics(timeout=10).topics

    declared = plan_changes(only_kept, kafka_config, allow_delete=(kept,))
    assert declared.errors
    assert "declared" in declared.errors[0]

    named = plan_changes(only_kept, kafka_config, allow_delete=(legacy,))
    assert [(c.kind, c.topic) for c in named.changes] == [(ChangeKind.DELETE, legacy)]
    apply_plan(named, only_kept, kafka_config)
    deadline = time.monotonic() + 10
    while legacy in admin_client.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    assert legacy not in admin_client.list_topics(timeout=10).topics
    assert kept in admin_client.list_topics(timeout=10).topics


def test_replication_above_broker_count_is_refused(
    tmp_path: Path, unique_name: Callable[[str], str], kafka_config: KafkaConfig, admin_client: AdminClient
) -> None:
    name = unique_name("replicated")
    catalog = write_catalog(tmp_path / "topics.yaml", {name: {"replication_factor": 3, "min_insync_replicas": 2}})
    result = plan_changes(catalog, kafka_config)
    assert len(result.errors) == 1
    assert "replication_factor" in result.errors[0]
    assert "broker" in result.errors[0]
    assert f"{tmp_path / 'topics.yaml'}:" in result.errors[0]
    with pytest.raises(AdminError):
        apply_plan(result, catalog, kafka_config)
    assert name not in admin_client.list_topics(timeout=10).topics
