"""Kubernetes-convention status conditions, merged so lastTransitionTime moves only on a change."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCALING_ACTIVE = "ScalingActive"  # the autoscaler's (autoscaler/loop.py)
ADAPTERS_READY = "AdaptersReady"  # the adapter rollout's (adapters/loop.py)
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, SCALING_ACTIVE, ADAPTERS_READY)

Status = Literal["True", "False", "Unknown"]


class ConditionState(NamedTuple):
    """What the operator concluded, before it is stamped with generation and time."""

    type: str
    status: Status
    reason: str
    message: str = ""


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Sequence[Mapping[str, Any]], states: Sequence[ConditionState], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """The conditions as a map keyed by type: ``states`` replace the conditions of their types (in
    ``states`` order), conditions of other types (another control loop's) stay as they are. A
    condition whose status did not change keeps its lastTransitionTime."""
    previous = {c.get("type"): c for c in current}
    merged = []
    for state in states:
        before = previous.get(state.type)
        changed = before is None or before.get("status") != state.status
        condition: dict[str, Any] = {
            "type": state.type,
            "status": state.status,
            "reason": state.reason,
            "message": state.message,
            "lastTransitionTime": now if changed or before is None else before.get("lastTransitionTime", now),
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        merged.append(condition)
    replaced = {state.type for state in states}
    return merged + [dict(c) for c in current if c.get("type") not in replaced]


def set_condition(
    current: Sequence[Mapping[str, Any]], state: ConditionState, generation: int | None, now: str
) -> list[dict[str, Any]]:
    """``state`` stamped as ``merge_conditions`` does, in the place of the condition of its type (or
    last): a loop that owns one condition does not reorder the others' conditions."""
    stamped = merge_conditions(current, [state], generation, now)[0]
    merged = [stamped if c.get("type") == state.type else dict(c) for c in current]
    return merged if any(c.get("type") == state.type for c in current) else [*merged, stamped]


def find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
