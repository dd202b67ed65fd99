"""ACLs from the catalog, offline: least privilege per principal, the names the runtime really uses are covered,
the Strimzi export and the AdminClient bindings are one derivation, and a refusal reads as one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from streams.acls import PLATFORM_PRINCIPALS, Binding, bindings, principal_acls
from streams.acls_admin import _from_kafka, to_kafka
from streams.agents.audit import AGENT as AUDIT_AGENT
from streams.catalog import load_catalog
from streams.errors import CatalogError
from streams.export import kafka_users
from streams.kafka_util import denial
from streams.runtime.contract import changelog_topic
from streams.settings import KafkaConfig

ROOT = Path(__file__).resolve().parents[1]
CATALOG = load_catalog(ROOT / "topics.yaml")
BINDINGS = bindings(CATALOG)


def allowed(principal: str, kind: str, name: str, operation: str) -> bool:
    """What Kafka's StandardAuthorizer would answer for these ALLOW bindings (literal or prefix match)."""
    for b in BINDINGS:
        if b.principal != f"User:{principal}" or b.resource_type != kind or b.operation != operation:
            continue
        if b.name == name or (b.pattern == "prefix" and name.startswith(b.name)):
            return True
    return False


def test_a_producer_writes_only_its_topics_and_joins_no_group() -> None:
    assert allowed("billing-api", "topic", "invoice.created", "Write")
    assert allowed("billing-api", "cluster", "kafka-cluster", "IdempotentWrite")
    for topic in CATALOG.names():
        if topic != "invoice.created":
            assert not allowed("billing-api", "topic", topic, "Write"), topic
        assert not allowed("billing-api", "topic", topic, "Read"), topic
    assert not any(b.resource_type == "group" for b in BINDINGS if b.principal == "User:billing-api")


def test_the_validation_agent_reads_its_input_and_writes_its_outputs_and_dead_letters() -> None:
    assert allowed("validation-agent", "topic", "invoice.created", "Read")
    assert not allowed("validation-agent", "topic", "invoice.created", "Write")
    for topic in ("invoice.cleared", "compliance.violation", "invoice.created.dlq"):
        assert allowed("validation-agent", "topic", topic, "Write"), topic
    assert not allowed("validation-agent", "topic", "audit.trail", "Write")
    assert not allowed("validation-agent", "topic", "user.action", "Read")


@pytest.mark.parametrize(
    ("principal", "agent"),
    [("validation-agent", "validation"), ("indexing-agent", "indexing"), ("audit-agent", AUDIT_AGENT)],
)
def test_a_worker_run_as_its_principal_may_use_every_name_the_runtime_gives_it(principal: str, agent: str) -> None:
    # `streams worker --app-id <principal>` (docs/decisions/0014): App names the group `<app id>-<agent>`,
    # the engine its changelog and the transactional id `<group>-<host>-<slot>`; a single writer adds
    # `<group>-leader` (group and topic) and the fixed id `<group>`.
    group = f"{principal}-{agent}"
    assert allowed(principal, "group", group, "Read")
    assert allowed(principal, "group", f"{group}-leader", "Read")
    for topic in (changelog_topic(group), f"{group}-leader"):
        for operation in ("Create", "Describe", "Read", "Write"):
            assert allowed(principal, "topic", topic, operation), (topic, operation)
    for transactional_id in (group, f"{group}-{socket.gethostname()}-0"):
        assert allowed(principal, "transactionalId", transactional_id, "Write")
    # ... and nothing of another agent's.
    assert not allowed(principal, "group", "celery-bridge", "Read")
    assert not allowed(principal, "transactionalId", "billing-api", "Write")


def test_the_other_platform_consumers_get_their_group_and_nothing_to_write_but_dead_letters() -> None:
    assert allowed("celery-bridge", "group", "celery-bridge", "Read")  # `streams bridge --group celery-bridge`
    assert allowed("streams-webhooks", "group", "streams-webhooks", "Read")  # the catalog's webhooks.group
    assert allowed("streams-webhooks", "topic", "compliance.violation.dlq", "Write")
    assert allowed("streams-replay", "group", "streams-replay", "Read")  # streams.replay.reader's group
    assert not allowed("streams-replay", "topic", "audit.trail", "Write")
    assert not allowed("celery-bridge", "topic", "invoice.cleared", "Write")


