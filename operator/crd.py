"""Generate the InferenceService CustomResourceDefinition from the pydantic model.

    python -P -m fleetserve.operator.crd > crds/inferenceservice.yaml
    cp crds/inferenceservice.yaml charts/fleetserve/crds/

Pydantic writes JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: no ``$ref``, no
``null`` types, no ``additionalProperties`` beside ``properties``, no titles. ``to_structural``
rewrites one into the other; every field keeps its description so ``kubectl explain`` is useful.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from fleetserve.operator import names
from fleetserve.operator.spec import InferenceServiceSpec, InferenceServiceStatus

Schema = dict[str, Any]
DROPPED_KEYS = frozenset({"title", "$defs"})
KEY_ORDER = ("type", "description", "required")
READY_STATUS = '.status.conditions[?(@.type=="Ready")].status'


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline ``$ref`` and collapse ``anyOf: [X, null]`` (optional fields) into X."""
    if "$ref" in node:
        target = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return _resolve(target, defs)
    variants = node.get("anyOf", [])
    non_null = [v for v in variants if v.get("type") != "null"]
    if variants and len(non_null) < len(variants):
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        merged.pop("default", None)  # `default: null` only means "optional"
        if len(non_null) == 1:
            merged.update({k: v for k, v in non_null[0].items() if k not in merged})
        else:
            merged["anyOf"] = non_null
        return _resolve(merged, defs)
    return node


def to_structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = _resolve(node, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in DROPPED_KEYS or (key == "additionalProperties" and isinstance(value, bool)):
            continue
        if key == "properties":
            out[key] = {name: to_structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = to_structural(value, defs)
        elif key == "anyOf":
            out[key] = [to_structural(sub, defs) for sub in value]
        else:
            out[key] = value
    if "properties" in out:
        _default_nested_objects(out)
    return _ordered(out)


def _ordered(node: Schema) -> Schema:
    """type and description first: easier to read in the generated YAML."""
    head = {key: node[key] for key in KEY_ORDER if key in node}
    return head | {key: value for key, value in node.items() if key not in head}


def _default_nested_objects(node: Schema) -> None:
    """`default: {}` on optional objects whose fields all have defaults, so the API server fills them in."""
    required = set(node.get("required", []))
    for name, sub in node["properties"].items():
        nested_required = sub.get("required")
        if sub.get("type") == "object" and "properties" in sub and name not in required and not nested_required:
            sub.setdefault("default", {})


def model_schema(model: type[Any]) -> Schema:
    raw = model.model_json_schema(by_alias=True)
    return to_structural(raw, raw.get("$defs", {}))


def openapi_schema() -> Schema:
    spec = model_schema(InferenceServiceSpec)
    status = model_schema(InferenceServiceStatus)
    return {
        "type": "object",
        "description": "InferenceService serves one model behind an OpenAI-compatible router.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object: InferenceService."},
            "metadata": {"type": "object", "description": "Standard object metadata."},
            "spec": spec,
            "status": status,
        },
    }


def printer_columns() -> list[Schema]:
    return [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.source", "description": "Model source."},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas",
         "description": "Runtime replicas ready."},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas",
         "description": "Runtime replicas asked for."},
        {"name": "URL", "type": "string", "jsonPath": ".status.url", "description": "Where to send requests."},
        {"name": "Status", "type": "string", "jsonPath": READY_STATUS, "description": "Ready condition."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> Schema:
    version = {
        "name": names.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema()},
        "subresources": {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas.count",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        "additionalPrinterColumns": printer_columns(),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {"app.kubernetes.io/name": names.APP_NAME, "app.kubernetes.io/part-of": names.APP_NAME},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": list(names.CATEGORIES),
            },
            "versions": [version],
        },
    }


def render() -> str:
    header = "# Generated by `python -P -m fleetserve.operator.crd` from operator/spec.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
