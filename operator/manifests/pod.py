"""What every fleetserve pod shares: security contexts, HTTP probes, registry credentials, placement."""

from __future__ import annotations

from typing import Any

from fleetserve.operator import defaults
from fleetserve.operator.spec import InferenceServiceSpec, Runtime

PORT_NAME = "http"


def container_security() -> dict[str, Any]:
    # The root filesystem stays writable: torch/triton/flashinfer write JIT caches under $HOME.
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": defaults.RUN_AS_USER,
        "runAsGroup": defaults.RUN_AS_USER,
        "fsGroup": defaults.RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": defaults.PROBE_TIMEOUT_SECONDS,
        "failureThreshold": failures,
    }


def image_pull_secrets(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The pod-spec field for the spec's registry credentials (runtime and router alike)."""
    return {"imagePullSecrets": [{"name": name} for name in spec.image_pull_secrets]} if spec.image_pull_secrets else {}


def placement(runtime: Runtime, selector: dict[str, str]) -> dict[str, Any]:
    """Pod-spec fields that decide where the pods run and who yields to whom."""
    fields: dict[str, Any] = {}
    if runtime.node_selector:
        fields["nodeSelector"] = dict(runtime.node_selector)
    if runtime.tolerations:
        fields["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in runtime.tolerations]
    if runtime.affinity:
        fields["affinity"] = dict(runtime.affinity)
    if runtime.topology_spread_constraints:
        fields["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": dict(selector)}} | dict(c) for c in runtime.topology_spread_constraints]
    if runtime.priority_class_name:
        fields["priorityClassName"] = runtime.priority_class_name
    if runtime.runtime_class_name:
        fields["runtimeClassName"] = runtime.runtime_class_name
    return fields
