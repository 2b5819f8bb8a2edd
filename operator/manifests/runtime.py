"""Pure builders for the runtime: the `fleetserve serve` Deployment and its headless Service."""

from __future__ import annotations

from typing import Any

from fleetserve.operator import defaults, names
from fleetserve.operator.manifests.adapter_list import adapter_list_path, adapter_list_volume
from fleetserve.operator.manifests.meta import Manifest, Owner, object_meta, quantities
from fleetserve.operator.manifests.pod import (
    PORT_NAME,
    container_security,
    http_probe,
    image_pull_secrets,
    placement,
    pod_security,
)
from fleetserve.operator.manifests.volumes import runtime_volumes
from fleetserve.operator.sources import DemoLocation, HubLocation, Location, parse_source
from fleetserve.operator.spec import InferenceServiceSpec, Runtime
from fleetserve.runtime import wire

CONTAINER = "runtime"


def served_name(spec: InferenceServiceSpec) -> str:
    return spec.model.served_name or parse_source(spec.model.source).basename


def model_path(location: Location) -> str:
    if isinstance(location, HubLocation):
        return location.repo
    if isinstance(location, DemoLocation):
        return location.uri
    return f"{defaults.MODEL_MOUNT_PATH}/{location.path}".rstrip("/")


def drain_seconds(grace_period_seconds: int) -> int:
    """How long a stopping runtime lets requests in flight finish: its terminationGracePeriodSeconds less
    SHUTDOWN_MARGIN_SECONDS (at least 1 s), so it exits before the kubelet's SIGKILL."""
    return max(1, grace_period_seconds - defaults.SHUTDOWN_MARGIN_SECONDS)


def serve_args(spec: InferenceServiceSpec) -> list[str]:
    """`fleetserve serve` flags (SGLang names) derived from the spec, then the user's extra args."""
    runtime = spec.runtime
    device = runtime.device or ("cuda" if runtime.resources.gpus > 0 else "cpu")
    args = [
        "serve",
        "--model-path", model_path(parse_source(spec.model.source)),
        "--host", "0.0.0.0",
        "--port", str(wire.DEFAULT_PORT),
        "--served-model-name", served_name(spec),
        "--dtype", runtime.dtype,
        "--device", device,
        "--log-level", runtime.log_level,
        # the pod's grace period, less the time to stop the engine: a replica removed by a scale-down or
        # a rollout finishes the streams it has
        "--graceful-shutdown-timeout", str(drain_seconds(runtime.termination_grace_period_seconds)),
    ]
    optional = [
        ("--context-length", runtime.context_length),
        ("--max-running-requests", runtime.max_running_requests),
        ("--max-queued-requests", runtime.max_queued_requests),
    ]
    args += [item for flag, value in optional if value is not None for item in (flag, str(value))]
    if runtime.enable_cache_report:
        args.append("--enable-cache-report")
    if spec.adapters:  # loaded at start from the ConfigMap, then kept in step by the adapter rollout
        args += ["--enable-lora", "--lora-paths-file", adapter_list_path()]
    return args + runtime.args


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def runtime_env(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": defaults.ENV_HF_HOME, "value": defaults.HF_HOME},
        {"name": defaults.ENV_FLEETSERVE_CACHE, "value": defaults.CACHE_MOUNT_PATH},  # demo models, kernels
    ]
    token = spec.model.hub_token_secret
    if token is not None:
        env.append(_secret_env(defaults.ENV_HF_TOKEN, token.name, token.key))
    if spec.api_key_secret is not None:
        env.append(_secret_env(defaults.ENV_API_KEY, spec.api_key_secret.name, spec.api_key_secret.key))
    for var in spec.runtime.env:
        if var.secret_key_ref is not None:
            env.append(_secret_env(var.name, var.secret_key_ref.name, var.secret_key_ref.key))
        else:
            env.append({"name": var.name, "value": var.value or ""})
    return env


