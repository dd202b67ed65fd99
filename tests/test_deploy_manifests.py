"""deploy/kubernetes validates offline: overlays rendered, every object checked against Kubernetes and CRD schemas.

Built-in kinds use the schemas shipped by kubernetes-validate (PyPI); Strimzi and KEDA use the JSON schemas
vendored in tests/data/k8s-schemas (README there). Nothing here touches the network.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.catalog import load_catalog
from streams.export import export_catalog

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).parent / "data" / "k8s-schemas"
KUBERNETES_VERSION = "1.33"  # the oldest Kubernetes the manifests target
OVERLAYS = ("local", "production")
CRD_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "kafka-kafka-v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "kafkanodepool-kafka-v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic-kafka-v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): "kafkauser-kafka-v1beta2.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}
# The kustomization features the renderer below implements; anything else would be rendered wrongly.
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches"}
# Generated files and the export that must reproduce them byte for byte.
GENERATED = {
    "base/kafka/kafka-users.yaml": ("acls", "local"),
    "overlays/local/kafka-topics.yaml": ("strimzi", "local"),
    "overlays/production/kafka-topics.yaml": ("strimzi", "production"),
}


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["apiVersion"], doc["kind"], doc["metadata"]["name"]


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386). Patches here hold no lists, so this equals kustomize's strategic merge."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(target.get(key), value)
    return out


def _lists_in(node: Any, path: str = "") -> list[str]:
    if isinstance(node, list):
        return [path]
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in _lists_in(value, f"{path}.{key}")]
    return []


def render(directory: Path, used: set[Path] | None = None) -> list[dict[str, Any]]:
    """`kustomize build directory` for the features in KUSTOMIZE_KEYS; records the files it read in `used`."""
    used = set() if used is None else used
    kustomization_file = directory / "kustomization.yaml"
    used.add(kustomization_file)
    (kustomization,) = _load(kustomization_file)
    unsupported = set(kustomization) - KUSTOMIZE_KEYS
    assert not unsupported, f"{kustomization_file}: the renderer does not implement {unsupported}"
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            documents += render(path, used)
        else:
            used.add(path)
            documents += _load(path)
    index = {_key(doc): position for position, doc in enumerate(documents)}
    assert len(index) == len(documents), f"{directory}: two resources with the same kind and name"
    for entry in kustomization.get("patches", []):
        path = (directory / entry["path"]).resolve()
        used.add(path)
        for patch in _load(path):
            assert _lists_in(patch) == [], f"{path}: {_key(patch)} patches a list at {_lists_in(patch)}"
            assert _key(patch) in index, f"{path}: {_key(patch)} matches no resource"
            documents[index[_key(patch)]] = _merge(documents[index[_key(patch)]], patch)
    if "namespace" in kustomization:
        for doc in documents:
            doc["metadata"] = {**doc["metadata"], "namespace": kustomization["namespace"]}
    return documents


@cache
def _crd_validator(filename: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / filename).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema error in `doc` (empty when valid); unknown kinds are an error, never skipped."""
    crd = CRD_SCHEMAS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if crd is not None:
        return [f"{list(e.absolute_path)}: {e.message[:300]}" for e in _crd_validator(crd).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{list(exc.path)}: {exc.message[:300]}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(DEPLOY / "overlays" / request.param)


def test_every_manifest_validates(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, documents = overlay
    errors = {"/".join(_key(doc)): problems for doc in documents if (problems := validation_errors(doc))}
    assert errors == {}, name
    kinds = {doc["kind"] for doc in documents}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Secret",
        "ConfigMap",
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "KafkaUser",
        "ScaledObject",
        "TriggerAuthentication",
    } <= kinds
    assert all(doc["metadata"]["namespace"] == "streams" for doc in documents)


@pytest.mark.parametrize(
    "mistake",
    [
        ("Deployment", ["spec", "replicas"], "two"),
        ("Deployment", ["spec", "template", "spec", "containers", 0, "livenessprobe"], {"tcpSocket": {"port": 1}}),
        ("KafkaTopic", ["spec", "partition"], 3),
        ("KafkaUser", ["spec", "authentication", "type"], "scram-sha-256"),
        ("Kafka", ["spec", "kafka", "listeners", 0, "type"], "cluster-internal"),
        ("ScaledObject", ["spec", "maxReplicas"], 3),
        ("TriggerAuthentication", ["spec", "secretTargetRef", 0, "secret"], "x"),
        ("NetworkPolicy", ["spec", "policyTypes"], "Ingress"),
    ],
)
def test_validation_rejects_mistakes(mistake: tuple[str, list[Any], Any]) -> None:
    kind, path, value = mistake
    documents = render(DEPLOY / "overlays" / "production")
    doc = copy.deepcopy(next(doc for doc in documents if doc["kind"] == kind))
    assert validation_errors(doc) == []
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert validation_errors(doc) != []


def test_every_file_under_deploy_kubernetes_is_rendered() -> None:
    used: set[Path] = set()
    for name in OVERLAYS:
        render(DEPLOY / "overlays" / name, used)
    assert {path.resolve() for path in DEPLOY.rglob("*.yaml")} == used


@pytest.mark.parametrize(("relative", "export"), GENERATED.items())
def test_generated_files_equal_fresh_export(relative: str, export: tuple[str, str]) -> None:
    fmt, profile = export
    fresh = export_catalog(load_catalog(ROOT / "topics.yaml", profile), fmt)  # type: ignore[arg-type]
    assert (DEPLOY / relative).read_text(encoding="utf-8") == fresh, (
        f"{relative} is stale: run `streams topics export --format {fmt} --profile {profile} "
        f"-o deploy/kubernetes/{relative}`"
    )


def _containers(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]
        for doc in documents
        if doc["kind"] == "Deployment"
    }


