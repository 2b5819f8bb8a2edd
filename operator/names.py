"""Names the operator and the cluster agree on: the resource's identity, child names and labels.

Children of an InferenceService ``NAME`` (all in its namespace):

==========================  ==========================  ===========================================
kind                        name                        purpose
==========================  ==========================  ===========================================
Deployment                  ``NAME-runtime``            ``fleetserve serve`` pods
Service (headless)          ``NAME-runtime``            per-pod DNS/endpoints for the router
Deployment                  ``NAME-router``             ``fleetserve router`` pods
Service                     ``NAME``                    the stable in-cluster URL (router, port 80)
ServiceAccount/Role/Binding ``NAME-router``             the router's pod discovery (least privilege)
PodDisruptionBudget         ``NAME-runtime``            optional, for the runtime pods
Ingress                     ``NAME``                    optional external URL
==========================  ==========================  ===========================================
"""

from __future__ import annotations

from typing import Literal

from fleetserve.runtime import wire

GROUP = "fleetserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ("fsvc",)  # not "isvc": KServe and OME already own that short name
CATEGORIES = ("fleetserve",)
CRD_NAME = f"{PLURAL}.{GROUP}"

FIELD_MANAGER = "fleetserve-operator"
MANAGED_BY = "fleetserve-operator"
APP_NAME = "fleetserve"

RUNTIME_SUFFIX = "-runtime"
ROUTER_SUFFIX = "-router"
# Kubernetes Service names are DNS-1035 labels (at most 63 characters); the longest child suffix
# decides how long an InferenceService name may be.
MAX_LABEL_LENGTH = 63
MAX_NAME_LENGTH = MAX_LABEL_LENGTH - max(len(RUNTIME_SUFFIX), len(ROUTER_SUFFIX))

Component = Literal["runtime", "router"]
RUNTIME: Component = "runtime"
ROUTER: Component = "router"


def runtime_name(name: str) -> str:
    return f"{name}{RUNTIME_SUFFIX}"


def router_name(name: str) -> str:
    return f"{name}{ROUTER_SUFFIX}"


def service_name(name: str) -> str:
    """The router's Service: the name users address the model by inside the cluster."""
    return name


def ingress_name(name: str) -> str:
    return name


def adapter_list_name(name: str) -> str:
    """The ConfigMap of adapters the runtime pods load at start (a ConfigMap name may be 253 long)."""
    return f"{name}-adapters"


def selector_labels(name: str, component: Component) -> dict[str, str]:
    """Labels that select one component's pods; immutable once a Deployment exists."""
    return {wire.LABEL_SERVICE: name, wire.LABEL_COMPONENT: component}


def labels(name: str, component: Component) -> dict[str, str]:
    """Selector labels plus the recommended app.kubernetes.io labels."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": APP_NAME,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(name, component),
    }


def selector_string(name: str, component: Component) -> str:
    """A label selector in its string form, as the scale subresource wants it."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(name, component).items())
