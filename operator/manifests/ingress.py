"""Pure builder for the optional Ingress in front of the router's Service."""

from __future__ import annotations

from fleetserve.operator import defaults, names
from fleetserve.operator.manifests.meta import Manifest, Owner, object_meta
from fleetserve.operator.spec import Ingress


def build_ingress(owner: Owner, ingress: Ingress) -> Manifest:
    metadata = object_meta(owner, names.ingress_name(owner.name), names.ROUTER)
    if ingress.annotations:
        metadata["annotations"] = dict(ingress.annotations)
    backend = {"service": {"name": names.service_name(owner.name), "port": {"number": defaults.SERVICE_PORT}}}
    spec: dict = {
        "rules": [{
            "host": ingress.host,
            "http": {"paths": [{"path": ingress.path, "pathType": "Prefix", "backend": backend}]},
        }],
    }
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def ingress_url(ingress: Ingress) -> str:
    scheme = "https" if ingress.tls_secret_name else "http"
    return f"{scheme}://{ingress.host}{ingress.path.rstrip('/')}"
