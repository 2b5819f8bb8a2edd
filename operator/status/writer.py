"""The one writer of an InferenceService's status.

Every handler (create, update, resume, the resync timer, events of children and pods) computes the
status from a fresh read of the object and hands it to ``StatusWriter.update``. Per object, reads,
computations and writes are serialized, and each write carries the resourceVersion it was computed
from: when something else changed the object meanwhile (kopf's own annotations, another operator
replica after a failover), the API server answers 409 and the writer reads and computes again rather
than overwrite a newer status with an older one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fleetserve.operator.kube import CONFLICT, KubeClient, KubeError, Obj, Ref, get_alive
from fleetserve.operator.status.compute import status_changes

MAX_ATTEMPTS = 5
Compute = Callable[[Obj], Awaitable[dict[str, Any]]]


class StatusWriter:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _lock(self, ref: Ref) -> asyncio.Lock:
        return self._locks.setdefault((ref.namespace, ref.name), asyncio.Lock())

    async def update(self, ref: Ref, compute: Compute) -> Obj | None:
        """Read the object, ``compute`` its new status, write what changed; None if it is gone or going.

        ``compute`` may write children (reconcile does); it runs again after a conflict, which is safe
        because reconcile is idempotent.
        """
        async with self._lock(ref):
            for _ in range(MAX_ATTEMPTS):
                live = await get_alive(self.client, ref)
                if live is None:
                    self._locks.pop((ref.namespace, ref.name), None)
                    return None
                changes = status_changes(live.get("status") or {}, await compute(live))
                if not changes:
                    return live
                try:
                    return await self.client.patch_status(ref, changes, live["metadata"].get("resourceVersion"))
                except KubeError as error:
                    if error.status != CONFLICT:
                        raise
            raise KubeError(CONFLICT, f"the status of {ref.name} kept changing during {MAX_ATTEMPTS} attempts")