def runtime_resources(runtime: Runtime) -> dict[str, Any]:
    requests, limits = quantities(runtime.resources.requests), quantities(runtime.resources.limits)
    if runtime.resources.gpus > 0:  # extended resources: the request must equal the limit
        requests[defaults.GPU_RESOURCE] = limits[defaults.GPU_RESOURCE] = str(runtime.resources.gpus)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def probes(runtime: Runtime) -> dict[str, Any]:
    """Startup allows the whole model load; liveness and readiness only begin after it succeeds."""
    startup_failures = -(-runtime.startup_timeout_seconds // defaults.PROBE_PERIOD_SECONDS)
    return {
        "startupProbe": http_probe(wire.PATH_HEALTH, defaults.PROBE_PERIOD_SECONDS, startup_failures),
        "readinessProbe": http_probe(wire.PATH_HEALTH, defaults.READINESS_PERIOD_SECONDS, defaults.READINESS_FAILURE_THRESHOLD),
        "livenessProbe": http_probe(wire.PATH_HEALTH, defaults.PROBE_PERIOD_SECONDS, defaults.LIVENESS_FAILURE_THRESHOLD),
    }


def pod_volumes(owner: Owner, spec: InferenceServiceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """runtime_volumes, plus the adapter list when there are adapters."""
    volumes, mounts = runtime_volumes(spec)
    if spec.adapters:
        volume, mount = adapter_list_volume(owner.name)
        volumes, mounts = [*volumes, volume], [*mounts, mount]
    return volumes, mounts


def runtime_container(owner: Owner, spec: InferenceServiceSpec, image: str) -> dict[str, Any]:
    _, mounts = pod_volumes(owner, spec)
    return {
        "name": CONTAINER,
        "image": spec.runtime.image or image,
        "command": ["fleetserve"],
        "args": serve_args(spec),
        "ports": [{"name": PORT_NAME, "containerPort": wire.DEFAULT_PORT, "protocol": "TCP"}],
        "env": runtime_env(spec),
        "resources": runtime_resources(spec.runtime),
        "volumeMounts": mounts,
        "securityContext": container_security(),
        **probes(spec.runtime),
    }


def runtime_pod_spec(owner: Owner, spec: InferenceServiceSpec, image: str) -> dict[str, Any]:
    volumes, _ = pod_volumes(owner, spec)
    return {
        "containers": [runtime_container(owner, spec, image)],
        "volumes": volumes,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": spec.runtime.termination_grace_period_seconds,
        "automountServiceAccountToken": False,  # the runtime never talks to the Kubernetes API
        "enableServiceLinks": False,
        **image_pull_secrets(spec),
        **placement(spec.runtime, names.selector_labels(owner.name, names.RUNTIME)),
    }


def rollout_strategy(runtime: Runtime) -> dict[str, Any]:
    """A GPU node is usually full: a surge pod would wait for a GPU forever, so replace in place."""
    if runtime.rollout is not None:
        bounds = {"maxSurge": runtime.rollout.max_surge, "maxUnavailable": runtime.rollout.max_unavailable}
    elif runtime.resources.gpus > 0:
        bounds = {"maxSurge": 0, "maxUnavailable": 1}
    else:
        bounds = {"maxSurge": 1, "maxUnavailable": 0}
    return {"type": "RollingUpdate", "rollingUpdate": bounds}


def pod_metadata(owner: Owner, runtime: Runtime) -> dict[str, Any]:
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(wire.DEFAULT_PORT),
        "prometheus.io/path": wire.PATH_METRICS,
    }
    return {
        "labels": dict(runtime.pod_labels) | names.labels(owner.name, names.RUNTIME),
        "annotations": dict(runtime.pod_annotations) | annotations,
    }


def build_runtime_deployment(owner: Owner, spec: InferenceServiceSpec, image: str, replicas: int) -> Manifest:
    name = names.runtime_name(owner.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(owner, name, names.RUNTIME),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": defaults.REVISION_HISTORY_LIMIT,
            # A replica may take the whole startup timeout to load its model before it is late.
            "progressDeadlineSeconds": spec.runtime.startup_timeout_seconds + defaults.PROGRESS_MARGIN_SECONDS,
            "strategy": rollout_strategy(spec.runtime),
            "selector": {"matchLabels": names.selector_labels(owner.name, names.RUNTIME)},
            "template": {
                "metadata": pod_metadata(owner, spec.runtime),
                "spec": runtime_pod_spec(owner, spec, image),
            },
        },
    }


def build_runtime_service(owner: Owner) -> Manifest:
    """Headless: one DNS record and one endpoint per ready pod, which the router discovers."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, names.runtime_name(owner.name), names.RUNTIME),
        "spec": {
            "clusterIP": "None",
            "selector": names.selector_labels(owner.name, names.RUNTIME),
            "ports": [{"name": PORT_NAME, "port": wire.DEFAULT_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }
