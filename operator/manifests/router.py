"""Pure builders for the router: Deployment, Service and its least-privilege API access.

The router discovers runtime pods through the Kubernetes API (pods and EndpointSlices of the
headless runtime Service), so it gets its own ServiceAccount with read-only access to those two
resources in its own namespace and nothing else.
"""

from __future__ import annotations

from typing import Any

from fleetserve.operator import defaults, names
from fleetserve.operator.manifests.meta import Manifest, Owner, object_meta, quantities
from fleetserve.operator.manifests.pod import (
    PORT_NAME,
    container_security,
    http_probe,
    image_pull_secrets,
    pod_security,
)
from fleetserve.operator.spec import InferenceServiceSpec
from fleetserve.runtime import wire

CONTAINER = "router"
READ_VERBS = ["get", "list", "watch"]


def router_args(owner: Owner, spec: InferenceServiceSpec) -> list[str]:
    return [
        "router",
        "--host", "0.0.0.0",
        "--port", str(wire.ROUTER_PORT),
        "--k8s-service", names.runtime_name(owner.name),
        "--k8s-namespace", owner.namespace,
        "--policy", spec.router.policy,
        "--max-hold-secs", str(spec.router.max_hold_seconds),
    ]


def router_resources(spec: InferenceServiceSpec) -> dict[str, Any]:
    resources = spec.router.resources
    return {
        "requests": defaults.ROUTER_REQUESTS | quantities(resources.requests),
        "limits": defaults.ROUTER_LIMITS | quantities(resources.limits),
    }


def router_env(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The API key, when there is one: the router checks clients' keys and sends it to the runtime pods
    for their protected routing endpoints (/routing_info, /cache_state)."""
    secret = spec.api_key_secret
    if secret is None:
        return {}
    ref = {"secretKeyRef": {"name": secret.name, "key": secret.key}}
    return {"env": [{"name": defaults.ENV_API_KEY, "valueFrom": ref}]}


def router_container(owner: Owner, spec: InferenceServiceSpec, image: str) -> dict[str, Any]:
    return {
        "name": CONTAINER,
        "image": spec.router.image or spec.runtime.image or image,
        "command": ["fleetserve"],
        "args": router_args(owner, spec),
        **router_env(spec),
        "ports": [{"name": PORT_NAME, "containerPort": wire.ROUTER_PORT, "protocol": "TCP"}],
        "resources": router_resources(spec),
        "readinessProbe": http_probe(wire.PATH_HEALTH, defaults.READINESS_PERIOD_SECONDS, defaults.READINESS_FAILURE_THRESHOLD),
        "livenessProbe": http_probe(wire.PATH_HEALTH, defaults.PROBE_PERIOD_SECONDS, defaults.LIVENESS_FAILURE_THRESHOLD),
        "securityContext": container_security() | {"readOnlyRootFilesystem": True},
    }


def build_router_deployment(owner: Owner, spec: InferenceServiceSpec, image: str) -> Manifest:
    name = names.router_name(owner.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(owner, name, names.ROUTER),
        "spec": {
            "replicas": spec.router.replicas,
            "revisionHistoryLimit": defaults.REVISION_HISTORY_LIMIT,
            "selector": {"matchLabels": names.selector_labels(owner.name, names.ROUTER)},
            "template": {
                "metadata": {"labels": names.labels(owner.name, names.ROUTER)},
                "spec": {
                    "serviceAccountName": name,
                    "containers": [router_container(owner, spec, image)],
                    "securityContext": pod_security(),
                    "enableServiceLinks": False,
                    **image_pull_secrets(spec),
                },
            },
        },
    }


def build_router_service(owner: Owner) -> Manifest:
    """The stable address of the model inside the cluster: http://NAME.NAMESPACE.svc."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, names.service_name(owner.name), names.ROUTER),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(owner.name, names.ROUTER),
            "ports": [{"name": PORT_NAME, "port": defaults.SERVICE_PORT, "targetPort": PORT_NAME,
                       "protocol": "TCP"}],
        },
    }


def build_router_service_account(owner: Owner) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(owner, names.router_name(owner.name), names.ROUTER),
    }


def build_router_role(owner: Owner) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": object_meta(owner, names.router_name(owner.name), names.ROUTER),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": list(READ_VERBS)},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": list(READ_VERBS)},
        ],
    }


def build_router_role_binding(owner: Owner) -> Manifest:
    name = names.router_name(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": object_meta(owner, name, names.ROUTER),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }
