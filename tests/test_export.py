"""`streams topics export`: Strimzi topics and ACLs match topics.yaml exactly; AsyncAPI validates against AsyncAPI 3."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from streams.catalog import load_catalog, parse_duration_ms
from streams.cli import main
from streams.export import asyncapi_document, export_catalog

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "topics.yaml"
ASYNCAPI_SCHEMA = Path(__file__).parent / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"
PROFILES = ("local", "production")


def _expected_topics(profile: str) -> dict[str, dict[str, Any]]:
    """topics.yaml read on its own (not through streams.catalog): name -> partitions, replicas, config."""
    raw = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    prof = raw["profiles"][profile]
    out: dict[str, dict[str, Any]] = {}
    for name, topic in raw["topics"].items():
        layers = [raw["defaults"], prof.get("defaults", {}), topic, prof.get("topics", {}).get(name, {})]
        merged: dict[str, Any] = {"cleanup_policy": "delete", "dlq": True}
        configs: dict[str, str] = {}
        for layer in layers:
            merged.update({k: v for k, v in layer.items() if k != "configs"})
            configs.update(layer.get("configs", {}))
        config = {"cleanup.policy": merged["cleanup_policy"], **configs}
        if "retention" in merged:
            config["retention.ms"] = str(parse_duration_ms(merged["retention"], where=name))
        if "min_insync_replicas" in merged:
            config["min.insync.replicas"] = str(merged["min_insync_replicas"])
        out[name] = {
            "partitions": merged["partitions"],
            "replicas": merged["replication_factor"],
            "config": config,
            "producers": topic.get("producers", []),
            "consumers": topic.get("consumers", []),
        }
        if merged["dlq"]:
            dlq_config = {
                "cleanup.policy": "delete",
                "retention.ms": str(parse_duration_ms(merged["dlq_retention"], where=name)),
            }
            dlq_config.update({k: v for k, v in config.items() if k == "min.insync.replicas"})
            # the source's limit (Kafka's default 1048588 if it sets none) plus 64 KiB for the dlq_* headers
            dlq_config["max.message.bytes"] = str(int(config.get("max.message.bytes", 1048588)) + 65536)
            out[f"{name}.dlq"] = {
                "partitions": merged["partitions"],
                "replicas": merged["replication_factor"],
                "config": dlq_config,
                "producers": topic.get("consumers", []),
                "consumers": [],
            }
    return out


def _documents(fmt: str, profile: str = "local") -> list[dict[str, Any]]:
    text = export_catalog(load_catalog(CATALOG, profile), fmt)  # type: ignore[arg-type]
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("profile", PROFILES)
def test_strimzi_topics_match_the_catalog_exactly(profile: str) -> None:
    expected = _expected_topics(profile)
    documents = _documents("strimzi", profile)
    by_topic = {doc["spec"]["topicName"]: doc for doc in documents}
    assert len(by_topic) == len(documents)
    assert set(by_topic) == set(expected)
    for name, want in expected.items():
        doc = by_topic[name]
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert doc["kind"] == "KafkaTopic"
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "streams"
        assert doc["metadata"]["name"] == name.replace("_", "-")
        assert doc["spec"]["partitions"] == want["partitions"], name
        assert doc["spec"]["replicas"] == want["replicas"], name
        assert doc["spec"]["config"] == want["config"], name


def test_production_profile_changes_what_it_declares() -> None:
    local = {doc["spec"]["topicName"]: doc["spec"] for doc in _documents("strimzi", "local")}
    production = {doc["spec"]["topicName"]: doc["spec"] for doc in _documents("strimzi", "production")}
    assert production["invoice.created"]["partitions"] == 12
    assert local["invoice.created"]["partitions"] == 6
    assert production["invoice.created.dlq"]["replicas"] == 3
    assert production["audit.trail"]["config"]["min.insync.replicas"] == "2"
    assert local["audit.trail"]["config"]["retention.ms"] == str(10 * 365 * 86_400_000)


def _expected_acls() -> dict[str, list[dict[str, Any]]]:
    produces: dict[str, set[str]] = {}
    consumes: dict[str, set[str]] = {}
    for name, topic in _expected_topics("local").items():
        for service in topic["producers"]:
            produces.setdefault(service, set()).add(name)
        for service in topic["consumers"]:
            consumes.setdefault(service, set()).add(name)
    out: dict[str, list[dict[str, Any]]] = {}
    for service in produces.keys() | consumes.keys():
        rules = []
        for topic_name in produces.get(service, set()) | consumes.get(service, set()):
            ops = {"Describe"} | ({"DescribeConfigs", "Write"} if topic_name in produces.get(service, ()) else set())
            ops |= {"Read"} if topic_name in consumes.get(service, ()) else set()
            rules.append(({"type": "topic", "name": topic_name, "patternType": "literal"}, sorted(ops)))
        if service in consumes:
            rules.append(({"type": "group", "name": service, "patternType": "prefix"}, ["Read"]))
            rules.append(
                (
                    {"type": "topic", "name": f"{service}-", "patternType": "prefix"},
                    ["Create", "Describe", "DescribeConfigs", "Read", "Write"],
                )
            )
        if service in produces:
            rules.append(({"type": "transactionalId", "name": service, "patternType": "prefix"}, ["Describe", "Write"]))
            rules.append(({"type": "cluster"}, ["IdempotentWrite"]))
        out[service] = sorted(({"resource": r, "operations": ops, "host": "*"} for r, ops in rules), key=json.dumps)
    # The registry is the one platform principal topics.yaml cannot name: its storage topic is its own.
    out["streams-registry"] = sorted(
        [
            {
                "resource": {"type": "topic", "name": "_schemas", "patternType": "literal"},
                "operations": ["Create", "Describe", "DescribeConfigs", "Read", "Write"],
                "host": "*",
            },
            {
                "resource": {"type": "group", "name": "streams-registry", "patternType": "prefix"},
                "operations": ["Read"],
                "host": "*",
            },
            {
                "resource": {"type": "transactionalId", "name": "streams-registry", "patternType": "prefix"},
                "operations": ["Describe", "Write"],
                "host": "*",
            },
            {"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"], "host": "*"},
        ],
        key=json.dumps,
    )
    return out


def test_acls_match_the_catalogs_producers_and_consumers_exactly() -> None:
    expected = _expected_acls()
    users = {doc["metadata"]["name"]: doc for doc in _documents("acls")}
    assert set(users) == set(expected)
    # The catalog names these; a renamed service would show up here first.
    assert {
        "billing-api",
        "validation-agent",
        "audit-agent",
        "indexing-agent",
        "celery-bridge",
        "celery-workers",
        "streams-replay",
        "streams-webhooks",
        "web-app",
        "workflow-engine",
        "streams-registry",
    } == set(users)
    for name, want in expected.items():
        user = users[name]
        assert user["kind"] == "KafkaUser"
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "streams"
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["type"] == "simple"
        got = sorted(user["spec"]["authorization"]["acls"], key=json.dumps)
        assert got == want, name


def test_acls_give_each_role_what_it_needs_and_no_more() -> None:
    users = {doc["metadata"]["name"]: doc["spec"]["authorization"]["acls"] for doc in _documents("acls")}

    def ops(user: str, kind: str, name: str | None = None) -> set[str]:
        return {
            op
            for rule in users[user]
            if rule["resource"]["type"] == kind and rule["resource"].get("name") == name
            for op in rule["operations"]
        }

    assert ops("billing-api", "topic", "invoice.created") == {"Write", "Describe", "DescribeConfigs"}
    assert ops("billing-api", "cluster") == {"IdempotentWrite"}
    assert ops("billing-api", "group", "billing-api") == set()  # produces only: no group
    assert ops("validation-agent", "topic", "invoice.created") == {"Read", "Describe"}
    assert ops("validation-agent", "topic", "invoice.created.dlq") == {"Write", "Describe", "DescribeConfigs"}
    assert ops("validation-agent", "group", "validation-agent") == {"Read"}
    assert ops("indexing-agent", "cluster") == {"IdempotentWrite"}  # it writes dead letters
    assert ops("streams-replay", "topic", "audit.trail") == {"Read", "Describe"}
    assert ops("streams-replay", "cluster") == set()  # audit.trail has no DLQ: replay writes nothing
    assert ops("web-app", "topic", "invoice.created") == set()


def test_acls_do_not_depend_on_the_profile() -> None:
    assert _documents("acls", "local") == _documents("acls", "production")


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("profile", PROFILES)
def test_asyncapi_validates_against_the_asyncapi_3_schema(
    profile: str, asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    (document,) = _documents("asyncapi", profile)
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in asyncapi_validator.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


def test_asyncapi_schema_catches_mistakes(asyncapi_validator: jsonschema.Draft7Validator) -> None:
    good = asyncapi_document(load_catalog(CATALOG))
    unknown_field = copy.deepcopy(good)
    unknown_field["channels"]["invoice.created"]["partitions"] = 6
    bad_avro = copy.deepcopy(good)
    bad_avro["components"]["messages"]["InvoiceCreated"]["payload"]["schema"]["type"] = "recrod"
    bad_action = copy.deepcopy(good)
    bad_action["operations"]["billing-api.send.invoice.created"]["action"] = "publish"  # AsyncAPI 2 wording
    for document in (unknown_field, bad_avro, bad_action):
        assert list(asyncapi_validator.iter_errors(document))


def test_asyncapi_documents_every_topic_schema_owner_and_service() -> None:
    catalog = load_catalog(CATALOG)
    document = asyncapi_document(catalog)
    assert set(document["channels"]) == set(catalog.names())
    messages = document["components"]["messages"]
    for spec in catalog.topics:
        channel = document["channels"][spec.name]
        assert channel["address"] == spec.name
        assert channel["x-owner"] == spec.owner
        binding = channel["bindings"]["kafka"]
        assert (binding["partitions"], binding["replicas"]) == (spec.partitions, spec.replication_factor)
        assert binding["topicConfiguration"]["cleanup.policy"] == spec.cleanup_policy.split(",")
        (ref,) = channel["messages"].values()
        message = messages[ref["$ref"].rsplit("/", 1)[-1]]
        if spec.schema_file is not None:
            assert message["payload"]["schemaFormat"] == "application/vnd.apache.avro;version=1.9.0"
            assert message["payload"]["schema"] == json.loads(spec.schema_file.read_text(encoding="utf-8"))
        for action, services in (("send", spec.producers), ("receive", spec.consumers)):
            for service in services:
                operation = document["operations"][f"{service}.{action}.{spec.name}"]
                assert operation["action"] == action
                assert operation["channel"] == {"$ref": f"#/channels/{spec.name}"}
    expected_ops = sum(len(s.producers) + len(s.consumers) for s in catalog.topics)
    assert len(document["operations"]) == expected_ops
    assert document["servers"]["local"]["host"] == "localhost:9092"


def test_cli_writes_the_generator_output(tmp_path: Path) -> None:
    target = tmp_path / "topics.yaml"
    result = CliRunner().invoke(
        main,
        [
            "topics",
            "export",
            "--format",
            "strimzi",
            "--catalog",
            str(CATALOG),
            "--profile",
            "production",
            "--output",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == export_catalog(load_catalog(CATALOG, "production"), "strimzi")
    stdout = CliRunner().invoke(
        main,
        ["topics", "export", "--format", "asyncapi", "--catalog", str(CATALOG), "--server", "kafka:9093", "--secure"],
    )
    assert stdout.exit_code == 0, stdout.output
    (document,) = [doc for doc in yaml.safe_load_all(stdout.output) if doc]
    assert document["servers"]["local"] == {
        **document["servers"]["local"],
        "host": "kafka:9093",
        "protocol": "kafka-secure",
    }


def test_cli_unknown_profile_is_one_line_and_exit_1() -> None:
    result = CliRunner().invoke(
        main, ["topics", "export", "--format", "acls", "--catalog", str(CATALOG), "--profile", "staging"]
    )
    assert result.exit_code == 1
    assert "unknown profile 'staging'" in result.output
    assert "Traceback" not in result.output
