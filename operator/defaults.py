"""Operator-wide defaults: numbers the builders and the spec share, each named once."""

from __future__ import annotations

from fleetserve.runtime import wire

# Runtime pods. A replica that downloads and loads a 70B model can take many minutes before
# /health answers; the startup probe allows STARTUP_TIMEOUT_SECONDS before the kubelet restarts it.
PROBE_PERIOD_SECONDS = 10
READINESS_PERIOD_SECONDS = 5
READINESS_FAILURE_THRESHOLD = 3
LIVENESS_FAILURE_THRESHOLD = 6  # a minute of failed /health checks after start-up
PROBE_TIMEOUT_SECONDS = 5
STARTUP_TIMEOUT_SECONDS = 30 * 60
TERMINATION_GRACE_SECONDS = 120  # long enough to drain streamed completions
SHUTDOWN_MARGIN_SECONDS = 10  # of the grace period, kept for stopping the engine after the drain
REVISION_HISTORY_LIMIT = 3
# progressDeadlineSeconds = the startup timeout plus this much for scheduling and pulling the image.
PROGRESS_MARGIN_SECONDS = 10 * 60

# The image's non-root user (see the Dockerfile's USER).
RUN_AS_USER = 10001

# Where volumes are mounted in runtime pods.
MODEL_MOUNT_PATH = "/mnt/models"
CACHE_MOUNT_PATH = "/var/cache/fleetserve"
SHM_MOUNT_PATH = "/dev/shm"
# pvc:// adapters: each claim the spec's adapters name is mounted read-only at ADAPTER_MOUNT_PATH/CLAIM.
ADAPTER_MOUNT_PATH = "/mnt/adapters"
# The spec's adapters as `fleetserve serve --lora-paths-file` reads them (manifests/adapter_list.py).
ADAPTER_LIST_MOUNT_PATH = "/etc/fleetserve/adapters"
ADAPTER_LIST_FILE = "adapters.json"
HF_HOME = f"{CACHE_MOUNT_PATH}/huggingface"

# Environment variable names the runtime reads.
ENV_HF_TOKEN = "HF_TOKEN"
ENV_HF_HOME = "HF_HOME"
ENV_FLEETSERVE_CACHE = "FLEETSERVE_CACHE"  # runtime/paths.py: demo models and compiled kernels go there
ENV_API_KEY = wire.ENV_API_KEY

GPU_RESOURCE = "nvidia.com/gpu"
MAX_ADAPTER_NAME_LENGTH = 63
# How often the adapter rollout (operator/adapters/) compares every ready runtime pod's adapters with the
# spec's and loads or unloads the difference: a restarted pod gets its adapters back within this long.
ADAPTER_SYNC_SECONDS = 10.0

# The router's Service port (the router container itself listens on wire.ROUTER_PORT).
SERVICE_PORT = 80
ROUTER_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
ROUTER_LIMITS = {"memory": "512Mi"}
# How long a router holds a request while no runtime pod is ready: a cold start (image pull, weights
# load) after a scale from zero takes minutes on a GPU node, more than the router's own default of 60 s.
ROUTER_MAX_HOLD_SECONDS = 300

# Image used when neither the spec nor the operator's --runtime-image names one.
RUNTIME_IMAGE = "ghcr.io/fleetserve/fleetserve:0.1.0"
