"""Structured-output overhead, side by side on the same engine.

(a) throughput: a batch of N JSON-schema requests (bounded schemas, greedy, each with its own random
    prompt) against the same batch unconstrained. Each unconstrained twin runs with ignore_eos and
    max_tokens set to the number of tokens its constrained twin produced, so both runs decode exactly
    the same number of tokens for the same prompts. Runs alternate; the median of --repeats is the
    figure, the best run is printed too (the machine may be shared).
(b) grammar compilation of a large schema (--num-properties objects of five bounded fields each):
    building xgrammar's tokenizer info, a cold compile, and a cached lookup.

    python benchmarks/structured_output.py [--size tiny] [--num-requests 32] [--repeats 3]

Prints figures and the constrained / unconstrained ratio (target >= 80%); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fleetserve.runtime.demo import write_demo_model
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.grammar_compiler import GrammarCompilerCache, GrammarSpec
from fleetserve.runtime.engine.types import SamplingParams

MAX_TOKENS = 256


def schemas(variants: int) -> list[str]:
    """Bounded schemas that differ per variant (so the batch holds different grammars)."""
    out = []
    for v in range(variants):
        out.append(json.dumps({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 16 + v},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "email": {"type": "string", "pattern": "^[a-z]{1,10}@[a-z]{1,10}\\.(com|org)$"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3},
                "address": {"type": "object", "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["city", "zip"]},
                "status": {"enum": ["active", "inactive", f"variant-{v}"]},
            },
            "required": ["name", "age", "email", "tags", "address", "status"],
        }))
    return out


def large_schema(num_properties: int) -> str:
    field = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["x", "y", "z"]}, "maxItems": 4},
            "score": {"type": "integer", "minimum": 0, "maximum": 1000},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        },
        "required": ["name", "score"],
    }
    props = {f"field_{i}": field for i in range(num_properties)}
    return json.dumps({"type": "object", "properties": props, "required": list(props)[: num_properties // 2]})


def run_batch(engine: LLMEngine, batch: list[tuple[list[int], SamplingParams]]) -> tuple[float, list[int]]:
    """Submits everything at once; returns the wall time and each request's number of output tokens."""
    start = time.perf_counter()
    for i, (prompt, params) in enumerate(batch):
        engine.add_request(str(i), prompt, params)
    counts = [0] * len(batch)
    while engine.has_unfinished_requests():
        for out in engine.step():
            counts[int(out.request_id)] += sum(len(c.new_token_ids) for c in out.outputs)
    return time.perf_counter() - start, counts


def throughput(engine: LLMEngine, num_requests: int, repeats: int, seed: int) -> None:
    rng = random.Random(seed)
    vocab = len(engine.tokenizer) - 8  # clear of the special tokens at the end
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(32, 128))] for _ in range(num_requests)]
    variants = schemas(4)
    constrained = [(p, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, json_schema=variants[i % len(variants)]))
                   for i, p in enumerate(prompts)]
    for spec in {GrammarSpec("json_schema", s) for s in variants}:
        engine.grammars.compile(spec)  # (b) measures compilation; (a) measures decoding
    _, counts = run_batch(engine, constrained)  # warm-up, and the token counts to match
    free = [(p, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)) for p, n in zip(prompts, counts, strict=True)]
    run_batch(engine, free)
    timings: dict[str, list[float]] = {"json_schema": [], "unconstrained": []}
    for _ in range(repeats):
        for name, batch in (("json_schema", constrained), ("unconstrained", free)):
            engine.reset_prefix_cache()
            seconds, got = run_batch(engine, batch)
            if got != counts:  # the comparison would be meaningless
                raise RuntimeError(f"the {name} run decoded {sum(got)} tokens, not {sum(counts)}")
            timings[name].append(seconds)
    tokens = sum(counts)
    print(f"(a) {num_requests} requests, greedy, {tokens} output tokens per run "
          f"(mean {tokens / num_requests:.0f}, max {max(counts)}), median of {repeats}")
    rates, best = {}, {}
    for name, seconds in timings.items():
        median = statistics.median(seconds)
        rates[name], best[name] = tokens / median, tokens / min(seconds)
        print(f"    {name:<14} {median:7.2f} s = {rates[name]:8.1f} output tok/s   (best {best[name]:8.1f}; runs: "
              + ", ".join(f"{s:.2f}" for s in seconds) + ")")
    print(f"    ratio json_schema / unconstrained: {rates['json_schema'] / rates['unconstrained']:.1%} "
          f"(best runs: {best['json_schema'] / best['unconstrained']:.1%})  (target >= 80%)")


def compile_times(engine: LLMEngine, num_properties: int) -> None:
    schema = large_schema(num_properties)
    cache = GrammarCompilerCache(engine.tokenizer, engine.model_config.vocab_size, engine.model_config.eos_token_ids)
    start = time.perf_counter()
    cache.compile(GrammarSpec("regex", "a"))  # builds the tokenizer info and the compiler
    setup = time.perf_counter() - start
    spec = GrammarSpec("json_schema", schema)
    start = time.perf_counter()
    cache.compile(spec)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    cache.compile(GrammarSpec("json_schema", schema))
    cached = time.perf_counter() - start
    cache.shutdown()
    print(f"(b) large schema: {num_properties} object properties, {len(schema)} characters of JSON")
    print(f"    tokenizer info + compiler (once per engine) {setup * 1000:9.2f} ms")
    print(f"    cold compile                                {cold * 1000:9.2f} ms")
    print(f"    cached                                      {cached * 1000:9.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=["tiny", "small", "large"])
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-properties", type=int, default=100)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model_dir = write_demo_model(Path(tempfile.mkdtemp()) / "model", "llama", 0, args.size)
    engine = LLMEngine.from_config(EngineConfig(model_path=str(model_dir), dtype=args.dtype, device=args.device,
                                                kv_cache_memory_gb=2))
    print(f"demo llama {args.size}, {args.dtype} on {args.device}, {torch.get_num_threads()} threads, "
          f"vocab {engine.model_config.vocab_size}")
    throughput(engine, args.num_requests, args.repeats, args.seed)
    compile_times(engine, args.num_properties)


if __name__ == "__main__":
    main()
