"""The autoscaler's pure decision: one sample of the pods' load → a replica count and its reason.

No I/O and no clock: the caller passes the sample, the spec's settings, the current count and the
window of past recommendations, and gets back the count to ask for and the new window.

Per replica the target is ``C`` running requests (its batch cap, ``--max-running-requests``) plus
``T`` waiting ones (``targetQueueDepth``). With ``L`` the requests in the system (running + waiting on
the ready pods + held by the routers):

- ``need = ceil(L / (C + T))`` replicas keep every queue at or under ``T``: more than the current count
  scales up to it;
- ``calm = ceil(L / C)`` replicas run everything without a queue: fewer than the current count scales
  down to it;
- in between the count stays. Scaling up empties the queues, which is what the band absorbs: a
  queue-depth rule alone would then scale down, refill the queues and scale up again under a steady
  load.

The recommendation is clamped to [min, max], then stabilized as the HPA does: up to the lowest
recommendation of the scale-up window, down to the highest of the scale-down window.

Scale to zero (``min`` 0): a sample recommends 0 only when it saw no request at all, neither in flight
nor finished since the previous sample (the pods' finished-request counters), so a service whose
requests are short and sparse, and so rarely caught in flight, keeps its replica; after a whole
scale-down window of such samples the count goes to 0. At 0 there is no pod to read: the routers hold
the requests that arrive, and ``ceil(held / (C + T))`` replicas (at least 1) are asked for at once,
with no window, since every held request waits for a cold start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple


class PodLoad(NamedTuple):
    """One ready runtime pod's ``/metrics``: requests running and waiting, its batch cap if it says."""

    name: str
    running: float
    waiting: float
    max_running: float | None = None  # fleetserve:max_running_requests; None when the pod does not export it

    @property
    def load(self) -> float:
        return self.running + self.waiting


class Sample(NamedTuple):
    """One sampling round: what the ready pods and the routers answered."""

    pods: tuple[PodLoad, ...]  # the ready pods that answered
    num_failed: int = 0  # ready pods whose /metrics could not be read
    held: float = 0.0  # requests the routers hold because no runtime pod is ready
    num_routers: int = 0  # routers that answered (0: held is unknown and taken as 0)
    finished: float | None = None  # requests the pods finished since the previous sample (None: unknown)

    @property
    def num_ready(self) -> int:
        return len(self.pods) + self.num_failed


@dataclass(frozen=True, slots=True)
class Policy:
    """The spec's autoscaling settings, and the batch cap to assume for a pod that does not export one."""

    min: int
    max: int
    target_queue_depth: int
    scale_up_window: float = 0.0
    scale_down_window: float = 300.0
    default_max_running: int = 256


class Recommendation(NamedTuple):
    time: float
    replicas: int


Phase = Literal["scale_up", "scale_down", "steady", "no_data", "held_without_pods", "scale_from_zero",
                "scaled_to_zero"]


class Decision(NamedTuple):
    replicas: int  # the count to ask for
    recommendation: int | None  # this sample's recommendation before the windows; None without data
    phase: Phase
    message: str
    queue_depth: int  # waiting + held requests in this sample
    window: tuple[Recommendation, ...]  # the window to pass to the next call

    @property
    def has_data(self) -> bool:
        return self.recommendation is not None


def capacity(sample: Sample, policy: Policy) -> float:
    """Mean batch cap of the pods that answered (each pod's own gauge, else the policy's default)."""
    caps = [pod.max_running if pod.max_running else policy.default_max_running for pod in sample.pods]
    return sum(caps) / len(caps) if caps else float(policy.default_max_running)


def clamp(replicas: int, policy: Policy) -> int:
    return max(policy.min, min(policy.max, replicas))


def recommend(load: float, per_replica: float, target: int, current: int) -> int:
    """The band rule: scale up past ``ceil(L/(C+T))``, down to ``ceil(L/C)``, otherwise stay."""
    need = math.ceil(load / (per_replica + target))
    calm = math.ceil(load / per_replica)
    if need > current:
        return need
    if calm < current:
        return calm
    return current


