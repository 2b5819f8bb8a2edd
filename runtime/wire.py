"""Wire-level names shared by the runtime and the control plane (operator, router).

Torch-free and dependency-free on purpose: the operator and the router import this module, never
the engine. Anything two processes must agree on by name lives here.
"""

from __future__ import annotations

import hashlib
import struct

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
# --max-running-requests: the batch cap, which the autoscaler takes as one replica's running capacity
METRIC_MAX_RUNNING_REQUESTS = "fleetserve:max_running_requests"
# Finished requests by finish reason, a counter (its samples are named METRIC_REQUEST_SUCCESS_TOTAL); the
# autoscaler reads it to tell a service whose requests are all short from an idle one.
METRIC_REQUEST_SUCCESS = "fleetserve:request_success"
METRIC_REQUEST_SUCCESS_TOTAL = f"{METRIC_REQUEST_SUCCESS}_total"
# LoRA (docs/metrics.md): requests per adapter (label lora_name), every loaded adapter (value 1), and
# vLLM's lora_requests_info (labels running_lora_adapters, waiting_lora_adapters, max_lora)
METRIC_LORA_REQUESTS_RUNNING = "fleetserve:lora_num_requests_running"
METRIC_LORA_REQUESTS_WAITING = "fleetserve:lora_num_requests_waiting"
METRIC_LORA_LOADED = "fleetserve:lora_loaded_adapters"
METRIC_LORA_REQUESTS_INFO = "fleetserve:lora_requests_info"
# Exported by `fleetserve router` (docs/router.md); the autoscaler reads the held count to scale from zero.
METRIC_ROUTER_PREFIX = "fleetserve_router:"
METRIC_ROUTER_HELD_REQUESTS = "fleetserve_router:held_requests"

# HTTP paths of the runtime that the control plane calls.
PATH_HEALTH = "/health"
PATH_METRICS = "/metrics"
# LoRA adapters at run time (SGLang's payloads {lora_name, lora_path[, pinned]} / {lora_name}; also under /v1)
PATH_LOAD_LORA = "/load_lora_adapter"
PATH_UNLOAD_LORA = "/unload_lora_adapter"

# Environment variables the runtime reads and the operator sets on runtime pods.
ENV_API_KEY = "FLEETSERVE_API_KEY"  # `fleetserve serve --api-key` default; from a Secret in Kubernetes

# -- Router <-> runtime contract (docs/routing.md) ----------------------------------------------
#
# The router routes on what each worker really holds. Every runtime worker publishes:
#
# GET PATH_ROUTING_INFO -> {"model": served name, "page_size": int, "hash_scheme": BLOCK_HASH_SCHEME,
#     "max_model_len": int, "is_simulated": bool, "tokenizer": tokenizer.json text (or null),
#     "chat_template": Jinja text (or null), "special_tokens": {"bos_token": str|null, "eos_token": ...},
#     "add_bos": bool}
#   what a router needs to compute the token ids the worker will compute for a request (chat template
#   applied) and so the block hashes below. Static for the life of the process.
#
# GET PATH_CACHE_STATE?epoch=E&after=N -> {"epoch": str, "seq": int, "snapshot": [hash hex] | null,
#     "stored": [hash hex], "removed": [hash hex], "adapters": [name], "num_running": int,
#     "num_waiting": int}
#   `epoch` changes when the process starts or its cache is reset (flush, adapter reload). When the
#   caller's epoch differs, or `after` is older than the events the worker retains, the answer carries
#   a full `snapshot` of the cached blocks (and empty stored/removed); otherwise the blocks stored and
#   removed after event number `after`, up to `seq`. `adapters` are the LoRA adapters loaded now.
PATH_ROUTING_INFO = "/routing_info"
PATH_CACHE_STATE = "/cache_state"
BLOCK_HASH_SCHEME = "blake2b64-v1"
ROOT_BLOCK_HASH = 0


def adapter_namespace(adapter: str | None) -> str:
    """The prefix-cache namespace of a request: "" for the base model, else the adapter's name."""
    return adapter or ""


def block_hash(parent: int, tokens: list[int] | tuple[int, ...], namespace: str = "") -> int:
    """Stable 64-bit hash of one full KV page: its parent block's hash, its token ids, the namespace.

    Chained from ROOT_BLOCK_HASH, so equal hashes mean equal prefixes (up to 2^-64 collisions). Every
    process computes the same value (no per-process hash seed).
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(struct.pack("<Q", parent))
    h.update(namespace.encode("utf-8"))
    h.update(b"\x00")
    h.update(struct.pack(f"<{len(tokens)}I", *tokens))
    return int.from_bytes(h.digest(), "little")


def chain_block_hashes(token_ids: list[int], page_size: int, namespace: str = "") -> list[int]:
    """Hashes of every full page of `token_ids`, in order (the last partial page has none)."""
    out: list[int] = []
    parent = ROOT_BLOCK_HASH
    for start in range(0, len(token_ids) - page_size + 1, page_size):
        parent = block_hash(parent, token_ids[start : start + page_size], namespace)
        out.append(parent)
    return out


def hash_hex(value: int) -> str:
    return f"{value:016x}"
