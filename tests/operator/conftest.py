"""Fixtures: kmock's emulated Kubernetes API and the real operator (kopf) running against it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
import pytest

from fleetserve.operator import names
from fleetserve.operator.config import OperatorConfig
from fleetserve.operator.handlers import build_registry, make_memo

NAMESPACE = "ml"
UID = "4f9a1c2e-0000-4000-8000-000000000001"
RESYNC_SECONDS = 0.5
WAIT_SECONDS = 10.0
ISVC_PATH = f"/apis/{names.API_VERSION}/namespaces/{NAMESPACE}/{names.PLURAL}"

RESOURCES = {
    f"{names.API_VERSION}/{names.PLURAL}": ("InferenceService", {"status", "scale"}),
    "apps/v1/deployments": ("Deployment", {"status", "scale"}),
    "v1/services": ("Service", {"status"}),
    "v1/serviceaccounts": ("ServiceAccount", set()),
    "rbac.authorization.k8s.io/v1/roles": ("Role", set()),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", set()),
    "networking.k8s.io/v1/ingresses": ("Ingress", {"status"}),
    "v1/events": ("Event", set()),
}
# kopf's backbone: it waits for these to be discoverable even when it does not need their objects.
CLUSTER_RESOURCES = {
    "v1/namespaces": "Namespace",
    "apiextensions.k8s.io/v1/customresourcedefinitions": "CustomResourceDefinition",
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def inference_service(name: str = "qwen", spec: dict[str, Any] | None = None, generation: int = 1) -> dict:
    """An InferenceService as the API server would store it (kmock assigns no uid or generation)."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": UID, "generation": generation,
                     "resourceVersion": "1"},
        "spec": copy.deepcopy(spec) if spec is not None else {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}},
    }


@pytest.fixture()
def api(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    for key, (kind, subresources) in RESOURCES.items():
        kmock.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS, subresources=subresources)
    for key, kind in CLUSTER_RESOURCES.items():
        kmock.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=False, verbs=VERBS)
    return kmock


def live(api: kmock.KubernetesEmulator, resource: str, name: str) -> dict | None:
    """The stored object, or None if it does not exist (or was deleted)."""
    key = (kmock.resource(resource), NAMESPACE, name)
    if key not in api.objects or api.objects[key].deleted:
        return None
    return copy.deepcopy(dict(api.objects[key].raw))


async def eventually(check: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """Poll until ``check()`` returns something truthy; fail with its last value after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(0.05)


@pytest.fixture()
async def operator(api: kmock.KubernetesEmulator) -> AsyncIterator[kmock.KubernetesEmulator]:
    """The operator's real registry and settings, logged in to kmock instead of a cluster."""
    config = OperatorConfig(resync_seconds=RESYNC_SECONDS, standalone=True, liveness_endpoint=None,
                            runtime_image="registry.test/fleetserve:test")
    url = str(api.url).rstrip("/")
    registry = build_registry(config, login=lambda **_: kopf.ConnectionInfo(server=url))
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(
        registry=registry, memo=make_memo(config), clusterwide=True, standalone=True,
        ready_flag=ready, stop_flag=stop,
    ))
    await asyncio.wait_for(ready.wait(), WAIT_SECONDS)
    yield api
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_SECONDS)
