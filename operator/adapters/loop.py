"""The adapter rollout's I/O, one InferenceService at a time: read the pods, decide, act, write.

Every ``ADAPTER_SYNC_SECONDS`` (operator/defaults.py) the daemon (handlers.py) calls
``AdapterRollout.step``:

1. list the ready runtime pods and read each one's ``GET /v1/models`` (client.py);
2. ``decide`` (decide.py) what each pod lacks or has too many of, and send the loads and unloads, the
   pods concurrently, each pod's actions in order;
3. write ``status.adapters`` and the ``AdaptersReady`` condition through the one ``StatusWriter``.

A pod that restarts answers with no adapters and gets them on the next round. The failed loads (for
the backoff) live in memory only: after an operator restart every failed load is tried again at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from fleetserve.operator import defaults, names
from fleetserve.operator.adapters.client import (
    RuntimeCallError,
    auth_headers,
    load_adapter,
    read_adapters,
    unload_adapter,
)
from fleetserve.operator.adapters.decide import (
    Action,
    Failure,
    Outcome,
    PodAdapters,
    Report,
    decide,
    next_failures,
    summarize,
)
from fleetserve.operator.adapters.locate import wanted_adapters
from fleetserve.operator.kube import KubeClient, KubeError, Obj, Ref, get_alive
from fleetserve.operator.pods import is_ready, pod_url
from fleetserve.operator.spec import InferenceServiceSpec
from fleetserve.operator.status.compute import adapters_condition, adapters_status
from fleetserve.operator.status.conditions import now_rfc3339
from fleetserve.operator.status.writer import StatusWriter
from fleetserve.operator.validation import INVALID_SPEC, check_spec

MAX_CONCURRENT_PODS = 16
API_KEY_UNAVAILABLE = "ApiKeyUnavailable"


class ApiKeyError(Exception):
    pass


@dataclass(slots=True)
class AdapterRollout:
    """The adapter rollout of one InferenceService; lives as long as its daemon."""

    client: KubeClient
    writer: StatusWriter
    ref: Ref
    logger: kopf.Logger
    session: aiohttp.ClientSession
    interval: float = defaults.ADAPTER_SYNC_SECONDS
    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def step(self) -> float | None:
        """One round; returns the seconds until the next, None once the object is gone."""
        live = await get_alive(self.client, self.ref)
        if live is None:
            return None
        check = check_spec(self.ref.name, live.get("spec") or {})
        if check.spec is None:
            await self._write(
                Report((), False, INVALID_SPEC, "the spec is invalid; see the Degraded condition")
            )
            return self.interval
        try:
            headers = auth_headers(await self._api_key(check.spec))
        except ApiKeyError as error:
            await self._write(Report((), False, API_KEY_UNAVAILABLE, str(error)))
            return self.interval
        status = live.get("status") or {}
        scaled_to_zero = check.spec.autoscaling.enabled and status.get("desiredReplicas") == 0
        await self._write(await self.sync(check.spec, headers, scaled_to_zero))
        return self.interval

    async def sync(self, spec: InferenceServiceSpec, headers: Mapping[str, str],
                   scaled_to_zero: bool = False) -> Report:
        wanted = wanted_adapters(spec)
        pods = await self._ready_pods()
        observed = await self._observe(pods, headers)
        now = self._now()
        plan = decide(wanted, observed, self.failures, now)
        urls = {pod["metadata"]["name"]: pod_url(pod) for pod in pods}
        gate = asyncio.Semaphore(MAX_CONCURRENT_PODS)
        done = await asyncio.gather(
            *(self._act(gate, name, urls[name] or "", actions, headers) for name, actions in plan.items())
        )
        outcomes = [outcome for pod_outcomes in done for outcome in pod_outcomes]
        self._log(outcomes)
        self.failures = next_failures(self.failures, wanted, observed, outcomes, now)
        return summarize(wanted, observed, outcomes, self.failures, scaled_to_zero)

    async def _ready_pods(self) -> list[Obj]:
        selector = names.selector_labels(self.ref.name, names.RUNTIME)
        pods = await self.client.list(
            "v1", "Pod", self.ref.namespace, names.selector_string(self.ref.name, names.RUNTIME)
        )
        return sorted(
            (
                pod
                for pod in pods
                if selector.items() <= (pod["metadata"].get("labels") or {}).items() and is_ready(pod)
            ),
            key=lambda pod: pod["metadata"]["name"],
        )

    async def _observe(self, pods: Sequence[Obj], headers: Mapping[str, str]) -> list[PodAdapters]:
        gate = asyncio.Semaphore(MAX_CONCURRENT_PODS)

        async def one(pod: Obj) -> PodAdapters:
            name, url = pod["metadata"]["name"], pod_url(pod)
            if url is None:
                return PodAdapters(name, None, "it has no IP or no container port named http")
            async with gate:
                try:
                    return PodAdapters(name, await read_adapters(self.session, url, headers))
                except RuntimeCallError as error:
                    return PodAdapters(name, None, str(error))

        return list(await asyncio.gather(*(one(pod) for pod in pods)))

    async def _act(
        self,
        gate: asyncio.Semaphore,
        pod: str,
        url: str,
        actions: Sequence[Action],
        headers: Mapping[str, str],
    ) -> list[Outcome]:
        outcomes = []
        async with gate:
            for action in actions:
                if action.kind == "load":
                    error = await load_adapter(self.session, url, headers, action.name, action.path)
                else:
                    error = await unload_adapter(self.session, url, headers, action.name)
                outcomes.append(Outcome(pod, action, error))
        return outcomes

    def _log(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            action = outcome.action
            if outcome.error:
                self.logger.warning(
                    "Adapters: %s of %s on pod %s failed: %s",
                    action.kind,
                    action.name,
                    outcome.pod,
                    outcome.error,
                )
            else:
                self.logger.info("Adapters: %sed %s on pod %s", action.kind, action.name, outcome.pod)

    async def _api_key(self, spec: InferenceServiceSpec) -> str | None:
        """The runtime's API key from spec.apiKeySecret (the pods get it from the same Secret)."""
        secret_ref = spec.api_key_secret
        if secret_ref is None:
            return None
        where = f"spec.apiKeySecret {secret_ref.name}/{secret_ref.key}"
        try:
            secret = await self.client.get(Ref("v1", "Secret", self.ref.namespace, secret_ref.name))
        except KubeError as error:
            raise ApiKeyError(f"cannot read {where}: {error}") from error
        if secret is None:
            raise ApiKeyError(f"{where}: the Secret does not exist")
        value = (secret.get("data") or {}).get(secret_ref.key)
        if value is None:
            raise ApiKeyError(f"{where}: the Secret has no such key")
        try:
            return base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise ApiKeyError(f"{where}: not base64-encoded UTF-8 text") from error

    async def _write(self, report: Report) -> None:
        state = adapters_condition(report.is_ready, report.reason, report.message)
        entries = [
            {"name": a.name, "readyReplicas": a.ready_replicas, "message": a.message} for a in report.adapters
        ]

        async def compute(live: Obj) -> dict[str, Any]:
            status = live.get("status") or {}
            return adapters_status(status, state, live["metadata"].get("generation"), now_rfc3339(), entries)

        await self.writer.update(self.ref, compute)
