"""The LoRA op alone: the packed and the segment form against the base projection, by step size.

For each projection of the large llama demo model (qkv 768 -> 1280 fusing 3 targets, o 768 -> 768,
gate_up 768 -> 4096 fusing 2, down 2048 -> 768) and each number of tokens in a step, the tokens are
split evenly over `--ranks` adapters (contiguous segments, as the model runner lays them out), and
the script times (the packed form's per-step scales built once, as the engine builds them once
per step for every layer), with the engine's own functions (`runtime/engine/lora/ops.py`):

  base      y = x W^T (torch.nn.functional.linear), the projection LoRA is added to
  packed    add_lora_packed: 3 ops whatever the number of adapters, every token against all of them
  segments  add_lora: per adapter, one shrink and one expand over its own segment

and prints microseconds per call (median of `--repeats` timed batches) and each form's cost as a
fraction of the base projection's. `auto` is what the engine picks for that step (manager.py).

    python -P benchmarks/lora_op.py [--threads 2] [--dtype float32] [--tokens 1,4,16,64,256,1024]

Asserts nothing; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fleetserve.runtime.engine.lora.ops import (
    add_lora,
    add_lora_packed,
    build_lora_batch,
    packed_scales,
    prefer_packed,
    segment_runs,
)

PROJECTIONS = (  # name, in, out sizes of the fused targets
    ("qkv", 768, (768, 256, 256)),
    ("o", 768, (768,)),
    ("gate_up", 768, (2048, 2048)),
    ("down", 2048, (768,)),
)


def time_us(fn, repeats: int, inner: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner * 1e6)
    return statistics.median(samples)


def case(in_f: int, out_sizes: tuple[int, ...], ranks: list[int], tokens: int, dtype: torch.dtype,
         repeats: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    out_f, targets, slots = sum(out_sizes), len(out_sizes), len(ranks)
    rows = targets * max(ranks)
    weight = torch.randn(out_f, in_f, generator=gen).to(dtype)
    a = torch.randn(slots, rows, in_f, generator=gen).to(dtype) * 0.01
    bt = torch.randn(slots, rows, out_f, generator=gen).to(dtype) * 0.01
    widths = [targets * r for r in ranks]
    scalings = [2.0] * slots
    a_packed = torch.cat([a[s, : widths[s]] for s in range(slots)])
    bt_packed = torch.cat([bt[s, : widths[s]] for s in range(slots)])
    columns, start = [], 0
    for w in widths:
        columns.append((start, start + w))
        start += w
    per = [tokens // slots + (1 if s < tokens % slots else 0) for s in range(slots)]
    segments = [(n, s) for s, n in enumerate(per)]
    batch = build_lora_batch(segments, torch.device("cpu"))
    runs = segment_runs(segments)
    x = torch.randn(tokens, in_f, generator=gen).to(dtype)
    y = F.linear(x, weight)
    inner = max(1, 2000 // max(1, tokens))

    scales = packed_scales(runs, tokens, columns, scalings, start, dtype, x.device)  # once per step, not timed
    return {
        "base": time_us(lambda: F.linear(x, weight), repeats, inner),
        "packed": time_us(lambda: add_lora_packed(y, x, a_packed, bt_packed, scales), repeats, inner),
        "segments": time_us(lambda: add_lora(y, x, a, bt, widths, scalings, batch), repeats, inner),
        "auto_packed": prefer_packed(tokens, len(runs)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dtype", default="float32")
    p.add_argument("--ranks", default="8,16,16,32", help="one adapter per rank, every target")
    p.add_argument("--tokens", default="1,4,16,64,256,1024")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"threads {args.threads}, {args.dtype}, adapters of ranks {ranks} on every target")
    print("| projection | tokens | base µs | packed µs | segments µs | packed / base | segments / base | auto |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    with torch.inference_mode():
        for name, in_f, out_sizes in PROJECTIONS:
            for tokens in [int(t) for t in args.tokens.split(",")]:
                if tokens < len(ranks):
                    continue
                r = case(in_f, out_sizes, ranks, tokens, dtype, args.repeats)
                auto = "packed" if r["auto_packed"] else "segments"
                print(f"| {name} | {tokens} | {r['base']:.1f} | {r['packed']:.1f} | {r['segments']:.1f} | "
                      f"{r['packed'] / r['base']:.2f} | {r['segments'] / r['base']:.2f} | {auto} |", flush=True)


if __name__ == "__main__":
    main()
