"""The adapter rollout's pure core: the spec's adapters and what each ready pod has loaded → what to
send to each pod, and, once sent, the per-adapter status.

No I/O and no clock: the caller passes what it read from the pods (``GET /v1/models``: adapter name →
the path it was loaded from), the failed loads it remembers and the time, and gets back the actions.

The operator owns the set of adapters on its pods: on every ready pod it

- loads each spec adapter that is missing, or loaded from another path (the spec's source changed:
  a load under the same name replaces the weights);
- unloads every adapter that is not in the spec (one loaded by hand with ``/load_lora_adapter`` too).

A load that failed is not sent again to that pod before its backoff (``RETRY_BASE_SECONDS``, doubling
up to ``RETRY_MAX_SECONDS``) unless the spec's path for it changed. A restarted pod answers with no
adapters, so the next round loads them all again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

RETRY_BASE_SECONDS = 10.0
RETRY_MAX_SECONDS = 160.0

# AdaptersReady reasons
NO_ADAPTERS = "NoAdapters"
ADAPTERS_LOADED = "AdaptersLoaded"
NO_READY_PODS = "NoReadyPods"
SCALED_TO_ZERO = "ScaledToZero"
LOAD_FAILED = "LoadFailed"
POD_UNREACHABLE = "PodUnreachable"
UNLOAD_FAILED = "UnloadFailed"
LOADING = "Loading"


class Wanted(NamedTuple):
    """A spec adapter and the ``lora_path`` the runtime is given for it (a hub id or a mounted dir)."""

    name: str
    path: str


class PodAdapters(NamedTuple):
    """One ready pod as read: its loaded adapters (name → path), or None and why it could not be read."""

    pod: str
    loaded: Mapping[str, str] | None
    error: str = ""


class Action(NamedTuple):
    kind: Literal["load", "unload"]
    name: str
    path: str = ""  # the lora_path of a load


class Outcome(NamedTuple):
    """What the pod answered to one action: ``error`` is "" on success, else the runtime's reason."""

    pod: str
    action: Action
    error: str = ""


class Failure(NamedTuple):
    """The last failed load of an adapter on a pod."""

    path: str
    message: str
    attempts: int
    retry_at: float


Failures = Mapping[tuple[str, str], Failure]  # (pod, adapter name) -> its last failed load


class AdapterStatus(NamedTuple):
    name: str
    ready_replicas: int  # ready pods that have it loaded from the spec's path
    message: str  # "" when every ready pod has it, else why not (the first pod's reason)


class Report(NamedTuple):
    """The rollout's result for the status: per-adapter entries and the AdaptersReady condition."""

    adapters: tuple[AdapterStatus, ...]
    is_ready: bool
    reason: str
    message: str


def is_backing_off(failure: Failure | None, path: str, now: float) -> bool:
    return failure is not None and failure.path == path and now < failure.retry_at


def decide(
    wanted: Sequence[Wanted], pods: Sequence[PodAdapters], failures: Failures, now: float
) -> dict[str, tuple[Action, ...]]:
    """Per readable pod, its actions: unloads first (they free room under --max-loaded-loras), then loads
    in spec order. Pods that could not be read get none."""
    names = {w.name for w in wanted}
    plan = {}
    for pod in pods:
        if pod.loaded is None:
            continue
        unloads = [Action("unload", name) for name in sorted(pod.loaded) if name not in names]
        loads = [
            Action("load", w.name, w.path)
            for w in wanted
            if pod.loaded.get(w.name) != w.path
            and not is_backing_off(failures.get((pod.pod, w.name)), w.path, now)
        ]
        if unloads or loads:
            plan[pod.pod] = (*unloads, *loads)
    return plan


def retry_delay(attempts: int) -> float:
    return min(RETRY_BASE_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS)


def next_failures(
    failures: Failures,
    wanted: Sequence[Wanted],
    pods: Sequence[PodAdapters],
    outcomes: Sequence[Outcome],
    now: float,
) -> dict[tuple[str, str], Failure]:
    """The failures to remember: this round's failed loads (attempts counted per path), earlier ones still
    current; a success, a pod gone, an adapter gone from the spec or a new path forgets one."""
    paths = {w.name: w.path for w in wanted}
    present = {pod.pod for pod in pods}
    kept = {
        key: failure
        for key, failure in failures.items()
        if key[0] in present and paths.get(key[1]) == failure.path
    }
    for outcome in outcomes:
        if outcome.action.kind != "load":
            continue
        key = (outcome.pod, outcome.action.name)
        if not outcome.error:
            kept.pop(key, None)
            continue
        before = kept.get(key)
        attempts = before.attempts + 1 if before is not None and before.path == outcome.action.path else 1
        kept[key] = Failure(outcome.action.path, outcome.error, attempts, now + retry_delay(attempts))
    return kept


