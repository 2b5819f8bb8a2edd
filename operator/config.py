"""The operator's own configuration (flags and environment), independent of kopf."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetserve.operator import defaults

ENV_NAMESPACES = "FLEETSERVE_WATCH_NAMESPACES"
ENV_RUNTIME_IMAGE = "FLEETSERVE_RUNTIME_IMAGE"
DEFAULT_RESYNC_SECONDS = 60.0
DEFAULT_PEERING_NAME = "fleetserve"
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    runtime_image: str = defaults.RUNTIME_IMAGE
    resync_seconds: float = DEFAULT_RESYNC_SECONDS  # drift repair and status refresh period
    standalone: bool = False  # True: no peering (a single replica, or for tests)
    peering_name: str = DEFAULT_PEERING_NAME
    priority: int = 0  # peers with lower priority pause; main() draws a random one per replica
    liveness_endpoint: str | None = DEFAULT_LIVENESS
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def parse_namespaces(value: str | None) -> tuple[str, ...]:
    return tuple(ns.strip() for ns in (value or "").split(",") if ns.strip())
