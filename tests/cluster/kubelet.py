"""A kubelet and controller-manager stand-in for tests: Deployments become local processes.

It is a test tool, not Kubernetes. What it does, and what stands in for what:

- Deployment controller: each Deployment's replicas become Pod objects (owned by the Deployment
  directly; there are no ReplicaSets) and a pod-template hash; a changed template rolls out within
  ``maxSurge``/``maxUnavailable`` (or all at once for ``Recreate``); the Deployment's status
  (replicas, ready, updated, available, observedGeneration) follows the pods.
- Scheduler: one node with no GPUs. A pod asking for ``nvidia.com/gpu`` stays Pending with the
  scheduler's ``Unschedulable`` condition.
- Images: images whose repository ends in ``/fleetserve`` (the project's one image) run this checkout,
  ENTRYPOINT ``fleetserve`` as in the Dockerfile, i.e. ``python -P -m fleetserve.runtime.cli``; any
  other image fails to pull (``ErrImagePull``, then ``ImagePullBackOff``).
- Network: pods share the host's network namespace, so each pod gets its own loopback address
  (127.A.B.N, with A.B drawn per cluster so that two test runs on one machine do not collide) as its
  pod IP, every container port stays the same, and ``0.0.0.0`` in a container's
  arguments is replaced by the pod IP (a pod's wildcard bind is its own address).
- Volumes: every volume is a local directory (emptyDir: per pod; persistentVolumeClaim and hostPath:
  shared by name; configMap: its keys written as files when the container starts); mount paths in
  arguments and environment values are rewritten to them.
- Service accounts: a pod running as a ServiceAccount gets ``KUBECONFIG`` pointing at this API server
  with a token, instead of the files under /var/run/secrets (there is no in-cluster DNS or
  KUBERNETES_SERVICE_HOST either).
- Probes: startup, readiness and liveness probes run as declared (path, port, timeout,
  failureThreshold); startup and readiness periods are multiplied by ``probe_scale`` so tests take
  seconds rather than minutes, liveness keeps its declared period (a scaled one would kill a process
  that is merely slow on a loaded machine).
- Restarts: an exited container restarts with back-off (``CrashLoopBackOff``), as does one whose
  liveness or startup probe fails.
- Termination: a deleted pod's endpoint turns ``terminating`` first, then the process gets SIGTERM
  and ``terminationGracePeriodSeconds`` (times ``grace_scale``) before SIGKILL.
- EndpointSlice controller: one slice per Service with a selector, labelled
  ``kubernetes.io/service-name``, listing matching pods with ready/serving/terminating conditions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from apiserver import ClusterApi, matches_selector

logger = logging.getLogger(__name__)

CLI = [sys.executable, "-P", "-m", "fleetserve.runtime.cli"]  # the image's ENTRYPOINT ["fleetserve"]
IMAGE_CMD = ["serve"]  # the image's CMD
GPU = "nvidia.com/gpu"
SLICE_MANAGER = "kubelet-standin.fleetserve.test"
USER_AGENT = "kubelet-standin (tests/cluster)"
MAX_BACKOFF_SECONDS = 5.0


def is_project_image(image: str) -> bool:
    repository = image.split("@")[0]
    if ":" in repository.rsplit("/", 1)[-1]:  # a tag, not a registry port
        repository = repository.rsplit(":", 1)[0]
    return repository == "fleetserve" or repository.endswith("/fleetserve")


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def resolve_count(value: Any, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = replicas * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def rollout_bounds(deployment: dict[str, Any], replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as counts; Recreate is (0, everything)."""
    strategy = deployment["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, max(replicas, 1)
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_count(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = resolve_count(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    return surge, (1 if surge == 0 and unavailable == 0 else unavailable)


@dataclass
class Pod:
    """One pod this stand-in runs: its object's identity and its one container's process."""

    name: str
    namespace: str
    uid: str
    owner_uid: str
    template_hash: str
    labels: dict[str, str]
    spec: dict[str, Any]
    ip: str
    directory: Path
    process: asyncio.subprocess.Process | None = None
    started: bool = False  # startup probe passed (or none declared)
    ready: bool = False
    terminating: bool = False
    restarts: int = 0
    waiting_reason: str | None = None  # ContainerCreating, CrashLoopBackOff, ErrImagePull, ImagePullBackOff
    last_exit: dict[str, Any] | None = None
    unschedulable: str | None = None
    failures: dict[str, int] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    reported: dict[str, Any] | None = None

    @property
    def container(self) -> dict[str, Any]:
        return self.spec["containers"][0]


class Kubelet:
    """Drives Deployments, Pods, EndpointSlices in ``api`` towards what the manifests declare."""

    def __init__(self, api: ClusterApi, server_url: str, workdir: Path, *, probe_scale: float = 0.1,
                 grace_scale: float = 0.1, tick_seconds: float = 0.2) -> None:
        self.api = api
        self.server_url = server_url.rstrip("/")
        self.workdir = workdir
        self.probe_scale = probe_scale
        self.grace_scale = grace_scale
        self.tick_seconds = tick_seconds
        self.pods: dict[tuple[str, str], Pod] = {}
        block = f"127.{secrets.randbelow(200) + 40}.{secrets.randbelow(256)}."  # not 127.0.0.0/16
        self.free_addresses = [f"{block}{n}" for n in range(2, 255)]
        self.token = secrets.token_hex(16)
        self.kubeconfig = workdir / "serviceaccount-kubeconfig.yaml"
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._slices: dict[tuple[str, str], dict[str, Any]] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: standin\n"
            f"clusters: [{{name: standin, cluster: {{server: '{self.server_url}'}}}}]\n"
            f"users: [{{name: sa, user: {{token: {self.token}}}}}]\n"
            "contexts: [{name: standin, context: {cluster: standin, user: sa}}]\n")
        self._http = aiohttp.ClientSession(base_url=self.server_url, headers={"User-Agent": USER_AGENT})
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop every pod's process (SIGTERM, then SIGKILL after a short grace) and the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pod in self.pods.values():
            pod.terminating = True
        await asyncio.gather(*(self._stop_process(pod, grace=2.0) for pod in list(self.pods.values())))
        for pod in self.pods.values():
            for task in pod.tasks:
                task.cancel()
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except (aiohttp.ClientError, TimeoutError) as error:
                logger.warning("kubelet stand-in: API call failed: %r", error)
            await asyncio.sleep(self.tick_seconds)

    async def sync(self) -> None:
        deployments = self.api.live_objects("apps/v1/deployments")
        for deployment in deployments:
            await self._sync_deployment(deployment)
        await self._reap({d["metadata"]["uid"] for d in deployments})
        await self._report_pods()
        await self._sync_endpoint_slices()
        for deployment in deployments:
            await self._report_deployment(deployment)

    # --- API writes -----------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        assert self._http is not None
        async with self._http.request(method, path, json=body, headers={"Content-Type": content_type}) as reply:
            payload = await reply.json(content_type=None)
            if reply.status == 404 and method in ("DELETE", "PATCH"):
                return None
            if reply.status >= 400:
                raise aiohttp.ClientResponseError(reply.request_info, (), status=reply.status,
                                                  message=str((payload or {}).get("message")))
            return payload

    # --- the Deployment controller --------------------------------------------------------------

    def _pods_of(self, uid: str) -> list[Pod]:
        return [pod for pod in self.pods.values() if pod.owner_uid == uid and not pod.terminating]

    async def _sync_deployment(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        replicas = int(spec.get("replicas", 1))
        current = template_hash(spec["template"])
        pods = self._pods_of(meta["uid"])
        new = [p for p in pods if p.template_hash == current]
        old = [p for p in pods if p.template_hash != current]
        surge, unavailable = rollout_bounds(deployment, replicas)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        # scale down the current template first (unready pods before ready ones)
        for pod in sorted(new, key=lambda p: p.ready)[: max(0, len(new) - replicas)]:
            await self._delete_pod(pod)
            new.remove(pod)
        # retire old pods while enough stay available
        available = sum(p.ready for p in new + old)
        for pod in sorted(old, key=lambda p: p.ready):
            if not recreate and pod.ready and available - 1 < replicas - unavailable:
                break
            await self._delete_pod(pod)
            old.remove(pod)
            available -= pod.ready
        if recreate and old:
            return
        while len(new) < replicas and len(new) + len(old) < replicas + surge:
            new.append(await self._create_pod(deployment, current))

    async def _create_pod(self, deployment: dict[str, Any], hash_: str) -> Pod:
        meta, template = deployment["metadata"], copy.deepcopy(deployment["spec"]["template"])
        name = f"{meta['name']}-{hash_[:8]}-{secrets.token_hex(3)}"
        ip = self.free_addresses.pop(0)
        labels = dict((template.get("metadata") or {}).get("labels") or {}) | {"pod-template-hash": hash_}
        body = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                         "annotations": (template.get("metadata") or {}).get("annotations") or {},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True}]},
            "spec": template["spec"],
        }
        created = await self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/pods", body)
        pod = Pod(name=name, namespace=meta["namespace"], uid=created["metadata"]["uid"], owner_uid=meta["uid"],
                  template_hash=hash_, labels=labels, spec=template["spec"], ip=ip,
                  directory=self.workdir / "pods" / name)
        self.pods[(pod.namespace, name)] = pod
        pod.tasks.append(asyncio.create_task(self._run_pod(pod)))
        return pod

    async def _delete_pod(self, pod: Pod) -> None:
        pod.tasks.append(asyncio.create_task(self._terminate(pod, delete_object=True)))

    async def _reap(self, live_deployments: set[str]) -> None:
        """Pods whose object went (the garbage collector, a user's delete) or whose owner went."""
        for pod in list(self.pods.values()):
            if pod.terminating:
                continue
            gone = self.api.live("v1/pods", pod.namespace, pod.name) is None
            if gone or pod.owner_uid not in live_deployments:
                pod.tasks.append(asyncio.create_task(self._terminate(pod, delete_object=not gone)))

    async def _terminate(self, pod: Pod, delete_object: bool) -> None:
        pod.terminating, pod.ready = True, False
        await self._sync_endpoint_slices()  # the endpoint turns terminating before the signal
        grace = float(pod.spec.get("terminationGracePeriodSeconds", 30)) * self.grace_scale
        await self._stop_process(pod, grace)
        if delete_object:
            await self._call("DELETE", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}")
        self.pods.pop((pod.namespace, pod.name), None)
        self.free_addresses.append(pod.ip)
        await self._sync_endpoint_slices()
        for task in pod.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _stop_process(self, pod: Pod, grace: float) -> None:
        process = pod.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    # --- one pod: schedule, pull, run, probe, restart -----------------------------------------------

    def _unschedulable(self, pod: Pod) -> str | None:
        for container in pod.spec["containers"]:
            resources = container.get("resources") or {}
            wanted = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU)
            if wanted and int(wanted) > 0:
                return f"0/1 nodes are available: 1 Insufficient {GPU}."
        return None

    async def _run_pod(self, pod: Pod) -> None:
        pod.unschedulable = self._unschedulable(pod)
        if pod.unschedulable:
            return
        if not is_project_image(pod.container.get("image", "")):
            pod.waiting_reason = "ErrImagePull"
            await asyncio.sleep(MAX_BACKOFF_SECONDS * self.probe_scale * 4)
            pod.waiting_reason = "ImagePullBackOff"
            return
        pod.waiting_reason = "ContainerCreating"
        backoff = 0.5
        while not pod.terminating:
            await self._start_process(pod)
            probes = asyncio.create_task(self._probe_loop(pod))
            assert pod.process is not None
            code = await pod.process.wait()
            probes.cancel()
            pod.ready = pod.started = False
            if pod.terminating:
                return
            pod.restarts += 1
            pod.last_exit = {"exitCode": code, "reason": "Error" if code else "Completed"}
            pod.waiting_reason = "CrashLoopBackOff"
            logger.info("kubelet stand-in: %s exited with %s; restarting in %.1fs", pod.name, code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _start_process(self, pod: Pod) -> None:
        container = pod.container
        mounts = self._mounts(pod)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(pod.directory / "home"),
               "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}
        env |= await self._container_env(pod, container, mounts)
        if pod.spec.get("serviceAccountName") and pod.spec.get("automountServiceAccountToken") is not False:
            env["KUBECONFIG"] = str(self.kubeconfig)  # stands in for the mounted service-account token
        command = container.get("command") or ["fleetserve"]
        args = container.get("args") if "args" in container else IMAGE_CMD
        argv = [*(CLI if command[0] == "fleetserve" else [command[0]]), *command[1:], *args]
        argv = [self._localize(arg, pod, mounts) for arg in argv]
        (pod.directory / "home").mkdir(parents=True, exist_ok=True)
        log = (pod.directory / "container.log").open("ab")
        pod.process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=str(pod.directory),
            start_new_session=True)
        log.close()
        pod.waiting_reason = None

    def _mounts(self, pod: Pod) -> dict[str, Path]:
        """mountPath -> the local directory standing in for its volume."""
        volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
        result = {}
        for mount in pod.container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if "persistentVolumeClaim" in volume:
                local = self.workdir / "pvc" / pod.namespace / volume["persistentVolumeClaim"]["claimName"]
            elif "hostPath" in volume:
                local = self.workdir / "host" / volume["hostPath"]["path"].strip("/")
            elif "configMap" in volume:
                local = self._config_map_files(pod, mount["name"], volume["configMap"])
            else:
                local = pod.directory / "volumes" / mount["name"]
            if mount.get("subPath"):
                local = local / mount["subPath"]
            local.mkdir(parents=True, exist_ok=True)
            result[mount["mountPath"].rstrip("/") or "/"] = local
        return result

    def _config_map_files(self, pod: Pod, name: str, source: dict[str, Any]) -> Path:
        """The ConfigMap's keys as files, written each time the container starts. Not modelled: the
        kubelet's later updates of the files, and a missing ConfigMap that is not ``optional`` keeping
        the container from starting (here it is an empty directory either way)."""
        local = pod.directory / "volumes" / name
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
        config_map = self.api.live("v1/configmaps", pod.namespace, source["name"]) or {}
        for key, text in (config_map.get("data") or {}).items():
            (local / key).write_text(text)
        return local

    def _localize(self, value: str, pod: Pod, mounts: dict[str, Path]) -> str:
        """The pod IP for 0.0.0.0; a local directory for a mount path (whole value or after '=')."""
        value = value.replace("0.0.0.0", pod.ip)
        for mount_path in sorted(mounts, key=len, reverse=True):
            local = str(mounts[mount_path])
            if value == mount_path or value.startswith(mount_path + "/"):
                return local + value[len(mount_path):]
            if value.endswith(f"={mount_path}") or f"={mount_path}/" in value:
                return value.replace(f"={mount_path}", f"={local}", 1)
        return value

    async def _container_env(self, pod: Pod, container: dict[str, Any], mounts: dict[str, Path]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            resource = "v1/configmaps" if "configMapRef" in source else "v1/secrets"
            obj = self.api.live(resource, pod.namespace, ref.get("name", "")) or {}
            env |= {k: _decode(v, resource) for k, v in (obj.get("data") or {}).items()}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = self._localize(var["value"], pod, mounts)
                continue
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret = self.api.live("v1/secrets", pod.namespace, ref["name"]) or {}
                value = (secret.get("data") or {}).get(ref["key"])
                if value is not None:
                    env[var["name"]] = _decode(value, "v1/secrets")
        return env

    def _port(self, pod: Pod, port: Any) -> int:
        if isinstance(port, int):
            return port
        for container in pod.spec["containers"]:
            for declared in container.get("ports") or []:
                if declared.get("name") == port:
                    return int(declared["containerPort"])
        raise ValueError(f"pod {pod.name} declares no port named {port!r}")

    async def _probe(self, pod: Pod, probe: dict[str, Any]) -> bool:
        check = probe["httpGet"]
        url = f"http://{pod.ip}:{self._port(pod, check['port'])}{check.get('path', '/')}"
        timeout = aiohttp.ClientTimeout(total=float(probe.get("timeoutSeconds", 1)))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as reply:
                return 200 <= reply.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def _period(self, probe: dict[str, Any], scaled: bool = True) -> float:
        return max(0.05, float(probe.get("periodSeconds", 10)) * (self.probe_scale if scaled else 1.0))

    async def _probe_loop(self, pod: Pod) -> None:
        container = pod.container
        startup, readiness, liveness = (container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe"))
        pod.failures = {"startup": 0, "readiness": 0, "liveness": 0}
        await asyncio.sleep(float((startup or readiness or {}).get("initialDelaySeconds", 0)) * self.probe_scale)
        next_liveness = asyncio.get_running_loop().time() + float((liveness or {}).get("initialDelaySeconds", 0))
        while pod.process is not None and pod.process.returncode is None:
            if not pod.started:
                if startup is None or await self._probe(pod, startup):
                    pod.started = True
                else:
                    pod.failures["startup"] += 1
                    if pod.failures["startup"] >= int(startup.get("failureThreshold", 3)):
                        await self._kill_for_probe(pod, "startup")
                        return
                    await asyncio.sleep(self._period(startup))
                    continue
            if readiness is not None:
                if await self._probe(pod, readiness):
                    pod.failures["readiness"], pod.ready = 0, True
                else:
                    pod.failures["readiness"] += 1
                    if pod.failures["readiness"] >= int(readiness.get("failureThreshold", 3)):
                        pod.ready = False
            else:
                pod.ready = True
            now = asyncio.get_running_loop().time()
            if liveness is not None and now >= next_liveness:
                next_liveness = now + self._period(liveness, scaled=False)
                if await self._probe(pod, liveness):
                    pod.failures["liveness"] = 0
                else:
                    pod.failures["liveness"] += 1
                    if pod.failures["liveness"] >= int(liveness.get("failureThreshold", 3)):
                        await self._kill_for_probe(pod, "liveness")
                        return
            await asyncio.sleep(self._period(readiness or liveness or {}))

    async def _kill_for_probe(self, pod: Pod, which: str) -> None:
        logger.info("kubelet stand-in: %s failed its %s probe; restarting it", pod.name, which)
        grace = float(pod.spec.get("terminationGracePeriodSeconds", 30)) * self.grace_scale
        await self._stop_process(pod, grace)

    # --- status reports -------------------------------------------------------------------------

    def _pod_status(self, pod: Pod) -> dict[str, Any]:
        if pod.unschedulable:
            return {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": pod.unschedulable}]}
        state = {"waiting": {"reason": pod.waiting_reason}} if pod.waiting_reason else {"running": {}}
        container = {"name": pod.container["name"], "image": pod.container.get("image", ""), "ready": pod.ready,
                     "started": pod.started, "restartCount": pod.restarts, "state": state}
        if pod.last_exit:
            container["lastState"] = {"terminated": pod.last_exit}
        ready = "True" if pod.ready else "False"
        return {
            "phase": "Running" if pod.process is not None else "Pending",
            "podIP": pod.ip, "podIPs": [{"ip": pod.ip}], "hostIP": "127.0.0.1",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": ready},
                           {"type": "ContainersReady", "status": ready}],
            "containerStatuses": [container],
        }

    async def _report_pods(self) -> None:
        for pod in list(self.pods.values()):
            if pod.terminating:
                continue
            status = self._pod_status(pod)
            if status != pod.reported:
                await self._call("PATCH", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
                                 {"status": status}, "application/merge-patch+json")
                pod.reported = status

    async def _report_deployment(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        replicas = int(spec.get("replicas", 1))
        pods = self._pods_of(meta["uid"])
        current = template_hash(spec["template"])
        ready = sum(p.ready for p in pods)
        updated = sum(p.template_hash == current for p in pods)
        status = {
            "observedGeneration": meta.get("generation", 1), "replicas": len(pods), "readyReplicas": ready,
            "updatedReplicas": updated, "availableReplicas": ready, "unavailableReplicas": max(0, replicas - ready),
            "conditions": [
                {"type": "Available", "status": "True" if ready >= replicas else "False",
                 "reason": "MinimumReplicasAvailable" if ready >= replicas else "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": "True",
                 "reason": "NewReplicaSetAvailable" if updated == replicas == ready else "ReplicaSetUpdated"},
            ],
        }
        if status != {k: (deployment.get("status") or {}).get(k) for k in status}:
            await self._call("PATCH", f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}/status",
                             {"status": status}, "application/merge-patch+json")

    # --- the EndpointSlice controller -----------------------------------------------------------

    async def _sync_endpoint_slices(self) -> None:
        services = self.api.live_objects("v1/services")
        wanted = {}
        for service in services:
            selector = (service.get("spec") or {}).get("selector")
            if not selector:
                continue
            meta = service["metadata"]
            term = ",".join(f"{k}={v}" for k, v in selector.items())
            pods = [p for p in self.pods.values() if p.namespace == meta["namespace"]
                    and matches_selector(p.labels, term) and p.process is not None]
            wanted[(meta["namespace"], meta["name"])] = self._slice(service, pods)
        for key, body in wanted.items():
            if self._slices.get(key) != body:
                namespace = key[0]
                path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
                if self.api.live("discovery.k8s.io/v1/endpointslices", namespace, body["metadata"]["name"]) is None:
                    await self._call("POST", path, body)
                else:
                    await self._call("PATCH", f"{path}/{body['metadata']['name']}",
                                     {"endpoints": body["endpoints"], "ports": body["ports"]},
                                     "application/merge-patch+json")
                self._slices[key] = body
        for key in set(self._slices) - set(wanted):
            self._slices.pop(key)  # the garbage collector removes the slice with its Service

    def _slice(self, service: dict[str, Any], pods: list[Pod]) -> dict[str, Any]:
        meta = service["metadata"]
        endpoints = [{
            "addresses": [p.ip],
            "conditions": {"ready": p.ready and not p.terminating, "serving": p.ready, "terminating": p.terminating},
            "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace, "uid": p.uid},
        } for p in sorted(pods, key=lambda p: p.name)]
        ports = []
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            if not isinstance(target, int) and not pods:
                continue  # a named port resolves through a pod; none yet
            number = target if isinstance(target, int) else self._port(pods[0], target)
            ports.append({"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")})
        return {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{meta['name']}-standin", "namespace": meta["namespace"],
                         "labels": {"kubernetes.io/service-name": meta["name"],
                                    "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True}]},
            "endpoints": endpoints, "ports": ports,
        }


def _decode(value: str, resource: str) -> str:
    return base64.b64decode(value).decode() if resource == "v1/secrets" else value
