"""`fleetserve operator`: parse flags, wire the handlers, run kopf.

    fleetserve operator                       # all namespaces
    fleetserve operator -n team-a -n team-b   # or FLEETSERVE_WATCH_NAMESPACES=team-a,team-b
    fleetserve operator --standalone          # a single replica without kopf peering

Several replicas peer through kopf's (Cluster)KopfPeering object named by --peering: each draws
a random priority, the highest one works, the others pause until its heartbeat stops.
"""

from __future__ import annotations

import argparse
import os
import secrets
from typing import Any

import kopf

from fleetserve.operator.config import (
    DEFAULT_LIVENESS,
    DEFAULT_PEERING_NAME,
    DEFAULT_RESYNC_SECONDS,
    ENV_NAMESPACES,
    ENV_RUNTIME_IMAGE,
    OperatorConfig,
    parse_namespaces,
)
from fleetserve.operator.defaults import RUNTIME_IMAGE
from fleetserve.operator.handlers import build_registry, make_memo

MAX_PRIORITY = 2**31 - 1
LOG_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetserve operator", description="Run the fleetserve kopf operator.")
    p.add_argument("-n", "--namespace", action="append", default=[], dest="namespaces",
                   help=f"namespace to watch (repeatable; default ${ENV_NAMESPACES}, else all namespaces)")
    p.add_argument("--runtime-image", default=os.environ.get(ENV_RUNTIME_IMAGE, RUNTIME_IMAGE),
                   help=f"image for runtime and router pods when the spec names none (${ENV_RUNTIME_IMAGE})")
    p.add_argument("--resync-seconds", type=float, default=DEFAULT_RESYNC_SECONDS,
                   help="how often every InferenceService is re-reconciled (drift repair)")
    p.add_argument("--standalone", action="store_true", help="run without kopf peering")
    p.add_argument("--peering", default=DEFAULT_PEERING_NAME, help="name of the kopf peering object")
    p.add_argument("--priority", type=int, default=None,
                   help="peering priority (default: random, so exactly one replica is active)")
    p.add_argument("--liveness", default=DEFAULT_LIVENESS, help="liveness endpoint URL, '' to disable")
    p.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="plain")
    p.add_argument("--verbose", action="store_true", help="log each handler call")
    p.add_argument("--debug", action="store_true", help="log kopf's internals and API calls")
    return p


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    namespaces = tuple(args.namespaces) or parse_namespaces(os.environ.get(ENV_NAMESPACES))
    priority = args.priority if args.priority is not None else 1 + secrets.randbelow(MAX_PRIORITY)
    return OperatorConfig(
        namespaces=namespaces,
        runtime_image=args.runtime_image,
        resync_seconds=args.resync_seconds,
        standalone=args.standalone,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=args.liveness or None,
    )


def run_options(config: OperatorConfig) -> dict[str, Any]:
    """kopf.run/kopf.operator arguments for ``config`` (the tests start kopf with the same ones)."""
    return {
        "clusterwide": config.clusterwide,
        "namespaces": config.namespaces,
        "standalone": config.standalone,
        "priority": config.priority,
        # Naming a peering makes it mandatory in kopf: replicas wait for the peering CRD rather
        # than run unpeered. Standalone names none, or kopf would wait for peering forever.
        "peering_name": None if config.standalone else config.peering_name,
        "liveness_endpoint": config.liveness_endpoint,
    }


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    config = config_from_args(args)
    kopf.configure(debug=args.debug, verbose=args.verbose, log_format=LOG_FORMATS[args.log_format])
    kopf.run(registry=build_registry(config), memo=make_memo(config), **run_options(config))
    return 0
