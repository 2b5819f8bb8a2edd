"""Routers side by side in front of the SAME workers: SGLang's `sglang-router` (cache_aware, and its
round_robin) against `fleetserve router` (cache_aware), with the same seeded workloads and the workers'
prefix caches flushed before every row.

    python -P benchmarks/router_compare.py --mode sim    # 16 simulated H100s (fleetserve serve --simulate)
    python -P benchmarks/router_compare.py --mode real   # 4 real workers on the demo model, small counts

Workloads (docs/benchmarks.md, "Routers"): balanced (groups of requests sharing a long system prompt),
hot (70% of requests on one system prompt), multiturn (conversations whose prompts grow by the previous
answer and a new question), pressure (prefixes that fit in the fleet's caches, not in one worker's).
Arrivals are open-loop Poisson (conversations arrive so; their turns follow each other). In sim mode the
rate is set to `--load` (0.7) of the fleet's modelled capacity at the ideal hit rate.

Figures per row: hit rate = sum(cached_tokens) / sum(prompt_tokens) as the workers report them (they run
with --enable-cache-report), and the ideal (every page some earlier request's prompt held, one infinite
cache); output tok/s; TTFT p50/p99; the busiest worker's share of requests (from the workers' own
request counters). In sim mode, times are modelled GPU time: wall time / --time-scale.

SGLang's router is installed by benchmarks/setup_sglang_router.sh (its own venv), started offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np

from fleetserve.runtime.bench.client import EndpointConfig, RequestResult, send_request
from fleetserve.runtime.bench.metrics import percentile
from fleetserve.runtime.bench.prompts import PromptBuilder
from fleetserve.runtime.bench.tokenizer import sampleable_token_ids
from fleetserve.runtime.bench.workloads import BenchRequest
from fleetserve.runtime.sim.profiles import StepWork, get_profile
from fleetserve.runtime.wire import chain_block_hashes

HERE = Path(__file__).resolve().parent
SGLANG_PY = HERE / ".venv-sglang-router" / "bin" / "python"
PAGE = 16
ROUTER_PORT = 21000  # below the ephemeral range (32768+), where client sockets could hold a port
WORKER_BASE_PORT = 21500
START_TIMEOUT_S = 600.0


# -- workloads -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Turn:
    question: str
    max_tokens: int


@dataclass(slots=True)
class Unit:
    """One arrival: a single request (one turn) or a conversation (turns sent one after the other)."""

    system: str
    turns: list[Turn]


@dataclass(slots=True)
class Workload:
    name: str
    units: list[Unit]


def _builder(tokenizer, seed: int) -> PromptBuilder:
    return PromptBuilder(tokenizer, sampleable_token_ids(tokenizer), np.random.default_rng(seed))


def balanced(b: PromptBuilder, groups: int, per_group: int, system_len: int, question_len: int,
             out: int) -> Workload:
    systems = [b.build(system_len) for _ in range(groups)]
    units = [Unit(s.text, [Turn(b.build(question_len).text, out)]) for s in systems for _ in range(per_group)]
    return Workload("balanced", [units[i] for i in b.rng.permutation(len(units))])


def hot(b: PromptBuilder, num: int, others: int, system_len: int, question_len: int, out: int,
        hot_share: float = 0.7) -> Workload:
    hot_system = b.build(system_len).text
    cold = [b.build(system_len).text for _ in range(others)]
    units = []
    for i in range(num):
        system = hot_system if b.rng.random() < hot_share else cold[i % others]
        units.append(Unit(system, [Turn(b.build(question_len).text, out)]))
    return Workload("hot", units)


def multiturn(b: PromptBuilder, conversations: int, turns: int, system_len: int, question_len: int,
              out: int) -> Workload:
    units = [Unit(b.build(system_len).text, [Turn(b.build(question_len).text, out) for _ in range(turns)])
             for _ in range(conversations)]
    return Workload("multiturn", units)


def pressure(b: PromptBuilder, prefixes: int, per_prefix: int, system_len: int, question_len: int,
             out: int) -> Workload:
    w = balanced(b, prefixes, per_prefix, system_len, question_len, out)
    return Workload("pressure", w.units)


# -- processes -----------------------------------------------------------------------------------


def _spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=HERE, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_http(url: str, processes: list[subprocess.Popen], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"a process exited while waiting for {url}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 in {timeout_s} s")


@dataclass
class Fleet:
    urls: list[str]
    processes: list[subprocess.Popen]

    def flush(self) -> None:
        for url in self.urls:
            for _ in range(100):
                if httpx.post(f"{url}/flush_cache", timeout=30).status_code == 200:
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"{url} refused to flush its cache")

    def request_counts(self) -> list[int]:
        counts = []
        for url in self.urls:
            text = httpx.get(f"{url}/metrics", timeout=30).text
            total = sum(float(m) for m in re.findall(r'^fleetserve:request_success_total\{[^}]*\} ([0-9.e+]+)$',
                                                     text, re.M))
            counts.append(int(total))
        return counts


def start_fleet(args: argparse.Namespace, logs: Path) -> Fleet:
    processes, urls = [], []
    for i in range(args.workers):
        port = WORKER_BASE_PORT + i
        if port_in_use(port):
            raise RuntimeError(f"port {port} is taken: stop whatever listens there first")
        command = [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", "--port", str(port),
                   "--enable-cache-report", "--page-size", str(PAGE), "--max-running-requests", "256",
                   "--log-level", "warning"]
        if args.mode == "sim":
            command += ["--simulate", args.profile, "--simulate-time-scale", str(args.time_scale),
                        "--kv-cache-memory-gb", str(args.kv_cache_gb)]
        else:
            command += ["--context-length", "8192", "--kv-cache-memory-gb", str(args.kv_cache_gb),
                        "--skip-server-warmup"]
        processes.append(_spawn(command, logs / f"worker-{i}.log"))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            _wait_http(f"{url}/health", processes)
    except BaseException:  # a worker that failed, or SIGTERM while starting: leave none behind
        _stop(processes)
        raise
    return Fleet(urls, processes)


def router_command(kind: str, urls: list[str], port: int) -> tuple[list[str], dict[str, str]]:
    if kind.startswith("sglang"):
        policy = kind.removeprefix("sglang_")
        return ([str(SGLANG_PY), "-m", "sglang_router.launch_router", "--worker-urls", *urls, "--policy", policy,
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "warn",
                 "--shutdown-grace-period-secs", "1", "--prometheus-port", str(port + 200)],
                {"HF_HUB_OFFLINE": "1"})
    policy = kind.removeprefix("fleetserve_")
    return ([sys.executable, "-P", "-m", "fleetserve.runtime.cli", "router", "--worker-urls", *urls,
             "--policy", policy, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], {})


# -- one row -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sent:
    messages: list[dict]
    result: RequestResult
    sent_at: float


@dataclass
class Row:
    router: str
    workload: str
    sent: list[Sent] = field(default_factory=list)
    duration_s: float = 0.0
    counts: list[int] = field(default_factory=list)


async def drive(url: str, workload: Workload, rate: float, seed: int, timeout_s: float) -> tuple[list[Sent], float]:
    """Open-loop Poisson arrivals of the workload's units; a unit's turns go one after the other, each
    carrying the conversation so far (system, questions and the answers the server gave)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0 / rate, len(workload.units) - 1))])
    base = EndpointConfig(base_url=url, endpoint="/v1/chat/completions", model="default", ignore_eos=True,
                          temperature=0.0)
    sent: list[Sent] = []
    limits = httpx.Limits(max_connections=2048, max_keepalive_connections=2048)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=30.0), limits=limits) as client:

        async def conversation(unit: Unit) -> None:
            messages: list[dict] = [{"role": "system", "content": unit.system}]
            for turn in unit.turns:
                messages.append({"role": "user", "content": turn.question})
                config = replace(base, extra_body={"messages": list(messages)})
                sent_at = time.perf_counter()
                result = await send_request(client, config, BenchRequest("", 0, turn.max_tokens))
                sent.append(Sent(list(messages), result, sent_at))
                if not result.is_success:
                    return
                messages.append({"role": "assistant", "content": result.generated_text})

        start = time.perf_counter()
        tasks = []
        for unit, offset in zip(workload.units, offsets, strict=True):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(conversation(unit)))
        await asyncio.gather(*tasks)
        return sent, time.perf_counter() - start


