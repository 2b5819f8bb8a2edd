"""The autoscaler's I/O, one InferenceService at a time: sample, decide, write, annotate.

Every ``spec.autoscaling.intervalSeconds`` the daemon (handlers.py) calls ``Autoscaler.step``:

1. list the runtime and router pods, read the ready ones' ``/metrics`` (scrape.py);
2. ``decide`` (decide.py) the replica count from that sample and the windows kept in this object;
3. write ``status.desiredReplicas``, ``status.queueDepth`` and the ``ScalingActive`` condition through
   the one ``StatusWriter``; when the count changes, reconcile runs in the same write and applies it to
   the runtime Deployment.
Before a scale-down is written it sets ``controller.kubernetes.io/pod-deletion-cost`` on the runtime
pods from their load (one patch per pod whose cost changed), so the ReplicaSet removes the least
loaded pods first. Only then: the costs are fresh when they are read, and a steady or growing service
costs no pod writes.

The windows live in memory only: after an operator restart (or a failover) they start again with
the count the status holds, so the count does not move for one window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from fleetserve.operator import names
from fleetserve.operator.autoscaler.decide import (
    Decision,
    Policy,
    Recommendation,
    Sample,
    decide,
    deletion_costs,
)
from fleetserve.operator.autoscaler.scrape import (
    ROUTER_METRICS,
    RUNTIME_METRICS,
    RUNTIME_REQUIRED,
    finished_since,
    scrape_pods,
    to_sample,
)
from fleetserve.operator.config import OperatorConfig
from fleetserve.operator.kube import KubeClient, KubeError, Obj, Ref, get_alive
from fleetserve.operator.manifests.children import desired_replicas
from fleetserve.operator.reconcile.loop import reconcile
from fleetserve.operator.spec import InferenceServiceSpec
from fleetserve.operator.status.compute import scaling_condition, scaling_status
from fleetserve.operator.status.conditions import ConditionState, now_rfc3339
from fleetserve.operator.status.writer import StatusWriter
from fleetserve.operator.validation import INVALID_SPEC, check_spec

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DEFAULT_MAX_RUNNING_REQUESTS = 256  # `fleetserve serve --max-running-requests` when the spec sets none
IDLE_INTERVAL_SECONDS = 5.0  # how often a service with autoscaling off or an invalid spec is looked at
ZERO_INTERVAL_SECONDS = 1.0  # how often the routers are read while scaled to zero (intervalSeconds if less)
# ScalingActive reasons
VALID_METRICS = "ValidMetrics"
NO_READY_PODS = "NoReadyPods"
NO_METRICS = "NoMetrics"
DISABLED = "AutoscalingDisabled"
SCALED_TO_ZERO = "ScaledToZero"


def policy_of(spec: InferenceServiceSpec) -> Policy:
    scaling = spec.autoscaling
    return Policy(
        min=spec.replicas.min,
        max=spec.replicas.max,
        target_queue_depth=scaling.target_queue_depth,
        scale_up_window=scaling.scale_up_stabilization_seconds,
        scale_down_window=scaling.scale_down_stabilization_seconds,
        default_max_running=spec.runtime.max_running_requests or DEFAULT_MAX_RUNNING_REQUESTS,
    )


def decision_condition(decision: Decision, sample: Sample, first_error: str = "") -> ConditionState:
    """True while the sample had data to scale on; else why not (no ready pod, no readable /metrics).
    The message carries the first read that failed, if any."""
    message = f"{decision.message} (first failure: {first_error})" if first_error else decision.message
    if decision.phase == "scaled_to_zero":
        return scaling_condition(True, SCALED_TO_ZERO, message)
    if decision.has_data:
        return scaling_condition(True, VALID_METRICS, message)
    blind_at_zero = decision.replicas == 0 and not sample.num_routers  # held requests unknown
    return scaling_condition(False, NO_METRICS if sample.num_failed or blind_at_zero else NO_READY_PODS, message)


@dataclass(slots=True)
class Autoscaler:
    """The autoscaler of one InferenceService; lives as long as its daemon."""

    client: KubeClient
    writer: StatusWriter
    config: OperatorConfig
    ref: Ref
    logger: kopf.Logger
    session: aiohttp.ClientSession
    window: tuple[Recommendation, ...] | None = None  # None until the first sample (then seeded)
    failing: set[str] = field(default_factory=set)  # pods whose /metrics the last round could not read
    finished: dict[str, float] = field(default_factory=dict)  # finished-request counters of the last round

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def step(self) -> float | None:
        """One round; returns the seconds until the next, None once the object is gone."""
        live = await get_alive(self.client, self.ref)
        if live is None:
            return None
        check = check_spec(self.ref.name, live.get("spec") or {})
        if check.spec is None:
            self.window = None
            await self._write_idle(
                scaling_condition(False, INVALID_SPEC, "the spec is invalid; see the Degraded condition")
            )
            return IDLE_INTERVAL_SECONDS
        spec = check.spec
        if not spec.autoscaling.enabled:
            self.window = None
            await self._write_idle(
                scaling_condition(
                    False,
                    DISABLED,
                    "spec.autoscaling.enabled is false: "
                    f"spec.replicas.count ({spec.replicas.count}) sets the "
                    "replicas",
                )
            )
            return IDLE_INTERVAL_SECONDS
        decision = await self._scale(spec, live)
        interval = float(spec.autoscaling.interval_seconds)
        if decision.replicas == 0:  # only the routers are read: cheap, and a held request waits for this
            return min(interval, ZERO_INTERVAL_SECONDS)
        return interval

    async def _scale(self, spec: InferenceServiceSpec, live: Obj) -> Decision:
        runtime_pods = await self._pods(names.RUNTIME)
        router_pods = await self._pods(names.ROUTER)
        runtime = await scrape_pods(self.session, runtime_pods, RUNTIME_METRICS, RUNTIME_REQUIRED)
        routers = await scrape_pods(self.session, router_pods, ROUTER_METRICS, ROUTER_METRICS)
        errors = {s.name: s.error for s in runtime + routers if s.values is None}
        if (
            set(errors) != self.failing
        ):  # logged when the set changes, not every round (the condition says it)
            for error in errors.values():
                self.logger.info("Autoscaler: cannot read /metrics: %s", error)
            self.failing = set(errors)
        finished, self.finished = finished_since(self.finished, runtime)
        sample = to_sample(runtime, routers, finished)
        current = desired_replicas(spec, live.get("status") or {})
        now = self._now()
        if self.window is None:  # a new daemon (operator start, autoscaling turned on): hold for one window
            self.window = (Recommendation(now, current),)
        decision = decide(sample, policy_of(spec), current, self.window, now)
        self.window = decision.window
        if decision.replicas != current:
            self.logger.info(
                "Autoscaler: %d -> %d replicas: %s", current, decision.replicas, decision.message
            )
        if decision.replicas < current:  # the ReplicaSet reads the costs when it picks the pods to remove
            await self._annotate(runtime_pods, deletion_costs(sample.pods))
        condition = decision_condition(decision, sample, next(iter(errors.values()), ""))
        await self.writer.update(self.ref, lambda obj: self._status(obj, decision, condition))
        return decision

    async def _status(self, live: Obj, decision: Decision, condition: ConditionState) -> dict[str, Any]:
        status = live.get("status") or {}
        generation = live["metadata"].get("generation")
        fields = scaling_status(status, condition, generation, now_rfc3339(), decision.queue_depth)
        if status.get("desiredReplicas") == decision.replicas:
            return fields
        # A new count: reconcile applies it to the Deployment and computes the rest of the status.
        scaled = {**live, "status": {**status, **fields, "desiredReplicas": decision.replicas}}
        return {
            **await reconcile(self.client, self.config, scaled, self.logger),
            "queueDepth": decision.queue_depth,
        }

    async def _write_idle(self, condition: ConditionState) -> None:
        async def compute(live: Obj) -> dict[str, Any]:
            return scaling_status(
                live.get("status") or {}, condition, live["metadata"].get("generation"), now_rfc3339(), None
            )

        await self.writer.update(self.ref, compute)

    async def _pods(self, component: names.Component) -> list[Obj]:
        selector = names.selector_labels(self.ref.name, component)
        pods = await self.client.list(
            "v1", "Pod", self.ref.namespace, names.selector_string(self.ref.name, component)
        )
        return [pod for pod in pods if selector.items() <= ((pod["metadata"].get("labels") or {}).items())]

    async def _annotate(self, pods: list[Obj], costs: Mapping[str, int]) -> None:
        """Set the deletion cost on the pods whose annotation differs (one patch per changed pod)."""
        for pod in pods:
            meta = pod["metadata"]
            cost = costs.get(meta["name"])
            if cost is None or (meta.get("annotations") or {}).get(DELETION_COST) == str(cost):
                continue
            patch = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": meta["name"],
                    "namespace": self.ref.namespace,
                    "annotations": {DELETION_COST: str(cost)},
                },
            }
            try:
                await self.client.apply(patch)
            except KubeError as error:  # gone meanwhile (404), or no RBAC for it (403): scaling goes on
                self.logger.warning("Autoscaler: cannot annotate pod %s: %s", meta["name"], error)
