"""(Moves to status/compute.py at integration.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetserve.operator.adapters.decide import Report
from fleetserve.operator.status.conditions import ConditionState, set_condition

ADAPTERS_READY = "AdaptersReady"


def adapters_status(
    current: Mapping[str, Any], report: Report, generation: int | None, now: str
) -> dict[str, Any]:
    """The adapter rollout's fields of the status: ``adapters`` (one entry per spec adapter) and the
    AdaptersReady condition, in its place among the others."""
    state = ConditionState(
        ADAPTERS_READY, "True" if report.is_ready else "False", report.reason, report.message
    )
    return {
        "conditions": set_condition(current.get("conditions") or [], state, generation, now),
        "adapters": [
            {"name": a.name, "readyReplicas": a.ready_replicas, "message": a.message} for a in report.adapters
        ],
    }