def test_the_registry_principal_covers_the_names_its_store_uses() -> None:
    assert allowed("streams-registry", "topic", "_schemas", "Write")
    assert allowed("streams-registry", "transactionalId", "streams-registry-writer-_schemas", "Write")
    assert allowed("streams-registry", "group", "streams-registry-_schemas", "Read")
    assert not allowed("streams-registry", "topic", "invoice.created", "Read")


def test_every_catalog_service_and_platform_principal_is_managed_and_nothing_else() -> None:
    services = {s for spec in CATALOG.topics for s in (*spec.producers, *spec.consumers)}
    expected = services | {p.name for p in PLATFORM_PRINCIPALS}
    assert {b.principal.removeprefix("User:") for b in BINDINGS} == expected
    assert all(b.permission == "ALLOW" and b.host == "*" for b in BINDINGS)


def test_the_strimzi_export_and_the_bindings_are_one_derivation() -> None:
    from_export = {
        Binding(
            f"User:{user['metadata']['name']}",
            acl["resource"]["type"],
            acl["resource"].get("name", "kafka-cluster"),
            "prefix" if acl["resource"].get("patternType") == "prefix" else "literal",
            operation,
        )
        for user in kafka_users(CATALOG)
        for acl in user["spec"]["authorization"]["acls"]
        for operation in acl["operations"]
    }
    assert from_export == set(BINDINGS)
    assert set(principal_acls(CATALOG)) == {user["metadata"]["name"] for user in kafka_users(CATALOG)}


def test_a_service_may_not_take_a_platform_principals_name(tmp_path: Path) -> None:
    text = (ROOT / "topics.yaml").read_text().replace("producers: [web-app]", "producers: [streams-registry]")
    schemas = tmp_path / "schemas"
    schemas.symlink_to(ROOT / "schemas")
    (tmp_path / "topics.yaml").write_text(text)
    with pytest.raises(CatalogError, match="'streams-registry' is a platform principal"):
        principal_acls(load_catalog(tmp_path / "topics.yaml"))


def test_bindings_survive_the_round_trip_through_kafkas_types() -> None:
    for binding in BINDINGS:
        assert _from_kafka(to_kafka(binding)) == binding


@pytest.mark.parametrize(
    ("code", "kwargs", "expected"),
    [
        (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            {"topic": "user.action"},
            "User:billing-api may not Write topic user.action (TOPIC_AUTHORIZATION_FAILED); run `streams acls plan`",
        ),
        (
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            {"group": "audit-agent-audit", "topic": "x"},
            (
                "User:billing-api may not Read group audit-agent-audit (GROUP_AUTHORIZATION_FAILED);"
                " run `streams acls plan`"
            ),
        ),
        (
            KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            {"transactional_id": "audit-agent-audit"},
            (
                "User:billing-api may not Write transactional id audit-agent-audit"
                " (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); run `streams acls plan`"
            ),
        ),
        (
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            {},
            "User:billing-api may not Write on the cluster (CLUSTER_AUTHORIZATION_FAILED); run `streams acls plan`",
        ),
    ],
)
def test_a_refusal_is_one_line_naming_principal_resource_and_operation(
    code: int, kwargs: dict[str, str], expected: str
) -> None:
    config: KafkaConfig = {"sasl.username": "billing-api", "sasl.password": "hunter2-secret"}
    refused = denial(
        KafkaError(code), config, "Read" if code == KafkaError.GROUP_AUTHORIZATION_FAILED else "Write", **kwargs
    )
    assert refused is not None
    assert str(refused) == expected
    assert "hunter2" not in str(refused)


def test_other_errors_are_not_refusals() -> None:
    assert denial(KafkaError(KafkaError._MSG_TIMED_OUT), {}, "Write", topic="t") is None
    assert denial(None, {}, "Write", topic="t") is None
    assert str(denial("TOPIC_AUTHORIZATION_FAILED", {}, "Read")).startswith("User:ANONYMOUS may not Read this topic")
