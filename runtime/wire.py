"""Wire-level names shared by the runtime and the control plane (operator, router).

Torch-free and dependency-free on purpose: the operator and the router import this module, never
the engine. Anything two processes must agree on by name lives here.
"""

from __future__ import annotations

DEFAULT_PORT = 30000
ROUTER_PORT = 8000

# Label keys the operator puts on the objects it makes and the router uses to discover pods.
LABEL_PREFIX = "fleetserve.io"
LABEL_SERVICE = f"{LABEL_PREFIX}/inference-service"
LABEL_COMPONENT = f"{LABEL_PREFIX}/component"  # "runtime" | "router"

# Prometheus metric names exported by `fleetserve serve` (documented in docs/metrics.md).
METRIC_PREFIX = "fleetserve:"
METRIC_NUM_REQUESTS_RUNNING = "fleetserve:num_requests_running"
METRIC_NUM_REQUESTS_WAITING = "fleetserve:num_requests_waiting"
METRIC_KV_CACHE_USAGE = "fleetserve:kv_cache_usage_perc"

# HTTP paths of the runtime that the control plane calls.
PATH_HEALTH = "/health"
PATH_METRICS = "/metrics"

# Environment variables the runtime reads and the operator sets on runtime pods.
ENV_API_KEY = "FLEETSERVE_API_KEY"  # `fleetserve serve --api-key` default; from a Secret in Kubernetes