def stabilize(
    window: Sequence[Recommendation], now: float, replicas: int, current: int, policy: Policy
) -> tuple[int, tuple[Recommendation, ...]]:
    """The HPA's stabilization: the count moves up to the lowest recommendation of the last
    ``scale_up_window`` seconds and down to the highest of the last ``scale_down_window`` (this
    sample's recommendation always counts; a window of 0 holds only it)."""
    older = tuple(r for r in window if now - r.time < max(policy.scale_up_window, policy.scale_down_window))
    up = min([replicas] + [r.replicas for r in older if now - r.time < policy.scale_up_window])
    down = max([replicas] + [r.replicas for r in older if now - r.time < policy.scale_down_window])
    return min(max(current, up), down), (*older, Recommendation(now, replicas))


def held_need(sample: Sample, policy: Policy) -> int:
    """Replicas the routers' held requests need, each taking the configured cap C plus T waiting (no
    pod answered, so no pod's own cap is known)."""
    return math.ceil(sample.held / (policy.default_max_running + policy.target_queue_depth))


def without_pods(sample: Sample, policy: Policy, current: int, window: Sequence[Recommendation],
                 now: float, queue_depth: int) -> Decision:
    """No ready pod answered: scale only on the routers' held requests, never down."""
    window = tuple(window)
    if sample.num_ready == 0 and current == 0:  # scaled to zero: the routers alone see the demand
        if not sample.num_routers:
            return Decision(0, None, "no_data", "scaled to zero and no router answered, so requests held "
                            "there are unknown: keeping 0 replicas", queue_depth, window)
        if sample.held == 0:
            return Decision(0, 0, "scaled_to_zero", "scaled to zero: no request is held", queue_depth, window)
        replicas = clamp(max(held_need(sample, policy), 1), policy)
        return Decision(replicas, replicas, "scale_from_zero", f"scaled to zero and the routers hold "
                        f"{sample.held:g} requests: starting {replicas} replicas", queue_depth,
                        (Recommendation(now, replicas),))
    if sample.num_ready == 0 and sample.held > 0:  # pods are on their way: more if the held need more
        replicas = clamp(max(current, held_need(sample, policy), 1), policy)
        verb = "asking for" if replicas > current else "keeping"
        return Decision(replicas, None, "held_without_pods", f"no runtime pod is ready and the routers hold "
                        f"{sample.held:g} requests: {verb} {replicas} replicas", queue_depth, window)
    why = (
        f"the /metrics of all {sample.num_failed} ready runtime pods could not be read"
        if sample.num_failed
        else "no runtime pod is ready"
    )
    return Decision(current, None, "no_data", f"{why}: keeping {current} replicas", queue_depth, window)


def decide(
    sample: Sample, policy: Policy, current: int, window: Sequence[Recommendation], now: float
) -> Decision:
    """The count to ask for after ``sample``; ``current`` is the count asked for so far."""
    current = clamp(current, policy)
    waiting = sum(pod.waiting for pod in sample.pods) + sample.held
    queue_depth = math.ceil(waiting)
    if not sample.pods:
        return without_pods(sample, policy, current, window, now, queue_depth)
    load = sum(pod.load for pod in sample.pods) + sample.held
    per_replica = capacity(sample, policy)
    raw = recommend(load, per_replica, policy.target_queue_depth, current)
    partial = ""
    if sample.num_failed:  # part of the load is unknown: never scale down on it
        raw = max(raw, current)
        partial = f"; {sample.num_failed} of {sample.num_ready} ready pods did not answer, so no scale-down"
    elif raw == 0 and policy.min == 0 and sample.finished != 0:  # requests came and went between samples (or unknown): not idle
        raw = 1
        partial = ("; requests finished since the last sample, so not idle" if sample.finished
                   else "; finished requests unknown, so not idle")
    recommendation = clamp(raw, policy)
    replicas, kept = stabilize(window, now, recommendation, current, policy)
    phase: Phase = "scale_up" if replicas > current else "scale_down" if replicas < current else "steady"
    message = (
        f"{load:g} requests ({waiting:g} waiting or held) on {len(sample.pods)} ready pods, capacity "
        f"{per_replica:g} running + {policy.target_queue_depth} waiting per replica: recommend "
        f"{recommendation}, asking for {replicas}{partial}"
    )
    return Decision(replicas, recommendation, phase, message, queue_depth, kept)


def deletion_costs(pods: Sequence[PodLoad]) -> dict[str, int]:
    """``controller.kubernetes.io/pod-deletion-cost`` per pod: its requests in flight, so the
    ReplicaSet removes the least loaded pods first on a scale-down."""
    return {pod.name: round(pod.load) for pod in pods}
