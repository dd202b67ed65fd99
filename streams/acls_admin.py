"""Plan and apply the catalog's ACLs on any Kafka cluster with an authorizer (AdminClient, StandardAuthorizer).

Only principals the catalog manages are compared; another principal's ACLs are noted and left alone.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from streams.acls import Binding, ResourceKind, bindings
from streams.catalog import Catalog
from streams.errors import AdminError
from streams.settings import KafkaConfig

TIMEOUT_S = 30.0
_RESOURCE_TYPES: dict[ResourceKind, ResourceType] = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "cluster": ResourceType.BROKER,  # librdkafka's name for Kafka's CLUSTER resource
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
}
_KINDS = {value: key for key, value in _RESOURCE_TYPES.items()}
_PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}


@dataclass(frozen=True)
class AclPlan:
    """What apply would change: bindings to add, bindings of managed principals to remove, and notes."""

    add: tuple[Binding, ...]
    remove: tuple[Binding, ...]  # on the cluster for a principal the catalog manages, but not in the catalog
    notes: tuple[str, ...]
    principals: int  # principals the catalog manages

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.remove)

    def to_json(self) -> dict[str, Any]:
        return {"add": [asdict(b) for b in self.add], "remove": [asdict(b) for b in self.remove],
                "notes": list(self.notes), "principals": self.principals}


def _operation(name: str) -> AclOperation:
    return AclOperation[re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()]  # IdempotentWrite -> IDEMPOTENT_WRITE


def _operation_name(operation: AclOperation) -> str:
    return "".join(part.capitalize() for part in operation.name.split("_"))


def to_kafka(binding: Binding) -> AclBinding:
    return AclBinding(_RESOURCE_TYPES[binding.resource_type], binding.name, _PATTERNS[binding.pattern],
                      binding.principal, binding.host, _operation(binding.operation),
                      AclPermissionType[binding.permission])


def _from_kafka(acl: AclBinding) -> Binding | None:
    # The stubs type these as enum-or-str-or-int (what the constructor accepts); describe_acls gives enums.
    kind = _KINDS.get(ResourceType(acl.restype))
    pattern = {v: k for k, v in _PATTERNS.items()}.get(ResourcePatternType(acl.resource_pattern_type))
    permission = AclPermissionType(acl.permission_type).name
    if kind is None or pattern is None or permission not in ("ALLOW", "DENY"):
        return None
    return Binding(acl.principal, kind, acl.name, cast("Literal['literal', 'prefix']", pattern),
                   _operation_name(AclOperation(acl.operation)), cast("Literal['ALLOW', 'DENY']", permission),
                   acl.host)


def cluster_acls(admin: AdminClient) -> list[AclBinding]:
    """Every ACL binding on the cluster; AdminError when it has no authorizer or refuses to tell us."""
    # None matches any name, principal and host (the stubs say str).
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
                             AclOperation.ANY, AclPermissionType.ANY)
    try:
        found: list[AclBinding] = admin.describe_acls(every, request_timeout=TIMEOUT_S).result()
    except KafkaException as exc:
        error = exc.args[0]
        if error.name() == "SECURITY_DISABLED":
            raise AdminError("the cluster has no authorizer, so it keeps no ACLs: set authorizer.class.name="
                             "org.apache.kafka.metadata.authorizer.StandardAuthorizer on the brokers "
                             "(locally: `streams dev up --sasl --acls`)") from None
        if error.name() == "CLUSTER_AUTHORIZATION_FAILED":
            raise AdminError("the cluster refused to list its ACLs (CLUSTER_AUTHORIZATION_FAILED): run this as a "
                             "super user or a principal with Describe on the cluster") from None
        raise AdminError(f"cannot list the cluster's ACLs: {error.str()}") from None
    return found


def plan_acls(catalog: Catalog, kafka_config: KafkaConfig) -> AclPlan:
    """Diff the catalog's bindings (streams.acls.bindings) against the cluster's, for the principals it manages."""
    desired = bindings(catalog)
    managed = {binding.principal for binding in desired}
    current: set[Binding] = set()
    unmanaged: dict[str, int] = {}
    for acl in cluster_acls(AdminClient(kafka_config)):
        binding = _from_kafka(acl)
        if binding is None or binding.principal not in managed:
            unmanaged[acl.principal] = unmanaged.get(acl.principal, 0) + 1
            continue
        current.add(binding)
    notes = tuple(f"{principal} has {count} ACL(s) the catalog does not manage (left alone)"
                  for principal, count in sorted(unmanaged.items()))
    return AclPlan(add=tuple(sorted(desired - current)), remove=tuple(sorted(current - desired)), notes=notes,
                   principals=len(managed))


def apply_acls(plan: AclPlan, kafka_config: KafkaConfig) -> None:
    """Create the missing bindings and delete the extra ones, each exactly (never by a wider filter)."""
    admin = AdminClient(kafka_config)
    failures: list[str] = []
    if plan.add:
        futures = admin.create_acls([to_kafka(b) for b in plan.add], request_timeout=TIMEOUT_S)
        failures += _failed(futures, "add")
    if plan.remove:
        filters = [AclBindingFilter(_RESOURCE_TYPES[b.resource_type], b.name, _PATTERNS[b.pattern], b.principal,
                                    b.host, _operation(b.operation), AclPermissionType[b.permission])
                   for b in plan.remove]
        failures += _failed(admin.delete_acls(filters, request_timeout=TIMEOUT_S), "remove")
    if failures:
        raise AdminError(f"{len(failures)} ACL change(s) failed; first: {failures[0]}")


def _failed(futures: dict[Any, Any], action: str) -> list[str]:
    failures = []
    for acl, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            failures.append(f"{action} {acl.principal} {_operation_name(AclOperation(acl.operation))} {acl.name}: "
                            f"{exc.args[0].str()}")
    return failures
