"""Pure status computation: conditions from the Deployments' reported state."""

from __future__ import annotations

from fleetserve.operator.status.compute import (
    Observed,
    build_status,
    healthy_conditions,
    invalid_conditions,
    replica_fields,
    status_changes,
)
from fleetserve.operator.status.conditions import ConditionState, merge_conditions


def deployment(replicas=0, ready=0, updated=0, generation=1, observed=1, conditions=()):
    return {"metadata": {"generation": generation},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
                       "observedGeneration": observed, "conditions": list(conditions)}}


def summary(states):
    return {s.type: (s.status, s.reason) for s in states}


def test_fresh_deployment_is_not_ready_and_progressing():
    states = healthy_conditions(Observed(deployment(), deployment()), desired=2)
    assert summary(states) == {"Ready": ("False", "RuntimeNotReady"), "Progressing": ("True", "RollingOut"),
                               "Degraded": ("False", "AsExpected")}


def test_ready_when_runtime_and_router_serve():
    states = healthy_conditions(Observed(deployment(2, 2, 2), deployment(1, 1, 1)), desired=2)
    assert summary(states)["Ready"] == ("True", "Ready")
    assert summary(states)["Progressing"] == ("False", "RolloutComplete")


def test_partially_ready_serves_but_keeps_progressing():
    states = healthy_conditions(Observed(deployment(2, 1, 2), deployment(1, 1, 1)), desired=2)
    assert summary(states)["Ready"] == ("True", "Ready")
    assert summary(states)["Progressing"] == ("True", "RollingOut")


def test_router_not_ready_blocks_ready():
    states = healthy_conditions(Observed(deployment(1, 1, 1), deployment(1, 0, 1)), desired=1)
    assert summary(states)["Ready"] == ("False", "RouterNotReady")


def test_a_new_generation_not_yet_seen_by_the_controller_is_progressing():
    states = healthy_conditions(Observed(deployment(1, 1, 1, generation=3, observed=2), deployment(1, 1, 1)), 1)
    assert summary(states)["Progressing"] == ("True", "RollingOut")


def test_deadline_exceeded_and_replica_failure_degrade():
    stuck = deployment(1, 0, 1, conditions=[{"type": "Progressing", "status": "False",
                                             "reason": "ProgressDeadlineExceeded", "message": "too slow"}])
    assert summary(healthy_conditions(Observed(stuck, None), 1))["Degraded"] == ("True", "ProgressDeadlineExceeded")
    quota = deployment(conditions=[{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                    "message": "exceeded quota: gpus"}])
    degraded = next(s for s in healthy_conditions(Observed(quota, None), 1) if s.type == "Degraded")
    assert (degraded.status, degraded.message) == ("True", "exceeded quota: gpus")


def test_scaled_to_zero_is_not_ready_but_complete():
    states = healthy_conditions(Observed(deployment(), deployment(1, 1, 1)), desired=0)
    assert summary(states)["Ready"] == ("False", "ScaledToZero")
    assert summary(states)["Progressing"] == ("False", "RolloutComplete")


def test_scaled_to_zero_by_the_autoscaler_is_ready_while_a_router_holds_requests():
    idle = healthy_conditions(Observed(deployment(), deployment(1, 1, 1)), desired=0, autoscaled=True)
    assert summary(idle)["Ready"] == ("True", "ScaledToZero")
    assert "router" in idle[0].message and summary(idle)["Progressing"] == ("False", "RolloutComplete")
    no_router = healthy_conditions(Observed(deployment(), deployment(1, 0, 1)), desired=0, autoscaled=True)
    assert summary(no_router)["Ready"] == ("False", "RouterNotReady")  # nobody holds the requests


def test_transition_time_moves_only_when_status_changes():
    first = merge_conditions([], [ConditionState("Ready", "False", "RuntimeNotReady")], 1, "t1")
    same = merge_conditions(first, [ConditionState("Ready", "False", "StillLoading", "m")], 2, "t2")
    flipped = merge_conditions(same, [ConditionState("Ready", "True", "Ready")], 2, "t3")
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert same[0]["reason"] == "StillLoading" and same[0]["observedGeneration"] == 2


def test_invalid_spec_status_and_changes_only():
    status = build_status({}, invalid_conditions("bad"), 4, "t")
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"], ready["message"]) == ("Ready", "False", "InvalidSpec", "bad")
    assert status["observedGeneration"] == 4
    assert status_changes(status, status) == {}
    assert status_changes(status, {**status, "observedGeneration": 5}) == {"observedGeneration": 5}


def test_replica_fields():
    fields = replica_fields(Observed(deployment(3, 2, 1), deployment(2, 2, 2)), desired=3)
    assert fields == {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 1, "desiredReplicas": 3,
                      "routerReadyReplicas": 2}
