"""Generate docs/crd-reference.md from the same schema the CRD carries.

    python -P -m fleetserve.operator.crd_docs > docs/crd-reference.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

from fleetserve.operator import crd, names

Schema = dict[str, Any]

INTRO = f"""# InferenceService reference

`{names.API_VERSION}`, kind `{names.KIND}`, namespaced; `kubectl get {names.PLURAL}` or
`kubectl get {names.SHORT_NAMES[0]}`. Generated from `operator/spec.py` by
`python -P -m fleetserve.operator.crd_docs`; `kubectl explain {names.SHORT_NAMES[0]}.spec` prints the
same descriptions.

The CRD's schema refuses what it can express (types, enums, minimums, patterns, `replicas.min <=
replicas.max`). What it cannot (unknown model schemes, malformed hub ids or claim names, duplicate
adapter names, names too long for the child Services) the operator reports as `Ready=False` with
reason `InvalidSpec` and a message naming the field.

Subresources: `status`, and `scale` (`kubectl scale {names.SHORT_NAMES[0]}/NAME --replicas=N`, an HPA or
KEDA set `spec.replicas.count`, which defaults to 1; `status.selector` selects the runtime pods). The
replica count has one owner: `spec.replicas.count` while `spec.autoscaling.enabled` is false, the
autoscaler (within `spec.replicas.min`..`max`) while it is true.
"""

STATUS_NOTES = """
## Conditions

| type | status | reasons |
|---|---|---|
| `Ready` | True when at least one runtime replica and one router replica pass their readiness probes | `Ready`, `ServingLastValidSpec`, `RuntimeNotReady`, `RouterNotReady`, `ScaledToZero`, `InvalidSpec`, `ChildConflict`, `ChildRejected`, `Forbidden` |
| `Progressing` | True while the runtime Deployment rolls out or scales toward `desiredReplicas` | `RollingOut`, `RolloutComplete`, `InvalidSpec`, `ChildConflict`, `ChildRejected`, `Forbidden` |
| `Degraded` | True when a pod fails, the rollout cannot finish or the spec cannot be served | `AsExpected`, `ImagePullBackOff`, `ErrImagePull`, `CrashLoopBackOff`, `OOMKilled`, `Unschedulable`, `CreateContainerConfigError`, `ProgressDeadlineExceeded`, `ReplicaFailure`, `InvalidSpec`, `ChildConflict`, `ChildRejected`, `Forbidden` |
| `ScalingActive` | True while the autoscaler reads the load of the ready runtime pods and scales on it ([autoscaling.md](autoscaling.md)) | `ValidMetrics`, `NoReadyPods`, `NoMetrics`, `AutoscalingDisabled`, `InvalidSpec` |
| `AdaptersReady` | True when every spec adapter is loaded on every ready runtime pod ([adapters.md](adapters.md)) | `AdaptersLoaded`, `NoAdapters`, `NoReadyPods`, `LoadFailed`, `PodUnreachable`, `UnloadFailed`, `Loading`, `ApiKeyUnavailable`, `InvalidSpec` |

The conditions are a map keyed by `type` (one condition per type; conditions other control loops
add are kept). Each carries `observedGeneration` and a `lastTransitionTime` that moves only when its
status changes. Pod reasons are the kubelet's or the scheduler's, for the first failing runtime or
router pod by name, whose name the message gives; `RuntimeNotReady`'s message repeats it.
`ServingLastValidSpec`: the spec turned invalid (`Degraded` says why) and the pods of the last valid
spec still serve. `ChildConflict`: an object with a child's name exists and belongs to something
else. `ChildRejected`: the API server refused a child the spec produced (its message is copied).
`Forbidden`: the operator's RBAC lacks a right. The operator retries all three at every resync.
`ScalingActive` belongs to the autoscaler: `NoReadyPods` (no runtime pod is ready) and `NoMetrics` (no
ready pod's `/metrics` could be read) keep the replica count as it is; its message gives the last
sample and recommendation. `AdaptersReady` belongs to the adapter rollout: with adapters and no ready
runtime pod it is False (`NoReadyPods`); `LoadFailed` carries the runtime's reason for the first
refused load, and `status.adapters` gives each adapter's count of ready pods that have it.
"""


def type_of(node: Schema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "")
    if kind == "array":
        return f"[]{type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{type_of(node['additionalProperties'])}"
    return str(kind)


def constraints(node: Schema) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"), ("maxLength", "length ≤")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    if "default" in node and node["default"] != {}:
        parts.append(f"default `{json.dumps(node['default'])}`")
    return "; ".join(parts)


def rows(node: Schema, prefix: str) -> Iterator[str]:
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        mark = " (required)" if name in required else ""
        description = sub.get("description", "").replace("|", "\\|").replace("\n", " ")
        yield f"| `{path}`{mark} | {type_of(sub)} | {description} | {constraints(sub)} |"
        child = sub.get("items") if sub.get("type") == "array" else sub
        if isinstance(child, dict) and "properties" in child:
            yield from rows(child, f"{path}[]" if sub.get("type") == "array" else path)


def render() -> str:
    schema = crd.openapi_schema()["properties"]
    header = "| field | type | description | constraints |\n|---|---|---|---|"
    spec_rows = "\n".join(rows(schema["spec"], "spec"))
    status_rows = "\n".join(rows(schema["status"], "status"))
    return (f"{INTRO}\n## spec\n\n{header}\n{spec_rows}\n\n## status\n\nWritten by the operator only.\n\n"
            f"{header}\n{status_rows}\n{STATUS_NOTES}")


if __name__ == "__main__":
    sys.stdout.write(render())
