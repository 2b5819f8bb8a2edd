"""Discovery: EndpointSlices -> worker URLs (pure), and the real watch against kmock's emulated API."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import kmock
import pytest
import yaml

from fleetserve.runtime.router.discovery import (
    EndpointSliceWatch,
    endpoints_from_slices,
    own_namespace,
    slice_port,
)
from fleetserve.runtime.router.workers import WorkerSet

NAMESPACE = "ml"
SERVICE = "qwen-runtime"
SLICES = "discovery.k8s.io/v1/endpointslices"
SLICES_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"


def endpoint(ip: str, ready: bool | None = True, terminating: bool | None = None) -> dict:
    conditions = {k: v for k, v in (("ready", ready), ("terminating", terminating)) if v is not None}
    return {"addresses": [ip], "conditions": conditions}


def endpoint_slice(name: str, endpoints: list[dict], port: int = 30000, service: str = SERVICE) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints}


@pytest.mark.parametrize(("slices", "expected"), [
    # not ready and not terminating: a pod starting
    ([endpoint_slice("a", [endpoint("10.0.0.1"), endpoint("10.0.0.2", ready=False)])],
     {"http://10.0.0.1:30000": "ready", "http://10.0.0.2:30000": "starting"}),
    # nil `ready` means ready; terminating endpoints drain
    ([endpoint_slice("a", [endpoint("10.0.0.1", ready=None), endpoint("10.0.0.3", ready=False, terminating=True),
                           endpoint("10.0.0.4", ready=True, terminating=True)])],
     {"http://10.0.0.1:30000": "ready", "http://10.0.0.3:30000": "terminating",
      "http://10.0.0.4:30000": "terminating"}),
    # an address in two slices takes the most serving state
    ([endpoint_slice("a", [endpoint("10.0.0.1", ready=False)]), endpoint_slice("b", [endpoint("10.0.0.1")])],
     {"http://10.0.0.1:30000": "ready"}),
    ([endpoint_slice("a", [endpoint("10.0.0.1", ready=False, terminating=True)]),
      endpoint_slice("b", [endpoint("10.0.0.1", ready=False)])],
     {"http://10.0.0.1:30000": "starting"}),
    ([endpoint_slice("a", [])], {}),
])
def test_endpoints_from_slices(slices, expected):
    assert endpoints_from_slices(slices, "http") == expected


def test_port_by_name_else_the_only_one_and_ipv6_in_brackets(tmp_path):
    assert slice_port({"ports": [{"name": "x", "port": 1}, {"name": "http", "port": 2}]}, "http") == 2
    assert slice_port({"ports": [{"name": "other", "port": 7}]}, "http") == 7
    s = endpoint_slice("v6", [endpoint("fd00::1")])
    assert endpoints_from_slices([s], "http") == {"http://[fd00::1]:30000": "ready"}
    (tmp_path / "ns").write_text("team-a\n")
    assert own_namespace(tmp_path / "ns") == "team-a" and own_namespace(tmp_path / "none") == "default"


@pytest.fixture()
def api(kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> kmock.KubernetesEmulator:
    """kmock serving EndpointSlices, and a kubeconfig pointing at it (what the router loads off-cluster)."""
    kmock.resources[SLICES] = kmock.ResourceInfo(kind="EndpointSlice", namespaced=True,
                                                 verbs={"get", "list", "watch", "create", "patch", "delete"})
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "kmock",
                  "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                  "users": [{"name": "u", "user": {"token": "t"}}],
                  "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}]}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return kmock


async def send(api: kmock.KubernetesEmulator, method: str, path: str, body: dict | None = None) -> None:
    async with api.request(method, path, json=body) as response:
        assert response.status < 400, await response.text()


async def until(check, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_worker_set_follows_endpointslices_in_kmock(api):
    workers = WorkerSet()
    watch = EndpointSliceWatch(SERVICE, NAMESPACE, "http", workers.sync, asyncio.get_running_loop())
    watch.start()
    try:
        def state() -> dict[str, str]:
            return {url: w.phase if w.phase in ("starting", "draining") else "listed"
                    for url, w in workers.workers.items()}

        one = endpoint_slice("qwen-runtime-abc", [endpoint("127.0.0.2", ready=False)])
        await send(api, "POST", SLICES_PATH, one)
        await send(api, "POST", SLICES_PATH, endpoint_slice("other-svc-x", [endpoint("127.0.0.9")], service="other"))
        await until(lambda: state() == {"http://127.0.0.2:30000": "starting"})  # known, no traffic yet
        ready = copy.deepcopy(one)
        ready["endpoints"] = [endpoint("127.0.0.2"), endpoint("127.0.0.3")]
        await send(api, "PATCH", f"{SLICES_PATH}/qwen-runtime-abc", {"endpoints": ready["endpoints"]})
        await until(lambda: state() == {"http://127.0.0.2:30000": "listed", "http://127.0.0.3:30000": "listed"})
        # a pod terminates: it stays known (in-flight requests finish) but gets nothing new
        await send(api, "PATCH", f"{SLICES_PATH}/qwen-runtime-abc",
                   {"endpoints": [endpoint("127.0.0.2", ready=False, terminating=True), endpoint("127.0.0.3")]})
        await until(lambda: state() == {"http://127.0.0.2:30000": "draining", "http://127.0.0.3:30000": "listed"})
        # a second slice of the same Service adds a pod; deleting the first removes its endpoints
        await send(api, "POST", SLICES_PATH, endpoint_slice("qwen-runtime-def", [endpoint("127.0.0.4")]))
        await until(lambda: len(state()) == 3)
        await send(api, "DELETE", f"{SLICES_PATH}/qwen-runtime-abc")
        await until(lambda: state() == {"http://127.0.0.4:30000": "listed"})
    finally:
        watch.stop()


async def test_router_discovers_and_routes_to_a_worker_from_kmock(api, fake_workers, start_router, http):
    [worker] = await fake_workers(1)
    router = await start_router([], k8s_service=SERVICE, k8s_namespace=NAMESPACE)
    await send(api, "POST", SLICES_PATH, endpoint_slice("qwen-runtime-1", [endpoint("127.0.0.1")], port=worker.port))
    await router.wait_ready(1)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "found you"}]}
    async with http.post(router.url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
    await send(api, "DELETE", f"{SLICES_PATH}/qwen-runtime-1")
    await until(lambda: not router.router.workers.workers)
