"""Pure status computation: the InferenceService's status from its children's observed state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from fleetserve.operator.status.conditions import (
    DEGRADED,
    PROGRESSING,
    READY,
    ConditionState,
    find,
    merge_conditions,
)
from fleetserve.operator.validation import INVALID_SPEC

Obj = Mapping[str, Any]


class Observed(NamedTuple):
    """What the cluster reports: the runtime and router Deployments as last read (None if absent)."""

    runtime: Obj | None
    router: Obj | None


class Rollout(NamedTuple):
    replicas: int
    ready: int
    updated: int
    current_generation_seen: bool

    @classmethod
    def of(cls, deployment: Obj | None) -> Rollout:
        if deployment is None:
            return cls(0, 0, 0, False)
        status = deployment.get("status") or {}
        generation = (deployment.get("metadata") or {}).get("generation")
        seen = generation is None or status.get("observedGeneration", 0) >= generation
        return cls(status.get("replicas", 0), status.get("readyReplicas", 0), status.get("updatedReplicas", 0), seen)

    def is_complete(self, desired: int) -> bool:
        return self.current_generation_seen and self.updated == desired == self.replicas and self.ready >= desired


def ready_condition(runtime: Rollout, router: Rollout, desired: int) -> ConditionState:
    if desired == 0:
        return ConditionState(READY, "False", "ScaledToZero", "replicas.count is 0: no runtime pods run")
    if runtime.ready == 0:
        return ConditionState(READY, "False", "RuntimeNotReady", f"0/{desired} runtime replicas ready "
                              "(pods may still be pulling the image or loading the model)")
    if router.ready == 0:
        return ConditionState(READY, "False", "RouterNotReady", "no router replica is ready")
    return ConditionState(READY, "True", "Ready", f"{runtime.ready}/{desired} runtime replicas ready")


def progressing_condition(runtime: Rollout, desired: int) -> ConditionState:
    if runtime.is_complete(desired):
        return ConditionState(PROGRESSING, "False", "RolloutComplete", f"{desired} replicas run the current spec")
    return ConditionState(PROGRESSING, "True", "RollingOut",
                          f"{runtime.updated}/{desired} replicas updated, {runtime.ready} ready")


def degraded_condition(deployment: Obj | None) -> ConditionState:
    conditions = ((deployment or {}).get("status") or {}).get("conditions") or []
    progressing = find(conditions, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return ConditionState(DEGRADED, "True", "ProgressDeadlineExceeded", progressing.get("message", ""))
    failure = find(conditions, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return ConditionState(DEGRADED, "True", "ReplicaFailure", failure.get("message", ""))
    return ConditionState(DEGRADED, "False", "AsExpected", "")


def invalid_conditions(message: str) -> list[ConditionState]:
    return [
        ConditionState(READY, "False", INVALID_SPEC, message),
        ConditionState(PROGRESSING, "False", INVALID_SPEC, "fix the spec; nothing is rolled out until then"),
        ConditionState(DEGRADED, "True", INVALID_SPEC, message),
    ]


def healthy_conditions(observed: Observed, desired: int) -> list[ConditionState]:
    runtime, router = Rollout.of(observed.runtime), Rollout.of(observed.router)
    return [
        ready_condition(runtime, router, desired),
        progressing_condition(runtime, desired),
        degraded_condition(observed.runtime),
    ]


def build_status(
    current: Obj, states: list[ConditionState], generation: int | None, now: str, **fields: Any
) -> dict[str, Any]:
    """The full new status: stamped conditions plus the given fields."""
    conditions = merge_conditions(current.get("conditions") or [], states, generation, now)
    return {"conditions": conditions, "observedGeneration": generation, **fields}


def replica_fields(observed: Observed, desired: int) -> dict[str, int]:
    runtime, router = Rollout.of(observed.runtime), Rollout.of(observed.router)
    return {
        "replicas": runtime.replicas,
        "readyReplicas": runtime.ready,
        "updatedReplicas": runtime.updated,
        "desiredReplicas": desired,
        "routerReadyReplicas": router.ready,
    }


def status_changes(current: Obj, new: Mapping[str, Any]) -> dict[str, Any]:
    """Only the keys whose value differs: an unchanged status costs no API write."""
    return {key: value for key, value in new.items() if current.get(key) != value}