def ideal_hit_rate(tokenizer, sent: list[Sent]) -> float:
    """Cached tokens / prompt tokens if one worker with an endless cache had served every request in order
    (pages of earlier prompts only)."""
    seen: set[int] = set()
    cached = total = 0
    for s in sorted(sent, key=lambda s: s.sent_at):
        text = tokenizer.apply_chat_template(s.messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        hashes = chain_block_hashes(ids, PAGE)
        usable = (len(ids) - 1) // PAGE
        hit = 0
        while hit < min(usable, len(hashes)) and hashes[hit] in seen:
            hit += 1
        cached += hit * PAGE
        total += len(ids)
        seen.update(hashes)
    return cached / total if total else 0.0


def summarize(row: Row, tokenizer, scale: float) -> dict:
    done = [s.result for s in row.sent if s.result.is_success]
    prompt = sum(r.usage_prompt_tokens or 0 for r in done)
    cached = sum(r.usage_cached_tokens or 0 for r in done)
    output = sum(r.usage_output_tokens or 0 for r in done)
    ttfts = sorted(r.ttft / scale for r in done if r.ttft is not None)
    total = sum(row.counts) or 1
    return {
        "router": row.router,
        "workload": row.workload,
        "requests": len(row.sent),
        "failed": len(row.sent) - len(done),
        "hit_rate": round(cached / prompt, 4) if prompt else 0.0,
        "ideal_hit_rate": round(ideal_hit_rate(tokenizer, row.sent), 4),
        "output_tok_s": round(output / (row.duration_s / scale), 1),
        "ttft_p50_s": round(percentile(ttfts, 50), 4) if ttfts else None,
        "ttft_p99_s": round(percentile(ttfts, 99), 4) if ttfts else None,
        "busiest_share": round(max(row.counts) / total, 4) if row.counts else None,
        "per_worker": row.counts,
        "duration_s": round(row.duration_s / scale, 2),
    }


# -- sizing --------------------------------------------------------------------------------------


def modelled_rate(args: argparse.Namespace, workload: Workload, tokenizer) -> float:
    """Units per second (wall) at `--load` of the fleet's modelled capacity, assuming the ideal hit rate:
    each request costs its uncached prefill and its decode tokens at a batch of 32."""
    profile = get_profile(args.profile)
    seen: set[int] = set()
    busy = 0.0
    decode = profile.step_time([StepWork(1, 2048)] * 32) / 32
    for unit in workload.units:
        context = len(tokenizer(unit.system, add_special_tokens=False)["input_ids"])
        for turn in unit.turns:
            q = len(tokenizer(turn.question, add_special_tokens=False)["input_ids"])
            key = (unit.system, context)
            hit = context if key in seen else 0
            seen.add(key)
            new = context + q - hit
            busy += profile.step_time([StepWork(new, hit)]) - profile.step_overhead_s + turn.max_tokens * decode
            context += q + turn.max_tokens
            seen.add((unit.system, context))
    span = busy / (args.workers * args.load)  # seconds of modelled time the workload should take
    return len(workload.units) / (span * args.time_scale)


def build_workloads(args: argparse.Namespace, tokenizer) -> list[Workload]:
    b = _builder(tokenizer, args.seed)
    s = args.size
    if args.mode == "sim":
        made = {
            "balanced": lambda: balanced(b, 64 // s, 16, 2048, 128, args.output_len),
            "hot": lambda: hot(b, 1024 // s, 63 // s, 2048, 128, args.output_len),
            "multiturn": lambda: multiturn(b, 64 // s, 6, 512, 128, 64),
            "pressure": lambda: pressure(b, 96 // s, 8, 2048, 128, args.output_len),
        }
    else:
        made = {
            "balanced": lambda: balanced(b, 8, 4, 512, 32, args.output_len),
            "hot": lambda: hot(b, 32, 7, 512, 32, args.output_len),
            "multiturn": lambda: multiturn(b, 6, 4, 256, 32, 16),
            "pressure": lambda: pressure(b, 12, 3, 512, 32, args.output_len),
        }
    return [made[name]() for name in args.workloads]


def print_table(rows: list[dict], out: Callable[[str], None] = print) -> None:
    head = ("workload", "router", "hit", "ideal", "hit/ideal", "out tok/s", "TTFT p50", "TTFT p99", "busiest",
            "failed")
    out("| " + " | ".join(head) + " |")
    out("|" + "---|" * len(head))
    for r in rows:
        ratio = r["hit_rate"] / r["ideal_hit_rate"] if r["ideal_hit_rate"] else float("nan")
        out(f"| {r['workload']} | {r['router']} | {r['hit_rate']:.3f} | {r['ideal_hit_rate']:.3f} | {ratio:.2f} | "
            f"{r['output_tok_s']:.0f} | {r['ttft_p50_s']:.3f} s | {r['ttft_p99_s']:.3f} s | "
            f"{r['busiest_share']:.3f} | {r['failed']} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["sim", "real"], default="sim")
    p.add_argument("--workers", type=int, help="default: 16 simulated, 4 real")
    p.add_argument("--profile", default="h100-llama-8b", help="simulator profile (sim mode)")
    p.add_argument("--time-scale", type=float, default=8.0, help="simulated steps run X times slower (sim mode)")
    p.add_argument("--kv-cache-gb", type=float, help="each worker's KV cache (default: 2 sim, 0.25 real)")
    p.add_argument("--load", type=float, default=0.7, help="arrival rate as a fraction of modelled capacity")
    p.add_argument("--rate", type=float, default=2.0, help="arrivals per second (real mode)")
    p.add_argument("--size", type=int, default=1, help="divide the sim workloads' group counts by this")
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--workloads", nargs="+", default=["balanced", "hot", "multiturn", "pressure"])
    p.add_argument("--routers", nargs="+", default=["sglang_cache_aware", "fleetserve_cache_aware",
                                                    "sglang_round_robin"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "router_compare.json")
    args = p.parse_args()
    args.workers = args.workers or (16 if args.mode == "sim" else 4)
    args.kv_cache_gb = args.kv_cache_gb or (2.0 if args.mode == "sim" else 0.25)
    scale = args.time_scale if args.mode == "sim" else 1.0
    if any(r.startswith("sglang") for r in args.routers) and not SGLANG_PY.exists():
        p.error("sglang-router is not installed: run bash benchmarks/setup_sglang_router.sh")

    from transformers import AutoTokenizer

    from fleetserve.runtime.demo import default_demo_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(default_demo_model_dir()))
    workloads = build_workloads(args, tokenizer)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop every child
    fleet = start_fleet(args, logs)
    rows: list[dict] = []
    try:
        for workload in workloads:
            rate = modelled_rate(args, workload, tokenizer) if args.mode == "sim" else args.rate
            for router in args.routers:
                fleet.flush()
                before = fleet.request_counts()
                port = ROUTER_PORT + len(rows)  # a port of its own: a router that lingers answers nobody
                if port_in_use(port):
                    raise RuntimeError(f"port {port} is taken: stop whatever listens there first")
                command, env = router_command(router, fleet.urls, port)
                proc = _spawn(command, logs / f"router-{router}-{workload.name}.log", env)
                try:
                    _wait_http(f"http://127.0.0.1:{port}/health", [proc], 120)
                    time.sleep(2.0)  # let a router learn its workers (fleetserve: /routing_info, /cache_state)
                    sent, duration = asyncio.run(drive(f"http://127.0.0.1:{port}", workload, rate,
                                                       args.seed, 600.0))
                    if proc.poll() is not None:
                        raise RuntimeError(f"{router} exited during the run; see its log")
                finally:
                    _stop([proc])
                after = fleet.request_counts()
                row = Row(router, workload.name, sent, duration, [a - b for a, b in zip(after, before, strict=True)])
                rows.append(summarize(row, tokenizer, scale) | {"rate_per_s": round(rate * scale, 2)})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        _stop(fleet.processes)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
