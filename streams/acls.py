"""Who may do what on Kafka, derived once from the catalog: per-principal allow rules and their ACL bindings.

Both the Strimzi KafkaUser export (streams.export) and `streams acls plan/apply` (streams.acls_admin) use this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from streams.catalog import Catalog
from streams.errors import CatalogError

__all__ = [
    "CLUSTER_RESOURCE",
    "PLATFORM_PRINCIPALS",
    "AclRule",
    "Binding",
    "PlatformPrincipal",
    "bindings",
    "principal_acls",
]

ResourceKind = Literal["topic", "group", "cluster", "transactionalId"]
CLUSTER_RESOURCE = "kafka-cluster"  # the one cluster resource's name in Kafka's ACLs
# Operations a consumer needs on the topics it owns by name: the runtime's changelogs
# (`<app id>-<agent>-store-changelog`), single-writer leader topics (`<app id>-<agent>-leader`).
_PRIVATE_TOPIC_OPS = ("Create", "Describe", "DescribeConfigs", "Read", "Write")


@dataclass(frozen=True, order=True)
class AclRule:
    """One allow rule of a principal, in Strimzi's `simple` authorization terms."""

    resource_type: ResourceKind
    name: str | None  # None for the cluster
    pattern: Literal["literal", "prefix"] = "literal"
    operations: tuple[str, ...] = field(default=())

    def to_strimzi(self) -> dict[str, Any]:
        resource: dict[str, Any] = {"type": self.resource_type}
        if self.name is not None:
            resource.update(name=self.name, patternType=self.pattern)
        return {"resource": resource, "operations": list(self.operations), "host": "*"}


@dataclass(frozen=True, order=True)
class Binding:
    """One ALLOW binding as Kafka stores it: principal, resource, pattern, one operation, any host."""

    principal: str  # "User:<name>"
    resource_type: ResourceKind
    name: str
    pattern: Literal["literal", "prefix"]
    operation: str  # Strimzi/Kafka spelling: Read, Write, IdempotentWrite, ...
    permission: Literal["ALLOW", "DENY"] = "ALLOW"  # the catalog only allows; a DENY on the cluster is drift
    host: str = "*"

    @property
    def resource(self) -> str:
        """`topic invoice.created`, `group validation-agent (prefix)`, `cluster`."""
        if self.resource_type == "cluster":
            return "cluster"
        return f"{self.resource_type} {self.name}" + ("" if self.pattern == "literal" else " (prefix)")

    @property
    def access(self) -> str:
        """The operation, with what the catalog never sets (DENY, one host) spelled out."""
        extra = "" if self.permission == "ALLOW" else " DENY"
        return self.operation + extra + ("" if self.host == "*" else f" from {self.host}")

    def describe(self) -> str:
        return f"{self.principal} {self.access} {self.resource}"


@dataclass(frozen=True)
class PlatformPrincipal:
    """A principal the platform runs that the catalog's producers/consumers cannot name (its storage topic)."""

    name: str
    why: str
    rules: tuple[AclRule, ...]


# The platform's own principals that topics.yaml does not list. Every other platform process is a catalog
# service under its own name (docs/decisions/0014, 0026): `streams worker --app-id validation-agent` logs in
# as validation-agent and names its groups, changelogs and transactional ids `validation-agent-<agent>...`;
# the bridge (`--group celery-bridge`), the webhooks runner (group `streams-webhooks`) and replay
# (`streams-replay`) likewise. The outbox relay logs in as the service whose outbox it drains.
PLATFORM_PRINCIPALS: tuple[PlatformPrincipal, ...] = (
    PlatformPrincipal(
        "streams-registry",
        "the schema registry: its `_schemas` storage topic, its reader group and its writer's transactional id",
        (
            AclRule("topic", "_schemas", "literal", _PRIVATE_TOPIC_OPS),
            AclRule("group", "streams-registry", "prefix", ("Read",)),
            AclRule("transactionalId", "streams-registry", "prefix", ("Describe", "Write")),
            AclRule("cluster", None, operations=("IdempotentWrite",)),
        ),
    ),
)


def principal_acls(catalog: Catalog) -> dict[str, tuple[AclRule, ...]]:
    """Every principal the catalog manages, with the rules its role needs: the catalog's producers and
    consumers, then the platform's own principals (PLATFORM_PRINCIPALS). Sorted by name."""
    produces: dict[str, set[str]] = {}
    consumes: dict[str, set[str]] = {}
    for spec in catalog.topics:
        for service in spec.producers:  # a derived `T.dlq` lists T's consumers: they write its dead letters
            produces.setdefault(service, set()).add(spec.name)
        for service in spec.consumers:
            consumes.setdefault(service, set()).add(spec.name)
    out: dict[str, tuple[AclRule, ...]] = {}
    for service in sorted(produces.keys() | consumes.keys()):
        written, read = produces.get(service, set()), consumes.get(service, set())
        # A producer may also read its topics' configs: the outbox relay parks a record over the topic's
        # max.message.bytes instead of retrying it forever, and needs the limit for that.
        rules = [
            AclRule(
                "topic",
                topic,
                operations=tuple(
                    sorted(
                        {"Describe"}
                        | ({"DescribeConfigs", "Write"} if topic in written else set())
                        | ({"Read"} if topic in read else set())
                    )
                ),
            )
            for topic in sorted(written | read)
        ]
        if read:  # a consumer: its groups and private topics start with its name (its --app-id / --group)
            rules.append(AclRule("group", service, "prefix", ("Read",)))
            rules.append(AclRule("topic", f"{service}-", "prefix", _PRIVATE_TOPIC_OPS))
        if written:  # producers are idempotent (acks=all, enable.idempotence=true); transactions by name
            rules.append(AclRule("transactionalId", service, "prefix", ("Describe", "Write")))
            rules.append(AclRule("cluster", None, operations=("IdempotentWrite",)))
        out[service] = tuple(rules)
    for platform in PLATFORM_PRINCIPALS:
        if platform.name in out:
            raise CatalogError(
                f"{catalog.path}: '{platform.name}' is a platform principal ({platform.why}); "
                "use another service name in producers/consumers"
            )
        out[platform.name] = platform.rules
    return dict(sorted(out.items()))


def bindings(catalog: Catalog) -> frozenset[Binding]:
    """The rules of `principal_acls` as Kafka ACL bindings (one per operation), principals `User:<name>`."""
    out: set[Binding] = set()
    for service, rules in principal_acls(catalog).items():
        for rule in rules:
            name = CLUSTER_RESOURCE if rule.name is None else rule.name
            out.update(
                Binding(f"User:{service}", rule.resource_type, name, rule.pattern, operation)
                for operation in rule.operations
            )
    return frozenset(out)
