"""`fleetserve router`: command line -> RouterConfig -> the aiohttp server. Never imports torch."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from aiohttp import web

from fleetserve.runtime import wire
from fleetserve.runtime.router.config import RouterConfig
from fleetserve.runtime.router.policies import POLICY_NAMES, CacheAwareConfig

logger = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def build_parser() -> argparse.ArgumentParser:
    d = RouterConfig()
    ca = CacheAwareConfig()
    p = argparse.ArgumentParser(prog="fleetserve router", description="Prefix-cache-aware, load-aware and "
                                "LoRA-aware router in front of `fleetserve serve` workers (docs/router.md).")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    workers = p.add_argument_group("workers")
    workers.add_argument("--worker-urls", nargs="*", default=[], metavar="URL", help="static worker list")
    workers.add_argument("--k8s-service", default=None, metavar="NAME",
                         help="discover workers from the EndpointSlices of this (headless) Service")
    workers.add_argument("--k8s-namespace", default=None,
                         help="namespace of --k8s-service (default: the pod's own namespace)")
    workers.add_argument("--k8s-port-name", default=d.k8s_port_name,
                         help="the EndpointSlice port to use (the runtime container's port name)")
    policy = p.add_argument_group("routing")
    policy.add_argument("--policy", choices=POLICY_NAMES, default=d.policy)
    policy.add_argument("--cache-threshold", type=float, default=ca.cache_threshold,
                        help="cache_aware: a prefix match covering less of the prompt than this counts as none")
    policy.add_argument("--balance-abs-threshold", type=int, default=ca.balance_abs_threshold,
                        help="cache_aware: least-loaded wins when max-min load exceeds this ...")
    policy.add_argument("--balance-rel-threshold", type=float, default=ca.balance_rel_threshold,
                        help="... and max load exceeds this times min load")
    policy.add_argument("--request-cost-tokens", type=float, default=ca.request_cost_tokens,
                        help="cache_aware: cost of one running or queued request, in prefill tokens")
    policy.add_argument("--eviction-interval-secs", type=float, default=d.eviction_interval_secs,
                        help="lifetime of a predicted cache entry that the worker never reports")
    policy.add_argument("--max-tree-size", type=int, default=d.max_tree_size,
                        help="predicted cache entries kept per worker")
    policy.add_argument("--tokenizer-path", default=None, metavar="DIR",
                        help="model folder with tokenizer.json (default: fetched from a worker's /routing_info)")
    policy.add_argument("--page-size", type=int, default=d.page_size, help="the workers' page size, with --tokenizer-path")
    policy.add_argument("--seed", type=int, default=None, help="seed of the random and power_of_two policies")
    health = p.add_argument_group("health, retries, holding")
    health.add_argument("--cache-poll-interval-secs", type=float, default=d.cache_poll_interval_secs)
    health.add_argument("--health-check-interval-secs", type=float, default=d.health_check_interval_secs,
                        help="poll interval of workers that are not ready")
    health.add_argument("--health-failure-threshold", type=int, default=d.health_failure_threshold,
                        help="failed polls in a row that eject a worker")
    health.add_argument("--max-retries", "--retry-max-retries", dest="max_retries", type=int, default=d.max_retries,
                        help="other workers tried when one cannot take a request")
    health.add_argument("--request-timeout-secs", type=float, default=d.request_timeout_secs)
    health.add_argument("--max-held-requests", type=int, default=d.max_held_requests,
                        help="requests held while no worker is ready (0: answer 503 at once)")
    health.add_argument("--max-hold-secs", type=float, default=d.max_hold_secs,
                        help="how long a request is held before the 503")
    health.add_argument("--held-spread-secs", type=float, default=d.held_spread_secs,
                        help="requests that were held go only to workers below their batch cap while other "
                             "workers are starting, for at most this long (0: all to the first ready worker)")
    health.add_argument("--retry-after-secs", type=int, default=d.retry_after_secs)
    p.add_argument("--api-key", default=os.environ.get(wire.ENV_API_KEY),
                   help=f"required bearer key, forwarded to workers (default ${wire.ENV_API_KEY})")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    return p


def config_from_args(args: argparse.Namespace) -> RouterConfig:
    return RouterConfig(
        host=args.host, port=args.port, worker_urls=[u.rstrip("/") for u in args.worker_urls],
        k8s_service=args.k8s_service, k8s_namespace=args.k8s_namespace, k8s_port_name=args.k8s_port_name,
        policy=args.policy,
        cache_aware=CacheAwareConfig(args.cache_threshold, args.balance_abs_threshold, args.balance_rel_threshold,
                                     args.request_cost_tokens),
        eviction_interval_secs=args.eviction_interval_secs, max_tree_size=args.max_tree_size,
        api_key=args.api_key or None, tokenizer_path=args.tokenizer_path, page_size=args.page_size,
        cache_poll_interval_secs=args.cache_poll_interval_secs,
        health_check_interval_secs=args.health_check_interval_secs,
        health_failure_threshold=args.health_failure_threshold, max_held_requests=args.max_held_requests,
        max_hold_secs=args.max_hold_secs, held_spread_secs=args.held_spread_secs,
        retry_after_secs=args.retry_after_secs, max_retries=args.max_retries,
        request_timeout_secs=args.request_timeout_secs, seed=args.seed,
    )


async def serve(config: RouterConfig) -> None:
    from fleetserve.runtime.router.app import Router

    router = Router(config)
    await router.start()
    runner = web.AppRunner(router.build_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    logger.info("fleetserve router listening on http://%s:%d (policy %s, %s)", config.host, config.port,
                config.policy, f"k8s service {config.k8s_service}" if config.k8s_service
                else f"{len(config.worker_urls)} static workers")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("fleetserve router stopping")
        await runner.cleanup()
        await router.stop()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.worker_urls and not args.k8s_service:
        build_parser().error("give --worker-urls or --k8s-service")
    if args.worker_urls and args.k8s_service:
        build_parser().error("--worker-urls and --k8s-service exclude each other")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config_from_args(args)))
    return 0
