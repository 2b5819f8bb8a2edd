"""What every fleetserve container shares: pod and container security contexts, HTTP probes."""

from __future__ import annotations

from typing import Any

from fleetserve.operator import defaults

PORT_NAME = "http"


def container_security() -> dict[str, Any]:
    # The root filesystem stays writable: torch/triton/flashinfer write JIT caches under $HOME.
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": defaults.RUN_AS_USER,
        "runAsGroup": defaults.RUN_AS_USER,
        "fsGroup": defaults.RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": defaults.PROBE_TIMEOUT_SECONDS,
        "failureThreshold": failures,
    }
