"""`fleetserve serve --dp N`: N engine worker processes on this machine behind the built-in router.

Worker i is `fleetserve serve` with the same flags on 127.0.0.1, port `--port + i` (i = 1..N); the
router (`fleetserve router --policy cache_aware`) listens on `--host`/`--port` in front of them, as
SGLang's `--dp` with its router. Every child gets SIGTERM when this process dies (Linux parent-death
signal) and is stopped when this process stops or any child exits; the exit status is the first
child's that ended.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import time

logger = logging.getLogger(__name__)

WORKER_HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1
# flags of `serve` that belong to the front (the router), not to each worker
_FRONT_FLAGS = {"--dp": 1, "--host": 1, "--port": 1}


def worker_argv(argv: list[str], port: int) -> list[str]:
    """The worker's command line: the parent's without --dp/--host/--port, on loopback at `port`."""
    out: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in _FRONT_FLAGS:
            skip = _FRONT_FLAGS[name] if "=" not in arg else 0
            continue
        out.append(arg)
    return [*out, "--host", WORKER_HOST, "--port", str(port)]


def router_argv(args: argparse.Namespace, worker_urls: list[str]) -> list[str]:
    argv = ["--host", args.host, "--port", str(args.port), "--policy", "cache_aware",
            "--log-level", args.log_level, "--worker-urls", *worker_urls]
    if args.api_key:
        argv += ["--api-key", args.api_key]
    return argv


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, whatever killed it (Linux only)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(subcommand: str, argv: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-P", "-m", "fleetserve.runtime.cli", subcommand, *argv]
    return subprocess.Popen(command, preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def stop_all(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_data_parallel(args: argparse.Namespace, argv: list[str]) -> int:
    ports = [args.port + i for i in range(1, args.dp + 1)]
    urls = [f"http://{WORKER_HOST}:{port}" for port in ports]
    logger.info("--dp %d: workers on %s behind the router on %s:%d", args.dp, ", ".join(urls), args.host, args.port)
    children = [spawn("serve", worker_argv(argv, port)) for port in ports]
    children.append(spawn("router", router_argv(args, urls)))
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while not stopping:
            ended = [c for c in children if c.poll() is not None]
            if ended:
                status = ended[0].returncode
                logger.error("child %s exited with status %s; stopping the others", ended[0].pid, status)
                break
            time.sleep(POLL_S)
    finally:
        stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else (status or 1)  # a child that ends on its own is a failure of the whole
