"""The catalog as deployment documents: Strimzi KafkaTopics, KafkaUsers with ACLs, and an AsyncAPI 3 document.

Everything here is derived from a loaded `Catalog`; principal and group naming is docs/decisions/0014.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from streams.acls import AclRule, principal_acls
from streams.catalog import Catalog, TopicSpec
from streams.errors import CatalogError

__all__ = [
    "EXPORT_FORMATS",
    "AclRule",
    "ExportFormat",
    "asyncapi_document",
    "export_catalog",
    "kafka_users",
    "principal_acls",
    "render_documents",
    "strimzi_topics",
]

ExportFormat = Literal["strimzi", "acls", "asyncapi"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("strimzi", "acls", "asyncapi")
STRIMZI_API = "kafka.strimzi.io/v1beta2"
ASYNCAPI_VERSION = "3.0.0"
AVRO_SCHEMA_FORMAT = "application/vnd.apache.avro;version=1.9.0"
KAFKA_BINDING_VERSION = "0.5.0"
_DNS_LABEL = re.compile(r"[^a-z0-9.-]")
_CE_HEADERS = {  # CloudEvents 1.0 Kafka binding, binary mode, as streams.publish writes them
    "ce_specversion": "CloudEvents spec version, always 1.0",
    "ce_id": "unique event id; consumers dedupe on it",
    "ce_source": "the producing service",
    "ce_type": "the event type",
    "ce_time": "RFC 3339 time the event happened",
    "content-type": "application/avro (Confluent wire format: magic byte, 4-byte schema id, Avro body)",
    "ce_tenantid": "tenant extension (optional)",
    "ce_traceparent": "W3C traceparent extension",
}
_REQUIRED_CE = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"]
_DLQ_HEADERS = (
    "agent",
    "error_class",
    "error_message",
    "topic",
    "partition",
    "offset",
    "timestamp",
    "attempts",
    "failed_at",
)


def resource_name(topic: str) -> str:
    """A Kubernetes object name for `topic` (DNS-1123: '_' is not allowed, so it becomes '-')."""
    return _DNS_LABEL.sub("-", topic.lower())


def strimzi_topics(catalog: Catalog, cluster: str = "streams") -> list[dict[str, Any]]:
    """One KafkaTopic per catalog topic (derived DLQs included), as the catalog's profile declares it."""
    names: dict[str, str] = {}
    documents = []
    for spec in catalog.topics:
        name = resource_name(spec.name)
        if name in names:
            raise CatalogError(
                f"{catalog.path}: topics {names[name]!r} and {spec.name!r} map to the same "
                f"KafkaTopic name {name!r}; rename one of them"
            )
        names[name] = spec.name
        documents.append(
            {
                "apiVersion": STRIMZI_API,
                "kind": "KafkaTopic",
                "metadata": {"name": name, "labels": {"strimzi.io/cluster": cluster, **_labels(spec)}},
                "spec": {
                    "topicName": spec.name,
                    "partitions": spec.partitions,
                    "replicas": spec.replication_factor,
                    "config": dict(sorted(spec.kafka_configs().items())),
                },
            }
        )
    return documents


def kafka_users(catalog: Catalog, cluster: str = "streams") -> list[dict[str, Any]]:
    """One Strimzi KafkaUser (SCRAM-SHA-512, simple authorization) per catalog service."""
    documents = []
    for service, rules in principal_acls(catalog).items():
        name = resource_name(service)
        if name != service:
            raise CatalogError(
                f"{catalog.path}: service {service!r} is not a valid KafkaUser name; use lower "
                "case letters, digits, '-' and '.' in producers/consumers"
            )
        documents.append(
            {
                "apiVersion": STRIMZI_API,
                "kind": "KafkaUser",
                "metadata": {
                    "name": name,
                    "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "streams"},
                },
                "spec": {
                    "authentication": {"type": "scram-sha-512"},
                    "authorization": {"type": "simple", "acls": [rule.to_strimzi() for rule in rules]},
                },
            }
        )
    return documents


