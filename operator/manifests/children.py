"""The whole desired state of one InferenceService as a list of manifests: a pure function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetserve.operator import defaults, names
from fleetserve.operator.manifests.adapter_list import build_adapter_list
from fleetserve.operator.manifests.disruption import build_disruption_budget
from fleetserve.operator.manifests.ingress import build_ingress, ingress_url
from fleetserve.operator.manifests.meta import Manifest, Owner
from fleetserve.operator.manifests.router import (
    build_router_deployment,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
)
from fleetserve.operator.manifests.runtime import build_runtime_deployment, build_runtime_service
from fleetserve.operator.spec import InferenceServiceSpec


def desired_replicas(spec: InferenceServiceSpec, status: Mapping[str, Any]) -> int:
    """Runtime replicas to ask for.

    One owner at a time. Autoscaling off: ``replicas.count``, which the scale subresource reads and
    writes (`kubectl scale`, an HPA, KEDA). Autoscaling on: the autoscaler's last decision in
    ``status.desiredReplicas`` clamped to [min, max]; until it has made one, ``min`` but at least 1, so
    that a new service scaled to zero has first shown that its model loads.
    """
    bounds = spec.replicas
    if not spec.autoscaling.enabled:
        return bounds.count
    decided = status.get("desiredReplicas")
    if decided is None:
        decided = max(bounds.min, 1)
    return max(bounds.min, min(bounds.max, int(decided)))


def build_children(owner: Owner, spec: InferenceServiceSpec, image: str, replicas: int) -> list[Manifest]:
    """Every object the operator owns for this InferenceService, in creation order."""
    children = [
        build_router_service_account(owner),
        build_router_role(owner),
        build_router_role_binding(owner),
        build_runtime_service(owner),
        *([build_adapter_list(owner, spec)] if spec.adapters else []),  # before the pods that mount it
        build_runtime_deployment(owner, spec, image, replicas),
        build_router_service(owner),
        build_router_deployment(owner, spec, image),
    ]
    if spec.disruption_budget is not None:
        children.append(build_disruption_budget(owner, spec.disruption_budget))
    if spec.ingress is not None:
        children.append(build_ingress(owner, spec.ingress))
    return children


def optional_children(owner: Owner, spec: InferenceServiceSpec) -> list[tuple[str, str, str, bool]]:
    """(apiVersion, kind, name, wanted) of the children the spec may or may not ask for."""
    return [
        ("networking.k8s.io/v1", "Ingress", names.ingress_name(owner.name), spec.ingress is not None),
        ("policy/v1", "PodDisruptionBudget", names.runtime_name(owner.name), spec.disruption_budget is not None),
        ("v1", "ConfigMap", names.adapter_list_name(owner.name), bool(spec.adapters)),
    ]


def service_url(owner: Owner, spec: InferenceServiceSpec) -> str:
    """The Ingress URL when there is one, else the router Service's in-cluster URL."""
    if spec.ingress is not None:
        return ingress_url(spec.ingress)
    host = f"{names.service_name(owner.name)}.{owner.namespace}.svc.cluster.local"
    return f"http://{host}" if defaults.SERVICE_PORT == 80 else f"http://{host}:{defaults.SERVICE_PORT}"
