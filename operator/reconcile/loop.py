"""Reconcile one InferenceService: apply its children, then compute its status.

Level-based and idempotent: the same call repairs drift, recreates children deleted by hand,
rolls out spec changes and refreshes the status. It never raises for a bad spec; the spec's
problems become conditions instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from fleetserve.operator import names
from fleetserve.operator.config import OperatorConfig
from fleetserve.operator.kube import KubeClient, KubeError, Obj, Ref
from fleetserve.operator.manifests.children import (
    build_children,
    desired_replicas,
    optional_children,
    service_url,
)
from fleetserve.operator.manifests.meta import Owner
from fleetserve.operator.reconcile.apply import OwnershipConflict, ensure, remove
from fleetserve.operator.spec import InferenceServiceSpec
from fleetserve.operator.status.compute import (
    Observed,
    build_status,
    healthy_conditions,
    invalid_conditions,
    replica_fields,
)
from fleetserve.operator.status.conditions import DEGRADED, PROGRESSING, READY, ConditionState, now_rfc3339
from fleetserve.operator.validation import check_spec
from fleetserve.runtime import wire

CHILD_CONFLICT = "ChildConflict"  # a child's name is taken by an object this service does not own
CHILD_REJECTED = "ChildRejected"  # the API server refused a child (400/422): the spec must change
FORBIDDEN = "Forbidden"  # the operator lacks RBAC for a child (403): the chart's RBAC must change
# API errors that retrying the same request cannot fix: reported as conditions; the resync timer
# tries again, so a fixed spec or RBAC is picked up without a restart.
FAILURE_REASONS = {400: CHILD_REJECTED, 422: CHILD_REJECTED, 403: FORBIDDEN}


async def list_pods(client: KubeClient, owner: Owner) -> list[Obj]:
    """The runtime and router pods, for pod-level failures (ImagePullBackOff, OOMKilled, …)."""
    return await client.list("v1", "Pod", owner.namespace, f"{wire.LABEL_SERVICE}={owner.name}")


async def apply_children(
    client: KubeClient, owner: Owner, spec: InferenceServiceSpec, config: OperatorConfig, replicas: int,
    logger: kopf.Logger,
) -> Observed:
    live = {}
    for manifest in build_children(owner, spec, config.runtime_image, replicas):
        live[(manifest["kind"], manifest["metadata"]["name"])] = await ensure(client, owner, manifest, logger)
    for api_version, kind, name, wanted in optional_children(owner, spec):
        if not wanted:
            await remove(client, owner, Ref(api_version, kind, owner.namespace, name), logger)
    return Observed(
        runtime=live.get(("Deployment", names.runtime_name(owner.name))),
        router=live.get(("Deployment", names.router_name(owner.name))),
        pods=await list_pods(client, owner),
    )


async def observe(client: KubeClient, owner: Owner) -> Observed:
    """The Deployments and pods as they are now (three reads, no writes)."""
    runtime = await client.get(Ref("apps/v1", "Deployment", owner.namespace, names.runtime_name(owner.name)))
    router = await client.get(Ref("apps/v1", "Deployment", owner.namespace, names.router_name(owner.name)))
    return Observed(runtime=runtime, router=router, pods=await list_pods(client, owner))


def failure_conditions(reason: str, message: str) -> list[ConditionState]:
    return [
        ConditionState(READY, "False", reason, message),
        ConditionState(PROGRESSING, "False", reason, message),
        ConditionState(DEGRADED, "True", reason, message),
    ]


def failed_status(body: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
    generation = body["metadata"].get("generation")
    return build_status(body.get("status") or {}, failure_conditions(reason, message), generation, now_rfc3339())


def healthy_status(body: Mapping[str, Any], spec: InferenceServiceSpec, observed: Observed) -> dict[str, Any]:
    owner = Owner.from_body(body)
    current = body.get("status") or {}
    desired = desired_replicas(spec, current)
    return build_status(
        current, healthy_conditions(observed, desired, spec.autoscaling.enabled), body["metadata"].get("generation"),
        now_rfc3339(),
        **replica_fields(observed, desired),
        selector=names.selector_string(owner.name, names.RUNTIME),
        url=service_url(owner, spec),
    )


def invalid_status(body: Mapping[str, Any], message: str, observed: Observed) -> dict[str, Any]:
    generation = body["metadata"].get("generation")
    return build_status(body.get("status") or {}, invalid_conditions(message, observed), generation,
                        now_rfc3339())


async def reconcile(
    client: KubeClient, config: OperatorConfig, body: Mapping[str, Any], logger: kopf.Logger
) -> dict[str, Any]:
    """Apply the children of ``body`` and return its new status (the caller writes it)."""
    owner = Owner.from_body(body)
    check = check_spec(owner.name, body.get("spec") or {})
    if check.spec is None:
        logger.warning("Invalid spec, nothing rolled out (the last valid one keeps serving): %s", check.message)
        return invalid_status(body, check.message, await observe(client, owner))
    desired = desired_replicas(check.spec, body.get("status") or {})
    try:
        observed = await apply_children(client, owner, check.spec, config, desired, logger)
    except OwnershipConflict as conflict:
        logger.warning("%s", conflict)
        return failed_status(body, CHILD_CONFLICT, str(conflict))
    except KubeError as error:
        if error.status not in FAILURE_REASONS:
            raise  # transient (5xx, 429, 409 …): kopf retries
        logger.warning("The API server refused a child: %s", error)
        return failed_status(body, FAILURE_REASONS[error.status], error.message)
    return healthy_status(body, check.spec, observed)


async def refresh_status(client: KubeClient, body: Mapping[str, Any]) -> dict[str, Any]:
    """The status from the Deployments and pods as they are now, without writing anything."""
    owner = Owner.from_body(body)
    observed = await observe(client, owner)
    check = check_spec(owner.name, body.get("spec") or {})
    if check.spec is None:
        return invalid_status(body, check.message, observed)
    return healthy_status(body, check.spec, observed)