def loaded_after(pod: PodAdapters, outcomes: Sequence[Outcome]) -> dict[str, str]:
    """A readable pod's adapters once this round's actions are done."""
    loaded = dict(pod.loaded or {})
    for outcome in outcomes:
        if outcome.pod != pod.pod or outcome.error:
            continue
        if outcome.action.kind == "load":
            loaded[outcome.action.name] = outcome.action.path
        else:
            loaded.pop(outcome.action.name, None)
    return loaded


def _missing_reason(pod: PodAdapters, adapter: Wanted, failures: Failures) -> str:
    if pod.loaded is None:
        return f"pod {pod.pod}: {pod.error}"
    failure = failures.get((pod.pod, adapter.name))
    if failure is not None and failure.path == adapter.path:
        return f"pod {pod.pod}: {failure.message}"
    return f"pod {pod.pod}: not loaded yet"


def summarize(
    wanted: Sequence[Wanted], pods: Sequence[PodAdapters], outcomes: Sequence[Outcome], failures: Failures,
    scaled_to_zero: bool = False,
) -> Report:
    """The status after a round. ``failures`` are those remembered after it (``next_failures``), so a load
    that is backing off still shows its reason. AdaptersReady is True when every spec adapter is loaded on
    every ready pod; with no ready pod it is False (NoReadyPods): nothing serves the adapters yet, unless
    the autoscaler has scaled the service to zero (``scaled_to_zero``): then True (ScaledToZero), as the
    pod started for the next request loads them before it turns ready."""
    after = {pod.pod: loaded_after(pod, outcomes) for pod in pods if pod.loaded is not None}
    statuses = []
    for adapter in wanted:
        missing = [pod for pod in pods if after.get(pod.pod, {}).get(adapter.name) != adapter.path]
        message = _missing_reason(missing[0], adapter, failures) if missing else ""
        statuses.append(AdapterStatus(adapter.name, len(pods) - len(missing), message))
    return Report(tuple(statuses), *_condition(wanted, pods, outcomes, failures, statuses, scaled_to_zero))


def _condition(
    wanted: Sequence[Wanted],
    pods: Sequence[PodAdapters],
    outcomes: Sequence[Outcome],
    failures: Failures,
    statuses: Sequence[AdapterStatus],
    scaled_to_zero: bool = False,
) -> tuple[bool, str, str]:
    unload_errors = [o for o in outcomes if o.action.kind == "unload" and o.error]
    if wanted and not pods and scaled_to_zero:
        message = "scaled to zero: the pod started for the next request loads the adapters before it turns ready"
        return True, SCALED_TO_ZERO, message
    if wanted and not pods:
        return False, NO_READY_PODS, "no runtime pod is ready; a pod loads the adapters before it turns ready"
    paths = {w.name: w.path for w in wanted}
    load_errors = sorted(
        (pod, name, failure.message)
        for (pod, name), failure in failures.items()
        if paths.get(name) == failure.path
    )
    if load_errors:
        pod, name, message = load_errors[0]
        more = f" ({len(load_errors) - 1} more failed loads)" if len(load_errors) > 1 else ""
        return False, LOAD_FAILED, f"adapter {name} on pod {pod}: {message}{more}"
    unreadable = [pod for pod in pods if pod.loaded is None]
    if unreadable:
        return (
            False,
            POD_UNREACHABLE,
            f"cannot read the adapters of pod {unreadable[0].pod}: {unreadable[0].error}",
        )
    if unload_errors:
        first = unload_errors[0]
        return False, UNLOAD_FAILED, f"adapter {first.action.name} on pod {first.pod}: {first.error}"
    if not wanted:
        return True, NO_ADAPTERS, "spec.adapters is empty"
    if all(s.ready_replicas == len(pods) for s in statuses):
        return True, ADAPTERS_LOADED, f"{len(wanted)} adapters loaded on each of {len(pods)} ready pods"
    return False, LOADING, next(s.message for s in statuses if s.message)
