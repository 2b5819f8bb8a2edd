"""LoRA throughput: one batch mixing 4 adapters against the same batch on the base model alone.

Same engine, same requests (random prompts, greedy, ignore_eos, all submitted at once), run
alternately base / mixed for `--repeats` rounds; output tokens per second of each round and the
median ratio mixed / base. The adapters are made with PEFT (random non-zero weights) for the demo
checkpoint: ranks 8/16/16/32 by default, targeting every projection (the most LoRA work per token).
The target is mixed >= 70% of base.

    python -P benchmarks/lora_throughput.py [--size large] [--dtype bfloat16] [--num-requests 32]

Prints the median and the best round of each (the best is the least disturbed by other work on the
machine); asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fleetserve.runtime.demo import write_demo_model
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_adapters(base: Path, out: Path, ranks: list[int]) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.runtime.lora.adapters import AdapterSpec, make_adapter

    specs = [AdapterSpec(f"lora{i}-r{r}", r, 2 * r, ALL_TARGETS, seed=i) for i, r in enumerate(ranks)]
    return {s.name: make_adapter(base, out / s.name, s, scale=0.1) for s in specs}


def run(engine: LLMEngine, work: list[tuple[list[int], int]], adapters: list[str | None]) -> dict[str, float]:
    start = time.perf_counter()
    for i, (prompt, max_tokens) in enumerate(work):
        engine.add_request(f"{i}", prompt, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True),
                           lora_name=adapters[i % len(adapters)])
    tokens = 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens += sum(len(c.new_token_ids) for c in out.outputs)
    seconds = time.perf_counter() - start
    engine.reset_prefix_cache()
    return {"seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="llama")
    p.add_argument("--size", default="large")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--num-requests", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--ranks", default="8,16,16,32")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    base = write_demo_model(tmp / "model", args.arch, 0, args.size)
    ranks = [int(r) for r in args.ranks.split(",")]
    adapters = make_adapters(base, tmp, ranks)
    print(f"made {len(adapters)} PEFT adapters in {tmp}", flush=True)
    engine = LLMEngine.from_config(EngineConfig(
        model_path=str(base), dtype=args.dtype, device="cpu", enable_lora=True,
        lora_paths={n: str(p) for n, p in adapters.items()}, max_loras_per_batch=len(adapters)))
    rng = random.Random(0)
    vocab = engine.model_config.vocab_size
    work = [([rng.randrange(vocab) for _ in range(args.prompt_len)], args.output_len) for _ in range(args.num_requests)]
    run(engine, work[:4], [None])  # warm the shapes
    run(engine, work[:4], list(adapters))
    print("engine built and warm", flush=True)
    rounds: dict[str, list[float]] = {"base": [], "mixed": []}
    for r in range(args.repeats):
        for label, names in (("base", [None]), ("mixed", list(adapters))):
            result = run(engine, work, names)
            rounds[label].append(result["tok_s"])
            print(f"round {r} {label:5s}: {result['tokens']} tokens in {result['seconds']:.2f} s = "
                  f"{result['tok_s']:.1f} output tok/s", flush=True)
    print(f"\n{args.arch}-{args.size} {args.dtype}, {args.num_requests} requests x ({args.prompt_len} prompt + "
          f"{args.output_len} output) tokens, adapters ranks {ranks} on all 7 projections")
    # the best round is the one least disturbed by other work on the machine; the median is also shown
    for label, pick in (("median", statistics.median), ("best", max)):
        base_tps, mixed_tps = pick(rounds["base"]), pick(rounds["mixed"])
        print(f"{label:6s} of {args.repeats}: base {base_tps:.1f} output tok/s, mixed {len(adapters)} adapters "
              f"{mixed_tps:.1f} output tok/s, mixed / base {mixed_tps / base_tps:.2f} (target >= 0.70)")


if __name__ == "__main__":
    main()
