"""Pod-level failures become conditions in the kubelet's and the scheduler's own words."""

from __future__ import annotations

import pytest

from fleetserve.operator.status.compute import Observed, healthy_conditions, pod_problem

RUNNING = {"state": {"running": {}}, "ready": True, "restartCount": 0, "name": "runtime"}


def pod(name: str, containers: list[dict] | None = None, conditions: list[dict] | None = None,
        deleting: bool = False) -> dict:
    meta = {"name": name, **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
    return {"metadata": meta, "status": {"conditions": conditions or [], "containerStatuses": containers or []}}


def waiting(reason: str, message: str = "") -> dict:
    return {"name": "runtime", "ready": False, "restartCount": 3,
            "state": {"waiting": {"reason": reason, **({"message": message} if message else {})}}}


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff",
                                    "CreateContainerConfigError"])
def test_stuck_waiting_reasons_are_reported(reason):
    problem = pod_problem([pod("a", [RUNNING]), pod("b", [waiting(reason, "details here")])])
    assert problem.reason == reason
    assert "pod b container runtime" in problem.message and "details here" in problem.message


def test_oom_killed_wins_over_the_crash_loop_it_causes():
    container = waiting("CrashLoopBackOff") | {"lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    problem = pod_problem([pod("a", [container])])
    assert problem.reason == "OOMKilled" and "exit code 137" in problem.message and "memory limit" in problem.message


def test_an_old_oom_kill_of_a_container_that_is_ready_again_is_history():
    container = RUNNING | {"restartCount": 1, "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    assert pod_problem([pod("a", [container])]) is None


def test_unschedulable_for_lack_of_gpus():
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}
    problem = pod_problem([pod("a", conditions=[scheduled])])
    assert problem.reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in problem.message


def test_healthy_starting_and_terminating_pods_are_no_problem():
    creating = {"name": "runtime", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
    assert pod_problem([pod("a", [RUNNING]), pod("b", [creating]),
                        pod("c", [waiting("CrashLoopBackOff")], deleting=True)]) is None


def test_a_pod_problem_sets_degraded_and_explains_not_ready():
    deployment = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1}}
    observed = Observed(runtime=deployment, router=None, pods=[pod("qwen-runtime-x", [waiting("ImagePullBackOff")])])
    ready, _, degraded = healthy_conditions(observed, desired=1)
    assert (ready.status, ready.reason) == ("False", "RuntimeNotReady") and "ImagePullBackOff" in ready.message
    assert (degraded.status, degraded.reason) == ("True", "ImagePullBackOff")
