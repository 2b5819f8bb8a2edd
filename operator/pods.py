"""Runtime and router pods as the control loops see them: ready or not, and where they listen.

Shared by the autoscaler (reads each pod's ``/metrics``) and the adapter rollout (calls each pod's
adapter API); both only talk to pods that are ready and not being deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetserve.operator.manifests.pod import PORT_NAME

Obj = Mapping[str, Any]


def is_ready(pod: Obj) -> bool:
    """Running, passing its readiness probe, and not being deleted."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_url(pod: Obj) -> str | None:
    """http://POD_IP:PORT of the container port named ``http``; None without an IP or that port."""
    ip = (pod.get("status") or {}).get("podIP")
    ports = [
        port
        for container in (pod.get("spec") or {}).get("containers") or []
        for port in container.get("ports") or []
        if port.get("name") == PORT_NAME
    ]
    if not ip or not ports:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{ports[0]['containerPort']}"
