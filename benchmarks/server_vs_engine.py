"""What the HTTP server costs: the same workload through `fleetserve serve` and through AsyncEngine directly.

Workload: N concurrent requests (default 64), each a random token-id prompt of --input-len tokens and
exactly --output-len generated tokens (ignore_eos, greedy). The engine side drives `AsyncEngine` in
this process; the server side starts `fleetserve serve` with the same engine flags and streams
`/v1/completions` (SSE, token-id prompts, usage in the last chunk) with N concurrent aiohttp streams.
The two sides alternate for --repeats rounds (fresh prompts each round, the same for both sides) so
that noise from other load hits both; the median round of each is printed with output tokens/s, TTFT
and the server/engine ratio (target: >= 0.90). Figures only, no asserts.

    python -P benchmarks/server_vs_engine.py --kv-cache-memory-gb 1   # large demo model, bfloat16
    python -P benchmarks/server_vs_engine.py --demo-size tiny --dtype float32   # overhead-bound case
    python benchmarks/server_vs_engine.py --model-path DIR --device cuda --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

from fleetserve.runtime.engine.async_engine import AsyncEngine
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.torch_thread import TorchThread
from fleetserve.runtime.engine.types import SamplingParams


@dataclass
class RunResult:
    name: str
    wall_s: float
    output_tokens: int
    ttft_s: list[float]
    cpu_s: float = 0.0  # CPU time of the serving process during the run (engine: this process)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s

    def line(self) -> str:
        ttft = sorted(self.ttft_s)
        p99 = ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))]
        return (f"{self.name:<8} {self.output_tokens:>7} tok in {self.wall_s:7.2f} s = {self.tokens_per_s:9.1f} tok/s"
                f" | TTFT mean {statistics.mean(ttft) * 1e3:8.1f} ms  median {statistics.median(ttft) * 1e3:8.1f} ms"
                f"  p99 {p99 * 1e3:8.1f} ms | CPU {self.cpu_s:6.2f} s")


def make_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab - 10) for _ in range(length)] for _ in range(n)]


def engine_config(args: argparse.Namespace, model_path: str) -> EngineConfig:
    return EngineConfig(model_path=model_path, device=args.device, dtype=args.dtype,
                        kv_cache_memory_gb=args.kv_cache_memory_gb, max_running_requests=args.concurrency)


def engine_flags(args: argparse.Namespace, model_path: str) -> list[str]:
    flags = ["--model-path", model_path, "--device", args.device, "--dtype", args.dtype,
             "--max-running-requests", str(args.concurrency), "--log-level", "warning"]
    if args.kv_cache_memory_gb is not None:
        flags += ["--kv-cache-memory-gb", str(args.kv_cache_memory_gb)]
    return flags


async def run_engine(engine: AsyncEngine, prompts: list[list[int]], output_len: int) -> RunResult:
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)

    async def one(i: int, prompt: list[int]) -> tuple[float, int]:
        start, first, count = time.perf_counter(), None, 0
        async for out in engine.generate(f"bench-{i}-{start}", prompt, params):
            new = sum(len(o.new_token_ids) for o in out.outputs)
            if new and first is None:
                first = time.perf_counter() - start
            count += new
        return first or 0.0, count

    t0, cpu0 = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return RunResult("engine", wall, sum(r[1] for r in results), [r[0] for r in results], cpu)


async def stream_one(session: aiohttp.ClientSession, base_url: str, prompt: list[int],
                     output_len: int) -> tuple[float, int]:
    body = {"prompt": prompt, "max_tokens": output_len, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, tokens = time.perf_counter(), None, 0
    async with session.post(f"{base_url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.content:  # kept light: the client shares the CPU with the server
            if not line.startswith(b"data: {"):
                continue
            if first is None:
                first = time.perf_counter() - start
            if b'"usage":{' in line:
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    return first or 0.0, tokens


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process (Linux /proc); 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_server(base_url: str, pid: int, prompts: list[list[int]], output_len: int) -> RunResult:
    # aiohttp (as `fleetserve bench` uses): on this 2-core machine the client's own CPU is taken from the
    # server, and aiohttp's streaming costs about half of httpx's per chunk
    connector = aiohttp.TCPConnector(limit=len(prompts))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await stream_one(session, base_url, prompts[0][:8], 2)  # warm-up: connection, first step
        t0, cpu0, client_cpu0 = time.perf_counter(), process_cpu_s(pid), time.process_time()
        results = await asyncio.gather(*(stream_one(session, base_url, p, output_len) for p in prompts))
        wall, cpu = time.perf_counter() - t0, process_cpu_s(pid) - cpu0
        client_cpu = time.process_time() - client_cpu0
    result = RunResult("server", wall, sum(r[1] for r in results), [r[0] for r in results], cpu)
    print(f"  (the HTTP client itself used {client_cpu:.2f} s of CPU on this machine)")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(flags: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", "--port", str(port), *flags])
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"fleetserve serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("fleetserve serve did not start")


async def compare(args: argparse.Namespace, url: str, pid: int, vocab: int,
                  worker: TorchThread) -> tuple[list[RunResult], list[RunResult]]:
    """Alternate engine and server runs (fresh prompts per round, the same for both sides)."""
    engine = AsyncEngine.from_config(engine_config(args, args.model_path), worker)
    await engine.start()
    engine_runs, server_runs = [], []
    try:
        warm = make_prompts(1, 8, vocab, seed=-1)
        await run_engine(engine, warm, 2)
        for round_ in range(args.repeats):
            prompts = make_prompts(args.concurrency, args.input_len, vocab, args.seed + round_)
            engine_runs.append(await run_engine(engine, prompts, args.output_len))
            server_runs.append(await run_server(url, pid, prompts, args.output_len))
            print(f"round {round_ + 1}: {engine_runs[-1].tokens_per_s:8.1f} vs {server_runs[-1].tokens_per_s:8.1f} "
                  "tok/s (engine vs server)", flush=True)
    finally:
        await engine.shutdown()
    return engine_runs, server_runs


def median_run(runs: list[RunResult]) -> RunResult:
    return sorted(runs, key=lambda r: r.tokens_per_s)[len(runs) // 2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", help="default: the demo model of --demo-size")
    p.add_argument("--demo-size", default="large", choices=["tiny", "small", "large"],
                   help="demo model size when no --model-path (default large: 57 M parameters, where the model's "
                        "compute matters; tiny shows the per-token HTTP overhead alone)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="bfloat16", help="default bfloat16 (auto: float32 on CPU)")
    p.add_argument("--kv-cache-memory-gb", type=float, default=None)
    p.add_argument("--concurrency", type=int, default=64, help="concurrent requests (streams)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="alternating engine/server rounds; the median is shown")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # all torch work of this process on the engine's thread, as in `fleetserve serve` (torch_thread.py):
    # writing the demo model on the main thread would slow the engine side down by a second OpenMP team
    worker = TorchThread("fleetserve-engine")
    if args.model_path is None:
        from fleetserve.runtime.demo import default_demo_model_dir

        args.model_path = worker.call(lambda: str(default_demo_model_dir(size=args.demo_size)))
    vocab = json.loads(Path(args.model_path, "config.json").read_text())["vocab_size"]
    print(f"workload: {args.concurrency} concurrent requests, {args.input_len} prompt + {args.output_len} output "
          f"tokens each, {args.repeats} rounds, model {args.model_path}, device {args.device}")
    proc, url = start_server(engine_flags(args, args.model_path))
    try:
        engine_runs, server_runs = asyncio.run(compare(args, url, proc.pid, vocab, worker))
    finally:
        proc.terminate()
        proc.wait(30)
    engine, server = median_run(engine_runs), median_run(server_runs)
    print("median round of each side:")
    print(engine.line())
    print(server.line())
    print(f"server/engine output tokens/s: {server.tokens_per_s / engine.tokens_per_s:.3f} (target >= 0.90); "
          f"TTFT median ratio {statistics.median(server.ttft_s) / statistics.median(engine.ttft_s):.2f}")


if __name__ == "__main__":
    main()
