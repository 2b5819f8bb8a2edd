"""Operator reconcile latency and memory, against kmock's emulated Kubernetes API.

    python benchmarks/operator_reconcile.py [--services 1 10 50]

Starts kmock's Kubernetes emulator in this process and the real `fleetserve operator` in a
subprocess (logged in through a kubeconfig pointing at kmock, as it would be at a cluster), then
creates InferenceServices and measures, for each, the time from its POST to all seven children
existing. Prints latency percentiles, throughput and the operator process's resident memory.

kmock is an in-memory emulator on localhost: no etcd, no admission, no network. It also serves
every request from this process's single event loop and never changes an object's
resourceVersion, so under concurrency the latencies include kmock's own CPU time (printed as "this
process") and kopf's waits for a resourceVersion that never comes. Compare runs with each other,
not with a cluster. The operator's CPU time and RSS are its own (read from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp.web
import kmock

from fleetserve.operator import names

NAMESPACE = "bench"
ISVC = f"{names.API_VERSION}/{names.PLURAL}"
CHILDREN = [("apps/v1/deployments", "{}-runtime"), ("apps/v1/deployments", "{}-router"),
            ("v1/services", "{}-runtime"), ("v1/services", "{}"), ("v1/serviceaccounts", "{}-router"),
            ("rbac.authorization.k8s.io/v1/roles", "{}-router"),
            ("rbac.authorization.k8s.io/v1/rolebindings", "{}-router")]
NAMESPACED = {ISVC: "InferenceService", "apps/v1/deployments": "Deployment", "v1/services": "Service",
              "v1/serviceaccounts": "ServiceAccount", "rbac.authorization.k8s.io/v1/roles": "Role",
              "rbac.authorization.k8s.io/v1/rolebindings": "RoleBinding",
              "networking.k8s.io/v1/ingresses": "Ingress", "v1/events": "Event", "v1/pods": "Pod",
              "policy/v1/poddisruptionbudgets": "PodDisruptionBudget"}
CLUSTER = {"v1/namespaces": "Namespace", "apiextensions.k8s.io/v1/customresourcedefinitions": "CustomResourceDefinition"}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
POLL_SECONDS = 0.002
KEEP_REQUESTS = 16  # the request being handled is always the last one
TIMEOUT_SECONDS = 60.0
STARTUP_SECONDS = 60.0


class ForgetfulEmulator(kmock.KubernetesEmulator):
    """kmock without its request log: it matches each request against all earlier ones (O(n²)).

    The benchmark asserts nothing on requests, so only the most recent few are kept; otherwise
    the figures would measure kmock's bookkeeping rather than the operator.
    """

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        del self._requests[:-KEEP_REQUESTS]
        return await super()._handle(request)


def declare_resources(api: kmock.KubernetesEmulator) -> None:
    for key, kind in NAMESPACED.items():
        api.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS, subresources={"status"})
    for key, kind in CLUSTER.items():
        api.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=False, verbs=VERBS)


CHILD_RESOURCES = [(kmock.resource(resource), pattern) for resource, pattern in CHILDREN]


def all_children_exist(api: kmock.KubernetesEmulator, name: str) -> bool:
    for resource, pattern in CHILD_RESOURCES:
        key = (resource, NAMESPACE, pattern.format(name))
        if key not in api.objects or api.objects[key].deleted:
            return False
    return True


def kubeconfig(url: str, directory: str) -> str:
    path = Path(directory) / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: kmock, user: {token: bench}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: kmock}}]\n"
    )
    return str(path)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def inference_service(index: int) -> dict:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": f"svc-{index}", "namespace": NAMESPACE, "uid": f"uid-{index}",
                         "generation": 1, "resourceVersion": "1"},
            "spec": {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}}}


async def create_and_measure(api: kmock.KubernetesEmulator, indices: range) -> list[float]:
    """POST every InferenceService at once, then poll until each has all its children."""
    started: dict[str, float] = {}
    for index in indices:
        body = inference_service(index)
        started[body["metadata"]["name"]] = time.perf_counter()
        path = f"/apis/{names.API_VERSION}/namespaces/{NAMESPACE}/{names.PLURAL}"
        async with api.request("POST", path, json=body) as reply:
            reply.raise_for_status()
    latencies: list[float] = []
    deadline = time.perf_counter() + TIMEOUT_SECONDS
    while started:
        now = time.perf_counter()
        done = [name for name in started if all_children_exist(api, name)]
        latencies += [now - started.pop(name) for name in done]
        if now > deadline:
            raise TimeoutError(f"{len(started)} InferenceServices still lack children; is the operator running?")
        await asyncio.sleep(POLL_SECONDS)
    return latencies


async def run(batches: list[int]) -> None:
    async with ForgetfulEmulator() as api, kmock.Server(api):
        declare_resources(api)
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "KUBECONFIG": kubeconfig(str(api.url).rstrip("/"), tmp)}
            log = open(Path(tmp) / "operator.log", "wb")  # noqa: SIM115  closed with the directory
            operator = subprocess.Popen(
                [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "operator", "--standalone", "--liveness", ""],
                env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                await measure(api, operator, batches)
            except TimeoutError:
                log.flush()
                sys.stderr.write((Path(tmp) / "operator.log").read_text()[-4000:])
                raise
            finally:
                operator.terminate()
                operator.wait(timeout=30)
                log.close()


async def measure(api: kmock.KubernetesEmulator, operator: subprocess.Popen, batches: list[int]) -> None:
    # Warm-up: the first InferenceService also waits for kopf to start watching.
    (startup,) = await create_and_measure(api, range(1))
    print(f"operator start + first InferenceService: {startup * 1000:.0f} ms; "
          f"operator RSS {rss_mib(operator.pid):.1f} MiB")
    created = 1
    for count in batches:
        indices = range(created, created + count)
        created += count
        start = time.perf_counter()
        latencies = await create_and_measure(api, indices)
        wall = time.perf_counter() - start
        ms = sorted(x * 1000 for x in latencies)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        print(f"{count:4d} created at once: create->all 7 children p50 {statistics.median(ms):7.1f} ms, "
              f"p95 {p95:7.1f} ms, max {ms[-1]:7.1f} ms; {count / wall:6.1f} services/s; "
              f"operator RSS {rss_mib(operator.pid):.1f} MiB with {created} services, "
              f"CPU {cpu_seconds(operator.pid):.1f} s so far (this process {time.process_time():.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1, 10, 50],
                        help="batch sizes, each created concurrently after the previous batch settled")
    asyncio.run(run(parser.parse_args().services))


if __name__ == "__main__":
    main()
