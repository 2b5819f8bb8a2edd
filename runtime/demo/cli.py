"""`fleetserve demo-model DIR`: write the built-in demo model as a Hugging Face checkpoint."""

from __future__ import annotations

import argparse
import json

from fleetserve.runtime.demo.checkpoint import write_demo_model
from fleetserve.runtime.demo.spec import ARCHS, SIZES
from fleetserve.runtime.demo.weights import count_parameters


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetserve demo-model",
        description="Write a deterministic random-weight model with a real BPE tokenizer and chat template.",
    )
    parser.add_argument("dir", help="output directory (created if missing; existing files are overwritten)")
    parser.add_argument("--arch", choices=ARCHS, default="llama", help="model family (default: llama)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--size", choices=SIZES, default="tiny", help="model size (default: tiny)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    directory = write_demo_model(args.dir, arch=args.arch, seed=args.seed, size=args.size)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    num_params = count_parameters(args.arch, args.size, config["vocab_size"])
    print(
        f"wrote {config['architectures'][0]} ({args.arch}, size {args.size}, seed {args.seed}, "
        f"{num_params:,} parameters, vocab {config['vocab_size']}) to {directory}"
    )
    for path in sorted(directory.iterdir()):
        print(f"  {path.name:<24} {path.stat().st_size:>12,} bytes")
    return 0
