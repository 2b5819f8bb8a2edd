"""A local cluster for tests: ``ClusterApi`` (kmock) + the ``Kubelet`` stand-in + the chart, applied.

    async with LocalCluster(tmp_path) as cluster:
        await cluster.install_chart({"peering": {"enabled": False}})
        await cluster.apply(yaml.safe_load(open("examples/inferenceservice-demo.yaml")), namespace="demo")
        url = await cluster.service_url("demo", "NAME")   # what DNS + kube-proxy would give a client

The operator is not started here: the chart's Deployment is, like every other Deployment, run by the
kubelet stand-in as a `fleetserve operator` process logged in with the stand-in's service-account
kubeconfig. ``service_url`` stands in for cluster DNS and kube-proxy (and an Ingress): it resolves a
Service to the address of one ready endpoint in its EndpointSlice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml
from apiserver import ClusterApi
from kubelet import Kubelet

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "fleetserve"
RELEASE = "fleetserve"
CHART_NAMESPACE = "fleetserve-system"
GC_PERIOD_SECONDS = 0.5

# kind -> (API path prefix, plural, namespaced)
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "InferenceService": ("/apis/fleetserve.io/v1alpha1", "inferenceservices", True),
}
APPLY_ORDER = list(KINDS)


def object_path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    base = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{base}/{name}" if name else base


def render_chart(values: dict[str, Any], namespace: str = CHART_NAMESPACE) -> list[dict[str, Any]]:
    """What `helm install` would send: the chart's crds/ first, then its rendered templates."""
    import helm_python as helm

    objects = [doc for path in sorted((CHART_DIR / "crds").glob("*.yaml"))
               for doc in yaml.safe_load_all(path.read_text()) if doc]
    rendered = helm.Chart.load(str(CHART_DIR)).render(values, name=RELEASE, namespace=namespace, is_install=True)
    for path, text in sorted(rendered.items()):
        if not path.endswith("NOTES.txt"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return sorted(objects, key=lambda o: APPLY_ORDER.index(o["kind"]) if o["kind"] in KINDS else len(KINDS))


class LocalCluster:
    def __init__(self, workdir: Path, **kubelet_options: Any) -> None:
        self.workdir = workdir
        self.api = ClusterApi()
        self._server = kmock.Server(self.api)
        self._kubelet_options = kubelet_options
        self.kubelet: Kubelet | None = None
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LocalCluster:
        await self.api.__aenter__()
        await self._server.__aenter__()
        self.url = f"http://{self._server.host}:{self._server.port}"
        self.http = aiohttp.ClientSession(base_url=self.url)
        self.kubelet = Kubelet(self.api, self.url, self.workdir, **self._kubelet_options)
        await self.kubelet.start()
        self._gc = asyncio.create_task(self._collect_garbage_periodically())
        return self

    async def _collect_garbage_periodically(self) -> None:
        """The garbage collector runs continuously in a cluster, not only after writes."""
        while True:
            await asyncio.sleep(GC_PERIOD_SECONDS)
            await self.api.sweep()

    async def __aexit__(self, *exc: Any) -> None:
        self._gc.cancel()
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self.http is not None:
            await self.http.close()
        await self._server.__aexit__(*exc)
        await self.api.__aexit__(*exc)

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.request(method, path, json=body, headers={"Content-Type": content_type}) as reply:
            return reply.status, await reply.json(content_type=None)

    async def apply(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """kubectl apply: create, or merge-patch what exists."""
        meta = obj.setdefault("metadata", {})
        _, _, namespaced = KINDS[obj["kind"]]
        if namespaced:
            meta["namespace"] = meta.get("namespace") or namespace or "default"
            await self.ensure_namespace(meta["namespace"])
        path = object_path(obj["kind"], None, meta.get("namespace"))
        status, reply = await self.request("POST", path, obj)
        if status == 409:
            status, reply = await self.request("PATCH", f"{path}/{meta['name']}", obj, "application/merge-patch+json")
        assert status < 400, reply
        return reply

    async def ensure_namespace(self, name: str) -> None:
        if self.api.live("v1/namespaces", None, name) is None:
            await self.request("POST", "/api/v1/namespaces",
                               {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    async def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        status, reply = await self.request("DELETE", object_path(kind, name, namespace))
        assert status < 400, reply

    async def install_chart(self, values: dict[str, Any], namespace: str = CHART_NAMESPACE) -> list[dict[str, Any]]:
        await self.ensure_namespace(namespace)
        objects = render_chart(values, namespace)
        for obj in objects:
            await self.apply(obj, namespace)
        return objects

    def endpoints(self, namespace: str, service: str) -> list[dict[str, Any]]:
        slices = self.api.live_objects("discovery.k8s.io/v1/endpointslices", namespace)
        return [(endpoint, s.get("ports") or []) for s in slices
                if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == service
                for endpoint in s.get("endpoints") or []]

    def service_url(self, namespace: str, service: str) -> str | None:
        """DNS + kube-proxy stand-in: http://IP:PORT of a ready endpoint of the Service, or None."""
        for endpoint, ports in self.endpoints(namespace, service):
            if endpoint["conditions"].get("ready") and ports:
                return f"http://{endpoint['addresses'][0]}:{ports[0]['port']}"
        return None

    def owned_by(self, uid: str) -> list[dict[str, Any]]:
        """Every live object whose owner chain leads to ``uid``."""
        objects = self.api.live_objects()
        found: list[dict[str, Any]] = []
        owners = {uid}
        while True:
            new = [o for o in objects if o not in found and any(
                ref.get("uid") in owners for ref in o["metadata"].get("ownerReferences") or [])]
            if not new:
                return found
            found += new
            owners |= {o["metadata"]["uid"] for o in new}

    def pod_log(self, name_prefix: str) -> str:
        logs = sorted((self.workdir / "pods").glob(f"{name_prefix}*/container.log"))
        return "\n".join(f"--- {p.parent.name}\n{p.read_text()[-3000:]}" for p in logs)


async def eventually(check: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """Poll ``check`` (sync or async) until truthy; AssertionError with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(0.1)
