"""A burst held through a cold start: `fleetserve router` with held requests spread over the workers that
start together (`--held-spread-secs 60`, the default) against all of them sent to the first ready worker
(`--held-spread-secs 0`), on the same simulated workers.

    python -P benchmarks/cold_start_burst.py                 # 3 workers, 48 requests, 3 repeats

Per run: the router starts with `--worker-urls` of workers that are not running yet (as after a scale
from zero: the router holds every request), the burst is sent, then the workers are started
`--stagger` seconds apart (`fleetserve serve --simulate`, batch cap `--max-running`). Figures: request
latency from send to last byte (p50, p90, max, in wall seconds) and how many requests each worker ran
(from the router's `requests_total`). The two settings alternate, and the medians over the repeats are
printed with the ratio spread / first-ready.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `python -P` leaves the script's folder out

from router_compare import (
    WORKER_BASE_PORT,
    _spawn,
    _stop,
    _wait_http,
    port_in_use,
)

ROUTER_PORT = 21100


def worker_command(port: int, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", "--port", str(port),
            "--simulate", args.profile, "--simulate-time-scale", str(args.time_scale),
            "--max-running-requests", str(args.max_running), "--served-model-name", "sim", "--log-level", "warning"]


def routed_counts(router: str, urls: list[str]) -> list[int]:
    """Requests the router sent to each worker (a worker may not be up yet when the burst is over)."""
    text = httpx.get(f"{router}/metrics", timeout=30).text
    found = dict.fromkeys(urls, 0)
    for url, value in re.findall(r'^fleetserve_router:requests_total\{worker="([^"]+)"\} ([0-9.e+]+)$', text, re.M):
        found[url] = int(float(value))
    return [found[url] for url in urls]


async def one_request(client: httpx.AsyncClient, i: int, output_len: int) -> tuple[float, int]:
    start = time.monotonic()
    reply = await client.post("/v1/completions", json={
        "model": "sim", "prompt": f"Request {i}: tell me a story about the number {i}.",
        "max_tokens": output_len, "ignore_eos": True})
    return time.monotonic() - start, reply.status_code


async def burst(url: str, args: argparse.Namespace, start_workers) -> list[tuple[float, int]]:
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout) as client:
        tasks = [asyncio.create_task(one_request(client, i, args.output_len)) for i in range(args.burst)]
        await asyncio.sleep(0.5)  # every request is held by now
        await start_workers()
        return list(await asyncio.gather(*tasks))


def run(args: argparse.Namespace, spread: float, logs: Path) -> dict:
    ports = [WORKER_BASE_PORT + i for i in range(args.workers)]
    if any(port_in_use(p) for p in [*ports, ROUTER_PORT]):
        raise RuntimeError("a port of the benchmark is taken: stop whatever listens there first")
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    router = _spawn([sys.executable, "-P", "-m", "fleetserve.runtime.cli", "router", "--worker-urls", *urls,
                     "--host", "127.0.0.1", "--port", str(ROUTER_PORT), "--max-hold-secs", "600",
                     "--held-spread-secs", str(spread), "--log-level", "warning"], logs / f"router-{spread}.log")
    workers: list = []
    try:
        _wait_http(f"http://127.0.0.1:{ROUTER_PORT}/health", [router])

        async def start_workers() -> None:
            for i, port in enumerate(ports):
                if i:
                    await asyncio.sleep(args.stagger)
                workers.append(_spawn(worker_command(port, args), logs / f"worker-{spread}-{i}.log"))

        results = asyncio.run(burst(f"http://127.0.0.1:{ROUTER_PORT}", args, start_workers))
        counts = routed_counts(f"http://127.0.0.1:{ROUTER_PORT}", urls)
    finally:
        _stop([router, *workers])
    latencies = sorted(latency for latency, _ in results)
    failed = sum(status != 200 for _, status in results)
    if failed:
        raise RuntimeError(f"{failed} of {len(results)} requests failed; see {logs}")
    return {"p50": statistics.median(latencies), "p90": latencies[int(0.9 * (len(latencies) - 1))],
            "max": latencies[-1], "failed": failed, "counts": counts}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--burst", type=int, default=48)
    p.add_argument("--max-running", type=int, default=8, help="each worker's batch cap")
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--profile", default="l4-qwen-0.5b")
    p.add_argument("--time-scale", type=float, default=3.0)
    p.add_argument("--stagger", type=float, default=2.0, help="seconds between worker starts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    rows: dict[float, list[dict]] = {60.0: [], 0.0: []}
    with tempfile.TemporaryDirectory(prefix="cold-start-") as folder:
        for repeat in range(args.repeats):
            for spread in rows:
                row = run(args, spread, Path(folder))
                rows[spread].append(row)
                print(f"repeat {repeat} --held-spread-secs {spread:g}: p50 {row['p50']:.1f}s p90 {row['p90']:.1f}s "
                      f"max {row['max']:.1f}s failed {row['failed']} per worker {row['counts']}", flush=True)
    medians = {s: {k: statistics.median(r[k] for r in runs) for k in ("p50", "p90", "max")} for s, runs in rows.items()}
    print(f"\n{args.burst} requests held, {args.workers} simulated workers ({args.profile}, batch cap "
          f"{args.max_running}, time scale {args.time_scale:g}) started {args.stagger:g}s apart; medians of "
          f"{args.repeats}:")
    print("| held requests | p50 s | p90 s | max s |")
    print("|---|---:|---:|---:|")
    for spread, label in ((60.0, "spread (60 s)"), (0.0, "all to the first ready")):
        m = medians[spread]
        print(f"| {label} | {m['p50']:.1f} | {m['p90']:.1f} | {m['max']:.1f} |")
    s, f = medians[60.0], medians[0.0]
    print(f"| ratio spread / first | {s['p50'] / f['p50']:.2f} | {s['p90'] / f['p90']:.2f} | "
          f"{s['max'] / f['max']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
