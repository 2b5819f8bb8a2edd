"""Pure builder for the runtime pods' PodDisruptionBudget (node drains take one replica at a time)."""

from __future__ import annotations

from fleetserve.operator import names
from fleetserve.operator.manifests.meta import Manifest, Owner, object_meta
from fleetserve.operator.spec import DisruptionBudget


def build_disruption_budget(owner: Owner, budget: DisruptionBudget) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(owner, names.runtime_name(owner.name), names.RUNTIME),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": names.selector_labels(owner.name, names.RUNTIME)},
            # a pod that never became ready can always be evicted: it serves nothing
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
