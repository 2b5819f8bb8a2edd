"""Inter-token latency of decodes running beside a long prefill, measured on the engine itself.

    python -P benchmarks/itl_mixed.py [--size small] [--num-decodes 8] [--prefill-tokens 4096]
                                      [--chunked-prefill-size 2048] [--max-prefill-tokens-with-decodes N]

`--num-decodes` requests (32-token prompts) are decoding when one request with a `--prefill-tokens`
prompt arrives. The script steps the engine until that request has its first token and a few steps
more, and records when each decoding request received each token. It prints the decodes' inter-token
latency (p50, p99, max) over that window, the long request's time to first token and the number of
steps its prefill took, and the most tokens one of those steps carried (the step's size is what the
decodes in it wait for; unlike the times, it does not depend on what else runs on the machine).
Engine only (no HTTP): the demo model on CPU, warmed up first.

To compare with an older commit, run the same script against that tree, e.g.
``git worktree add /tmp/old <commit>`` and ``PYTHONPATH=<dir holding fleetserve/runtime -> /tmp/old/runtime>``
(the flag `--max-prefill-tokens-with-decodes` does not exist there; leave it out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from fleetserve.runtime.demo import write_demo_model
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams

SHORT_PROMPT = 32
TAIL_STEPS = 5  # steps measured after the long request's first token


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build(args: argparse.Namespace, model_dir: str) -> LLMEngine:
    kw = {}
    if args.max_prefill_tokens_with_decodes is not None:
        kw["max_prefill_tokens_with_decodes"] = args.max_prefill_tokens_with_decodes
    config = EngineConfig(model_path=model_dir, device="cpu", dtype=args.dtype, page_size=16,
                          max_num_batched_tokens=args.chunked_prefill_size,
                          context_length=args.prefill_tokens + 1024, num_pages=args.prefill_tokens // 16 + 1024, **kw)
    engine = LLMEngine.from_config(config)
    engine.warm_up()
    return engine


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        engine = build(args, str(write_demo_model(tmp, args.arch, 0, args.size)))
    vocab = engine.model_config.vocab_size
    params = SamplingParams(temperature=0, max_tokens=1000, ignore_eos=True)
    for i in range(args.num_decodes):
        engine.add_request(f"d{i}", [(31 * i + 7 * j) % (vocab - 1) + 1 for j in range(SHORT_PROMPT)], params)
    for _ in range(3):  # prompts computed, every decode running
        engine.step()
    token_times: dict[str, list[float]] = {f"d{i}": [] for i in range(args.num_decodes)}
    step_tokens: list[int] = []
    execute = engine.runner.execute

    def counting_execute(batch):
        step_tokens.append(sum(item.num_new_tokens for item in batch))
        return execute(batch)

    engine.runner.execute = counting_execute
    long_prompt = [(13 * j + 5) % (vocab - 1) + 1 for j in range(args.prefill_tokens)]
    arrival = time.perf_counter()
    engine.add_request("long", long_prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    first_token, steps, tail = None, 0, 0
    while tail < TAIL_STEPS:
        outputs = engine.step()
        now = time.perf_counter()
        steps += 1
        for out in outputs:
            if out.request_id == "long" and first_token is None and out.outputs[0].new_token_ids:
                first_token = now
            elif out.request_id in token_times and out.outputs[0].new_token_ids:
                token_times[out.request_id].append(now)
        if first_token is not None:
            tail += 1
    gaps = [b - a for times in token_times.values() for a, b in zip([arrival, *times], times, strict=False)]
    assert first_token is not None
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "steps": steps,
        "max_step_tokens": max(step_tokens),
        "long_ttft_ms": round((first_token - arrival) * 1000, 1),
        "decode_tokens": sum(len(t) for t in token_times.values()),
        "itl_p50_ms": round(statistics.median(gaps) * 1000, 1),
        "itl_p99_ms": round(percentile(gaps, 0.99) * 1000, 1),
        "itl_max_ms": round(max(gaps) * 1000, 1),
        "decodes_without_a_token": [rid for rid, t in token_times.items() if not t],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="llama")
    p.add_argument("--size", default="small", choices=["tiny", "small", "large"])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--num-decodes", type=int, default=8)
    p.add_argument("--prefill-tokens", type=int, default=4096)
    p.add_argument("--chunked-prefill-size", type=int, default=2048)
    p.add_argument("--max-prefill-tokens-with-decodes", type=int)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
