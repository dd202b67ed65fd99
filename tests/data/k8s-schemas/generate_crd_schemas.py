"""Regenerate the vendored CRD JSON schemas in this folder (see README.md here for the inputs).

Strimzi: CRD YAML produced by Strimzi's own crd-generator from its published api jar; KEDA: the pydantic
models of cloudcoil-models-keda (generated from KEDA's CRDs). Both become strict JSON schemas: every object
that lists its properties rejects unknown ones, as the API server does for structural CRD schemas.

    python generate_crd_schemas.py STRIMZI_CRD_DIR   # KEDA part needs cloudcoil-models-keda installed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
STRIMZI = {"kafka": "Kafka", "kafkanodepool": "KafkaNodePool", "kafkatopic": "KafkaTopic", "kafkauser": "KafkaUser"}


def strict(node: Any) -> Any:
    """OpenAPI v3 (CRD dialect) -> JSON Schema: nullable, int-or-string, closed objects."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def strimzi(crd_dir: Path) -> None:
    for stem, kind in STRIMZI.items():
        crd = yaml.safe_load((crd_dir / f"{stem}.yaml").read_text(encoding="utf-8"))
        for version in [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            api = f"{crd['spec']['group']}/{version['name']}"
            schema["properties"]["apiVersion"] = {"type": "string", "enum": [api]}
            schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
            schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata", "spec"})
            write(f"{stem}-{crd['spec']['group'].split('.')[0]}-{version['name']}.json", schema)


def keda() -> None:
    from cloudcoil.models.keda import v1alpha1  # noqa: PLC0415 - only the regeneration needs it

    for model in (v1alpha1.ScaledObject, v1alpha1.TriggerAuthentication):
        schema = strict(model.model_json_schema(by_alias=True, mode="validation"))
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata", "spec"})
        write(f"{model.__name__.lower()}-keda-v1alpha1.json", schema)


def write(name: str, schema: dict[str, Any]) -> None:
    (HERE / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    strimzi(Path(sys.argv[1]))
    keda()