def asyncapi_document(
    catalog: Catalog,
    server: str = "localhost:9092",
    registry_url: str = "http://localhost:8081",
    *,
    secure: bool = False,
) -> dict[str, Any]:
    """An AsyncAPI 3.0 document: a channel per topic, an operation per producer and consumer."""
    server_id = catalog.profile
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in catalog.topics:
        message_id = _message_id(spec)
        messages[message_id] = _message(spec)
        channel_ref = f"#/channels/{_pointer(spec.name)}"
        channels[spec.name] = {
            "address": spec.name,
            "title": spec.name,
            "description": spec.description or f"Topic {spec.name}",
            "servers": [{"$ref": f"#/servers/{_pointer(server_id)}"}],
            "messages": {message_id: {"$ref": f"#/components/messages/{_pointer(message_id)}"}},
            "tags": [{"name": f"owner:{spec.owner}"}],
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "replicas": spec.replication_factor,
                    "topicConfiguration": _binding_configs(spec),
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
            **_extensions(spec),
        }
        message_ref = [{"$ref": f"{channel_ref}/messages/{_pointer(message_id)}"}]
        for action, services in (("send", spec.producers), ("receive", spec.consumers)):
            for service in services:
                operation: dict[str, Any] = {
                    "action": action,
                    "channel": {"$ref": channel_ref},
                    "title": f"{service} {'publishes to' if action == 'send' else 'consumes'} {spec.name}",
                    "messages": message_ref,
                    "tags": [{"name": f"service:{service}"}],
                }
                if action == "receive":
                    operation["bindings"] = {
                        "kafka": {
                            "groupId": {"type": "string", "pattern": f"^{re.escape(service)}"},
                            "bindingVersion": KAFKA_BINDING_VERSION,
                        }
                    }
                operations[f"{service}.{action}.{spec.name}"] = operation
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "streams event catalog",
            "version": f"{catalog.path.name} ({catalog.profile})",
            "description": f"Every Kafka topic declared in {catalog.path.name} for profile '{catalog.profile}', "
            "generated by `streams topics export --format asyncapi`.",
        },
        "defaultContentType": "application/avro",
        "servers": {
            server_id: {
                "host": server,
                "protocol": "kafka-secure" if secure else "kafka",
                "description": f"Kafka cluster of profile '{catalog.profile}'",
                "bindings": {
                    "kafka": {
                        "schemaRegistryUrl": registry_url,
                        "schemaRegistryVendor": "confluent",
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render_documents(documents: Iterable[Mapping[str, Any]], header: str) -> str:
    """Multi-document YAML with a generated-file header (comment lines)."""
    head = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = "---\n".join(yaml.safe_dump(dict(doc), sort_keys=False, width=120) for doc in documents)
    return f"{head}---\n{body}"


def export_catalog(
    catalog: Catalog,
    fmt: ExportFormat,
    *,
    cluster: str = "streams",
    server: str = "localhost:9092",
    registry_url: str = "http://localhost:8081",
    secure: bool = False,
) -> str:
    """`catalog` rendered in `fmt` as the text `streams topics export` writes."""
    command = f"streams topics export --format {fmt} --profile {catalog.profile}"
    header = f"Generated from {catalog.path.name} by `{command}`. Do not edit: change the catalog and re-run."
    if fmt == "strimzi":
        return render_documents(strimzi_topics(catalog, cluster), header)
    if fmt == "acls":
        return render_documents(kafka_users(catalog, cluster), header)
    document = asyncapi_document(catalog, server, registry_url, secure=secure)
    return render_documents([document], header)


def _labels(spec: TopicSpec) -> dict[str, str]:
    labels = {"app.kubernetes.io/part-of": "streams", "streams.io/owner": resource_name(spec.owner)}
    if spec.dead_letter_of:
        labels["streams.io/dead-letter-of"] = resource_name(spec.dead_letter_of)
    return labels


def _pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _message_id(spec: TopicSpec) -> str:
    if spec.dead_letter_of:
        return f"{spec.name}.dead-letter"
    return str(_read_schema(spec.schema_file).get("name", spec.name)) if spec.schema_file else f"{spec.name}.record"


def _read_schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))  # the catalog validated it
    return schema


def _message(spec: TopicSpec) -> dict[str, Any]:
    headers = {name: {"type": "string", "description": text} for name, text in _CE_HEADERS.items()}
    message: dict[str, Any] = {"name": _message_id(spec), "title": f"{spec.name} record"}
    if spec.dead_letter_of:
        headers.update(
            {f"dlq_{name}": {"type": "string", "description": f"dead-letter header: {name}"} for name in _DLQ_HEADERS}
        )
        message.update(
            summary=f"A record of {spec.dead_letter_of} that could not be processed, unchanged, with error headers.",
            contentType="application/octet-stream",
            payload={
                "type": "string",
                "contentEncoding": "binary",
                "description": f"the original value bytes of the {spec.dead_letter_of} record",
            },
            headers={"type": "object", "properties": headers},
        )
        return message
    if spec.schema_file is not None:
        schema = _read_schema(spec.schema_file)
        message.update(
            summary=str(schema.get("doc", spec.description)),
            payload={"schemaFormat": AVRO_SCHEMA_FORMAT, "schema": schema},
        )
    else:
        message.update(payload={"type": "string", "contentEncoding": "binary"})
    message["headers"] = {"type": "object", "properties": headers, "required": _REQUIRED_CE}
    message["contentType"] = "application/avro"
    kafka: dict[str, Any] = {
        "schemaIdLocation": "payload",
        "schemaIdPayloadEncoding": "confluent",
        "schemaLookupStrategy": "TopicIdStrategy",
        "bindingVersion": KAFKA_BINDING_VERSION,
    }
    if spec.key_field:
        kafka["key"] = {"type": "string", "description": f"the event's {spec.key_field} field, as UTF-8 text"}
    message["bindings"] = {"kafka": kafka}
    return message


def _binding_configs(spec: TopicSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(spec.kafka_configs().items()):
        if key == "cleanup.policy":
            out[key] = value.split(",")
        else:
            out[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return out


def _extensions(spec: TopicSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"x-owner": spec.owner, "x-audit": spec.audit, "x-compatibility": spec.compatibility}
    if spec.key_field:
        out["x-key"] = spec.key_field
    if spec.pii_fields:
        out["x-pii-fields"] = list(spec.pii_fields)
    if spec.dead_letter_of:
        out["x-dead-letter-of"] = spec.dead_letter_of
    if spec.min_retention_ms is not None:
        out["x-min-retention-ms"] = spec.min_retention_ms
    return out
