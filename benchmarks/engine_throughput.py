"""Offline engine benchmark against transformers, side by side on the same checkpoint and workload.

(a) throughput: N requests, random prompt lengths 32–512 and output lengths 16–256, greedy,
    ignore_eos. fleetserve's engine (continuous batching) against transformers' batched `generate()`
    (left padding; it runs until the longest request is done). Both are credited only with the
    tokens each request asked for. transformers runs first, with glibc's malloc defaults; the engine
    then tunes malloc for the process as `fleetserve serve` does (runtime/engine/cpu_malloc.py).
(b) shared prefix: N requests sharing a 1,024-token prefix plus a distinct 32-token question, all
    submitted at once; mean time to first token with the prefix cache against without it.

    python -P benchmarks/engine_throughput.py [--size large] [--num-requests 64] [--dtype bfloat16]

Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fleetserve.runtime.demo import write_demo_model
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams


def random_workload(n: int, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([rng.randrange(vocab) for _ in range(rng.randint(32, 512))], rng.randint(16, 256)) for _ in range(n)]


def run_engine(engine: LLMEngine, work: list[tuple[list[int], int]]) -> dict[str, float]:
    """Submits everything at once; returns wall time, output tokens and mean TTFT."""
    start = time.perf_counter()
    arrival = {}
    for i, (prompt, max_tokens) in enumerate(work):
        engine.add_request(str(i), prompt, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
        arrival[str(i)] = time.perf_counter()
    first_token: dict[str, float] = {}
    tokens = 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            now = time.perf_counter()
            new = sum(len(c.new_token_ids) for c in out.outputs)
            if new and out.request_id not in first_token:
                first_token[out.request_id] = now - arrival[out.request_id]
            tokens += new
    return {"seconds": time.perf_counter() - start, "tokens": tokens,
            "mean_ttft": statistics.fmean(first_token.values())}


def run_transformers(model_dir: Path, work: list[tuple[list[int], int]], dtype: torch.dtype,
                     batch_size: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    pad = 0
    start = time.perf_counter()
    for b in range(0, len(work), batch_size):
        chunk = work[b : b + batch_size]
        width = max(len(p) for p, _ in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p, _ in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in chunk])
        config = GenerationConfig(max_new_tokens=max(m for _, m in chunk),
                                  do_sample=False, pad_token_id=pad, eos_token_id=None)
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return {"seconds": time.perf_counter() - start, "tokens": sum(m for _, m in work)}


def build_engine(model_dir: Path, dtype: str, prefix_caching: bool = True) -> LLMEngine:
    return LLMEngine.from_config(EngineConfig(model_path=str(model_dir), dtype=dtype, device="cpu",
                                              enable_prefix_caching=prefix_caching, kv_cache_memory_gb=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large", choices=["tiny", "small", "large"])
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--hf-batch-size", type=int, default=64, help="transformers generate() batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-requests", type=int, default=8, help="untimed requests each side runs first")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model_dir = write_demo_model(Path(tempfile.mkdtemp()) / "model", "llama", 0, args.size)
    vocab = 4000
    print(f"demo llama {args.size}, {args.dtype}, {torch.get_num_threads()} threads, {args.num_requests} requests")

    work = random_workload(args.num_requests, vocab, args.seed)
    # transformers first: building the engine tunes glibc malloc for the whole process (cpu_malloc.py),
    # and the baseline runs with the defaults a user of transformers would have
    # each side first runs a short workload of the same shape untimed (first-call costs: oneDNN kernel
    # creation per shape, allocator growth), so the figures are steady state for both
    warmup = random_workload(args.warmup_requests, vocab, args.seed + 100)
    dtype = getattr(torch, args.dtype)
    if warmup:
        run_transformers(model_dir, warmup, dtype, args.hf_batch_size)
    theirs = run_transformers(model_dir, work, dtype, args.hf_batch_size)
    engine = build_engine(model_dir, args.dtype)
    if warmup:
        run_engine(engine, warmup)
    ours = run_engine(engine, work)
    ours_tps, theirs_tps = ours["tokens"] / ours["seconds"], theirs["tokens"] / theirs["seconds"]
    print("(a) random 32-512 in / 16-256 out, greedy, ignore_eos")
    print(f"    fleetserve engine    {ours['tokens']:>7.0f} tokens in {ours['seconds']:7.1f} s = {ours_tps:8.1f} tok/s")
    print(f"    transformers generate {theirs['tokens']:>6.0f} tokens in {theirs['seconds']:7.1f} s = {theirs_tps:8.1f} tok/s")
    print(f"    ratio fleetserve / transformers: {ours_tps / theirs_tps:.2f}x  (target >= 3x)")

    rng = random.Random(args.seed + 1)
    prefix = [rng.randrange(vocab) for _ in range(1024)]
    shared = [(prefix + [rng.randrange(vocab) for _ in range(32)], 16) for _ in range(args.num_requests)]
    cached = run_engine(build_engine(model_dir, args.dtype, prefix_caching=True), shared)
    uncached = run_engine(build_engine(model_dir, args.dtype, prefix_caching=False), shared)
    print(f"(b) {args.num_requests} requests sharing a 1024-token prefix (+32 distinct), 16 out, all at once")
    print(f"    mean TTFT with prefix cache    {cached['mean_ttft'] * 1000:9.1f} ms")
    print(f"    mean TTFT without prefix cache {uncached['mean_ttft'] * 1000:9.1f} ms")
    print(f"    ratio without / with: {uncached['mean_ttft'] / cached['mean_ttft']:.2f}x  (target >= 5x)")


if __name__ == "__main__":
    main()
