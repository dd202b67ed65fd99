"""Plan and apply the catalog's ACLs on any Kafka cluster with an authorizer (AdminClient, StandardAuthorizer).

Only principals the catalog manages are compared; another principal's ACLs are noted and left alone.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from confluent_kafka import KafkaError, KafkaException
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
        return {
            "add": [asdict(b) for b in self.add],
            "remove": [asdict(b) for b in self.remove],
            "notes": list(self.notes),
            "principals": self.principals,
        }


def _operation(name: str) -> AclOperation:
    return AclOperation[re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()]  # IdempotentWrite -> IDEMPOTENT_WRITE


def _operation_name(operation: AclOperation) -> str:
    return "".join(part.capitalize() for part in operation.name.split("_"))


def to_kafka(binding: Binding) -> AclBinding:
    return AclBinding(
        _RESOURCE_TYPES[binding.resource_type],
        binding.name,
        _PATTERNS[binding.pattern],
        binding.principal,
        binding.host,
        _operation(binding.operation),
        AclPermissionType[binding.permission],
    )


def to_filter(binding: Binding) -> AclBindingFilter:
    """A filter matching exactly `binding` (delete_acls removes every match: never anything wider)."""
    return AclBindingFilter(
        _RESOURCE_TYPES[binding.resource_type],
        binding.name,
        _PATTERNS[binding.pattern],
        binding.principal,
        binding.host,
        _operation(binding.operation),
        AclPermissionType[binding.permission],
    )


def _from_kafka(acl: AclBinding) -> Binding | None:
    # The stubs type these as enum-or-str-or-int (what the constructor accepts); describe_acls gives enums.
    kind = _KINDS.get(ResourceType(acl.restype))
    pattern = {v: k for k, v in _PATTERNS.items()}.get(ResourcePatternType(acl.resource_pattern_type))
    permission = AclPermissionType(acl.permission_type).name
    if kind is None or pattern is None or permission not in ("ALLOW", "DENY"):
        return None
    return Binding(
        acl.principal,
        kind,
        acl.name,
        cast("Literal['literal', 'prefix']", pattern),
        _operation_name(AclOperation(acl.operation)),
        cast("Literal['ALLOW', 'DENY']", permission),
        acl.host,
    )


def cluster_acls(admin: AdminClient) -> list[AclBinding]:
    """Every ACL binding on the cluster; AdminError when it has no authorizer or refuses to tell us."""
    # None matches any name, principal and host (the stubs say str).
    every = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    try:
        found: list[AclBinding] = admin.describe_acls(every, request_timeout=TIMEOUT_S).result()
    except KafkaException as exc:
        raise _acl_error(exc.args[0]) from None
    if not found:
        # A broker without an authorizer answers DescribeAcls with an empty list (through librdkafka), so an
        # empty answer is checked with a deletion that can match nothing: that one reports SECURITY_DISABLED.
        nobody = AclBindingFilter(
            ResourceType.TOPIC,
            None,  # type: ignore[arg-type]
            ResourcePatternType.ANY,
            "User:streams-acls-probe-matches-nothing",
            None,  # type: ignore[arg-type]
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        for future in admin.delete_acls([nobody], request_timeout=TIMEOUT_S).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].name() == "SECURITY_DISABLED":
                    raise _acl_error(exc.args[0]) from None
                # Anything else (a principal that may only Describe): check_may_manage speaks for it.
    return found


def _acl_error(error: KafkaError) -> AdminError:
    if error.name() == "SECURITY_DISABLED":
        return AdminError(
            "the cluster has no authorizer, so it keeps no ACLs: set authorizer.class.name="
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer on the brokers "
            "(locally: `streams dev up --sasl --acls`)"
        )
    return AdminError(f"cannot list the cluster's ACLs: {error.str()} ({error.name()})")


def check_may_manage(admin: AdminClient, kafka_config: KafkaConfig, operation: Literal["Describe", "Alter"]) -> None:
    """AdminError unless this client may `operation` the cluster (see ACLs: Describe; change them: Alter).

    Needed because a broker answers DescribeAcls from a principal without Describe on the cluster with an
    empty list, which would read as "every binding is missing".
    """
    try:
        cluster = admin.describe_cluster(include_authorized_operations=True, request_timeout=TIMEOUT_S).result()
    except KafkaException as exc:
        raise AdminError(f"cannot describe the cluster: {exc.args[0].str()}") from None
    allowed = cluster.authorized_operations or []  # librdkafka gives None for none at all
    if _operation(operation) not in allowed and AclOperation.ALL not in allowed:
        username = kafka_config.get("sasl.username")
        principal = f"User:{username}" if username else "User:ANONYMOUS"
        raise AdminError(
            f"{principal} may not {operation} the cluster's ACLs (CLUSTER_AUTHORIZATION_FAILED); run "
            f"`streams acls` as a super user or a principal allowed {operation} on the cluster"
        )


def plan_acls(catalog: Catalog, kafka_config: KafkaConfig) -> AclPlan:
    """Diff the catalog's bindings (streams.acls.bindings) against the cluster's, for the principals it manages."""
    desired = bindings(catalog)
    managed = {binding.principal for binding in desired}
    current: set[Binding] = set()
    unmanaged: dict[str, int] = {}
    admin = AdminClient(kafka_config)
    found = cluster_acls(admin)  # first: a cluster without an authorizer says so here
    check_may_manage(admin, kafka_config, "Describe")
    for acl in found:
        binding = _from_kafka(acl)
        if binding is None or binding.principal not in managed:
            unmanaged[acl.principal] = unmanaged.get(acl.principal, 0) + 1
            continue
        current.add(binding)
    notes = tuple(
        f"{principal} has {count} ACL(s) the catalog does not manage (left alone)"
        for principal, count in sorted(unmanaged.items())
    )
    return AclPlan(
        add=tuple(sorted(desired - current)),
        remove=tuple(sorted(current - desired)),
        notes=notes,
        principals=len(managed),
    )


def apply_acls(plan: AclPlan, kafka_config: KafkaConfig) -> None:
    """Create the missing bindings and delete the extra ones, each exactly (never by a wider filter)."""
    admin = AdminClient(kafka_config)
    if plan.has_changes:
        check_may_manage(admin, kafka_config, "Alter")
    failures: list[str] = []
    if plan.add:
        futures = admin.create_acls([to_kafka(b) for b in plan.add], request_timeout=TIMEOUT_S)
        failures += _failed(futures, "add")
    if plan.remove:
        filters = [to_filter(b) for b in plan.remove]
        failures += _failed(admin.delete_acls(filters, request_timeout=TIMEOUT_S), "remove")
    if failures:
        raise AdminError(f"{len(failures)} ACL change(s) failed; first: {failures[0]}")


def _failed(futures: dict[Any, Any], action: str) -> list[str]:
    failures = []
    for acl, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            failures.append(
                f"{action} {acl.principal} {_operation_name(AclOperation(acl.operation))} {acl.name}: "
                f"{exc.args[0].str()}"
            )
    return failures