def test_each_service_runs_as_its_catalog_principal_in_its_own_group(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, documents = overlay
    users = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "KafkaUser"}
    for deployment, container in _containers(documents).items():
        env = {item["name"]: item for item in container.get("env", [])}
        if "STREAMS_KAFKA_SASL_USERNAME" not in env:
            assert deployment == "streams-redis"
            continue
        principal = env["STREAMS_KAFKA_SASL_USERNAME"]["value"]
        assert principal in users, deployment
        assert env["STREAMS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": principal, "key": "password"}
        args = container["args"]
        group_flag = next((flag for flag in ("--app-id", "--group") if flag in args), None)
        if group_flag:  # the consumer group is the principal's name (docs/decisions/0014)
            assert args[args.index(group_flag) + 1] == principal, deployment
            acls = users[principal]["spec"]["authorization"]["acls"]
            assert {"type": "group", "name": principal, "patternType": "prefix"} in [a["resource"] for a in acls]


def test_autoscaling_targets_exist_and_read_their_own_group(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, documents = overlay
    containers = _containers(documents)
    auths = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "TriggerAuthentication"}
    scaled = [doc for doc in documents if doc["kind"] == "ScaledObject"]
    # The audit worker is one elected writer (0010): more pods would only stand by, so it is not scaled.
    groups = {"streams-worker-validation": "{principal}-validation", "streams-bridge": "{principal}"}
    assert {doc["spec"]["scaleTargetRef"]["name"] for doc in scaled} == set(groups)
    for doc in scaled:
        container = containers[doc["spec"]["scaleTargetRef"]["name"]]
        principal = next(e["value"] for e in container["env"] if e["name"] == "STREAMS_KAFKA_SASL_USERNAME")
        (trigger,) = doc["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        group = groups[doc["spec"]["scaleTargetRef"]["name"]].format(principal=principal)
        assert trigger["metadata"]["consumerGroup"] == group  # the group the scaled service commits in
        auth = auths[trigger["authenticationRef"]["name"]]["spec"]
        assert {"parameter": "password", "name": principal, "key": "password"} in auth["secretTargetRef"]


def test_disruption_budgets_and_probes_cover_every_deployment(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, documents = overlay
    budgets = {
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for doc in documents
        if doc["kind"] == "PodDisruptionBudget"
    }
    for name, container in _containers(documents).items():
        assert "livenessProbe" in container, name
        assert "readinessProbe" in container, name
        if name != "streams-redis":
            assert name in budgets
