"""Pure status computation: the InferenceService's status from its children's observed state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from fleetserve.operator.status.conditions import (
    ADAPTERS_READY,
    DEGRADED,
    PROGRESSING,
    READY,
    SCALING_ACTIVE,
    ConditionState,
    find,
    merge_conditions,
    set_condition,
)
from fleetserve.operator.validation import INVALID_SPEC

Obj = Mapping[str, Any]


class Observed(NamedTuple):
    """What the cluster reports: the runtime and router Deployments as last read (None if absent) and
    the pods of both."""

    runtime: Obj | None
    router: Obj | None
    pods: Sequence[Obj] = ()


class PodProblem(NamedTuple):
    reason: str  # the kubelet's or scheduler's reason, e.g. ImagePullBackOff
    message: str


# Waiting reasons that will not resolve by waiting; pods keep retrying, so the condition clears itself
# once the cause is fixed (an image pushed, a Secret created, a GPU freed).
STUCK_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                           "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
OOM_KILLED = "OOMKilled"
UNSCHEDULABLE = "Unschedulable"


def container_problem(pod_name: str, status: Obj) -> PodProblem | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    where = f"pod {pod_name} container {status.get('name', '')}"
    if last.get("reason") == OOM_KILLED and not status.get("ready"):  # restarting after running out of memory
        return PodProblem(OOM_KILLED, f"{where} was OOMKilled (exit code {last.get('exitCode')}, "
                          f"{status.get('restartCount', 0)} restarts): raise its memory limit")
    if waiting.get("reason") in STUCK_WAITING:
        detail = f": {waiting['message']}" if waiting.get("message") else ""
        return PodProblem(waiting["reason"], f"{where}: {waiting['reason']}{detail}")
    return None


def pod_problem(pods: Sequence[Obj]) -> PodProblem | None:
    """The first pod-level failure (by pod name), in the words of the scheduler or the kubelet."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        status, name = pod.get("status") or {}, pod["metadata"]["name"]
        scheduled = find(status.get("conditions") or [], "PodScheduled") or {}
        if scheduled.get("status") == "False" and scheduled.get("reason") == UNSCHEDULABLE:
            return PodProblem(UNSCHEDULABLE, f"pod {name} cannot be scheduled: {scheduled.get('message', '')}")
        for container in status.get("containerStatuses") or []:
            problem = container_problem(name, container)
            if problem is not None:
                return problem
    return None


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


def ready_condition(runtime: Rollout, router: Rollout, desired: int,
                    problem: PodProblem | None = None, autoscaled: bool = False) -> ConditionState:
    if desired == 0 and autoscaled:  # idle: the routers hold requests and the autoscaler starts a replica
        if router.ready == 0:
            return ConditionState(READY, "False", "RouterNotReady", "scaled to zero and no router replica is "
                                  "ready to hold requests")
        return ConditionState(READY, "True", "ScaledToZero", "scaled to zero while idle: a request is held by "
                              "the router while the autoscaler starts a runtime replica")
    if desired == 0:
        return ConditionState(READY, "False", "ScaledToZero", "replicas.count is 0: no runtime pods run")
    if runtime.ready == 0:
        why = problem.message if problem else "pods may still be pulling the image or loading the model"
        return ConditionState(READY, "False", "RuntimeNotReady", f"0/{desired} runtime replicas ready ({why})")
    if router.ready == 0:
        return ConditionState(READY, "False", "RouterNotReady", "no router replica is ready")
    return ConditionState(READY, "True", "Ready", f"{runtime.ready}/{desired} runtime replicas ready")


def progressing_condition(runtime: Rollout, desired: int) -> ConditionState:
    if runtime.is_complete(desired):
        return ConditionState(PROGRESSING, "False", "RolloutComplete", f"{desired} replicas run the current spec")
    return ConditionState(PROGRESSING, "True", "RollingOut",
                          f"{runtime.updated}/{desired} replicas updated, {runtime.ready} ready")


def degraded_condition(deployment: Obj | None, problem: PodProblem | None = None) -> ConditionState:
    if problem is not None:
        return ConditionState(DEGRADED, "True", problem.reason, problem.message)
    conditions = ((deployment or {}).get("status") or {}).get("conditions") or []
    progressing = find(conditions, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return ConditionState(DEGRADED, "True", "ProgressDeadlineExceeded", progressing.get("message", ""))
    failure = find(conditions, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return ConditionState(DEGRADED, "True", "ReplicaFailure", failure.get("message", ""))
    return ConditionState(DEGRADED, "False", "AsExpected", "")


def invalid_conditions(message: str, observed: Observed | None = None) -> list[ConditionState]:
    """The spec cannot be rolled out. Pods of the last valid spec, if any, keep serving: Ready says
    whether they do, Degraded says why nothing changes."""
    runtime = Rollout.of(observed.runtime if observed else None)
    router = Rollout.of(observed.router if observed else None)
    if runtime.ready > 0 and router.ready > 0:
        ready = ConditionState(READY, "True", "ServingLastValidSpec", f"{runtime.ready} runtime replicas of the "
                               f"last valid spec serve; the current spec is invalid: {message}")
    else:
        ready = ConditionState(READY, "False", INVALID_SPEC, message)
    return [
        ready,
        ConditionState(PROGRESSING, "False", INVALID_SPEC, "fix the spec; nothing is rolled out until then"),
        ConditionState(DEGRADED, "True", INVALID_SPEC, message),
    ]


def healthy_conditions(observed: Observed, desired: int, autoscaled: bool = False) -> list[ConditionState]:
    """``autoscaled``: the count is the autoscaler's, so 0 means idle, not off."""
    runtime, router = Rollout.of(observed.runtime), Rollout.of(observed.router)
    problem = pod_problem(observed.pods)
    return [
        ready_condition(runtime, router, desired, problem, autoscaled),
        progressing_condition(runtime, desired),
        degraded_condition(observed.runtime, problem),
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


def scaling_condition(is_active: bool, reason: str, message: str) -> ConditionState:
    """The autoscaler's condition: True while it has load samples and scales on them."""
    return ConditionState(SCALING_ACTIVE, "True" if is_active else "False", reason, message)


def scaling_status(current: Obj, state: ConditionState, generation: int | None, now: str,
                   queue_depth: int | None) -> dict[str, Any]:
    """The autoscaler's fields of the status: its condition (in its place among the others) and the
    queue depth of its last sample (None removes it, e.g. once autoscaling is off)."""
    return {"conditions": set_condition(current.get("conditions") or [], state, generation, now),
            "queueDepth": queue_depth}


def adapters_condition(is_ready: bool, reason: str, message: str) -> ConditionState:
    """The adapter rollout's condition: True when every spec adapter is loaded on every ready runtime pod."""
    return ConditionState(ADAPTERS_READY, "True" if is_ready else "False", reason, message)


def adapters_status(current: Obj, state: ConditionState, generation: int | None, now: str,
                    adapters: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The adapter rollout's fields of the status: its condition (in its place among the others) and one
    ``adapters`` entry per spec adapter ({name, readyReplicas, message})."""
    return {"conditions": set_condition(current.get("conditions") or [], state, generation, now),
            "adapters": [dict(entry) for entry in adapters]}


def status_changes(current: Obj, new: Mapping[str, Any]) -> dict[str, Any]:
    """Only the keys whose value differs: an unchanged status costs no API write."""
    return {key: value for key, value in new.items() if current.get(key) != value}
