"""Everything the router process is configured with (built from the command line in launch.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetserve.runtime import wire
from fleetserve.runtime.router.policies import CacheAwareConfig


@dataclass(slots=True)
class RouterConfig:
    host: str = "127.0.0.1"
    port: int = wire.ROUTER_PORT
    worker_urls: list[str] = field(default_factory=list)
    k8s_service: str | None = None
    k8s_namespace: str | None = None
    k8s_port_name: str = "http"
    policy: str = "cache_aware"
    cache_aware: CacheAwareConfig = field(default_factory=CacheAwareConfig)
    eviction_interval_secs: float = 30.0  # lifetime of a predicted cache entry the worker never reports
    max_tree_size: int = 1 << 18  # predicted cache entries kept per worker (oldest dropped first)
    api_key: str | None = None
    tokenizer_path: str | None = None
    page_size: int = 16  # page size of --tokenizer-path (a worker's /routing_info brings its own)
    cache_poll_interval_secs: float = 0.2
    health_check_interval_secs: float = 1.0  # polls of workers that are not ready (pending, ejected)
    health_failure_threshold: int = 3
    max_held_requests: int = 1024
    max_hold_secs: float = 60.0
    # after a hold: fill ready workers only up to their batch cap while others start, for this long at most
    held_spread_secs: float = 60.0
    retry_after_secs: int = 5
    max_retries: int = 3
    request_timeout_secs: float = 1800.0
    connect_timeout_secs: float = 5.0
    seed: int | None = None

    @property
    def is_holding_on(self) -> bool:
        return self.max_held_requests > 0 and self.max_hold_secs > 0
