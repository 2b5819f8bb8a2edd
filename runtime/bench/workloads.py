"""Benchmark workloads: which prompts to send, how many tokens each must produce, through which adapter.

Pure: everything is derived from the tokenizer, the spec and a seeded generator, so one seed gives one
workload. Prompt lengths count tokens without special tokens (the server may add a BOS).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from fleetserve.runtime.bench.prompts import PromptBuilder
from fleetserve.runtime.bench.tokenizer import TokenizerLike, count_tokens


@dataclass(slots=True)
class BenchRequest:
    prompt: str
    prompt_len: int
    output_len: int  # max_tokens sent; exact only with --ignore-eos
    adapter: str | None = None  # LoRA adapter; sent as model "base:adapter"


@dataclass(slots=True)
class RandomSpec:
    num_prompts: int
    input_len: int
    output_len: int
    range_ratio: float = 0.0  # lengths drawn uniformly from [len*(1-r), len*(1+r)]


@dataclass(slots=True)
class SharedPrefixSpec:
    num_groups: int
    prompts_per_group: int
    system_prompt_len: int  # tokens of the prefix every prompt in a group shares
    question_len: int  # tokens after it, different in every prompt
    output_len: int


def length_range(mean: int, range_ratio: float) -> tuple[int, int]:
    """Inclusive [low, high] around `mean`; never below one token."""
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"range ratio must be in [0, 1), got {range_ratio}")
    low = max(1, math.floor(mean * (1.0 - range_ratio)))
    high = max(low, math.ceil(mean * (1.0 + range_ratio)))
    return low, high


def draw_lengths(rng: np.random.Generator, mean: int, range_ratio: float, count: int) -> list[int]:
    low, high = length_range(mean, range_ratio)
    return [int(n) for n in rng.integers(low, high + 1, size=count)]


def random_workload(builder: PromptBuilder, spec: RandomSpec) -> list[BenchRequest]:
    input_lens = draw_lengths(builder.rng, spec.input_len, spec.range_ratio, spec.num_prompts)
    output_lens = draw_lengths(builder.rng, spec.output_len, spec.range_ratio, spec.num_prompts)
    requests = []
    for input_len, output_len in zip(input_lens, output_lens, strict=True):
        prompt = builder.build(input_len)
        requests.append(BenchRequest(prompt.text, prompt.num_tokens, output_len))
    return requests


def shared_prefix_workload(builder: PromptBuilder, spec: SharedPrefixSpec) -> list[BenchRequest]:
    """`num_groups` system prompts, each followed by `prompts_per_group` different questions; sent in a
    seeded shuffled order, so groups interleave as they would in real traffic."""
    requests = []
    for _ in range(spec.num_groups):
        system = builder.build(spec.system_prompt_len)
        for _ in range(spec.prompts_per_group):
            prompt = builder.build(spec.question_len, prefix=system)
            requests.append(BenchRequest(prompt.text, prompt.num_tokens, spec.output_len))
    order = builder.rng.permutation(len(requests))
    return [requests[i] for i in order]


def parse_prompt_file(text: str) -> list[dict]:
    """A JSON list or JSONL lines; each entry a string or an object with "prompt" and optionally
    "output_len" (or "max_tokens")."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        entries = json.loads(stripped)
    else:
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    parsed = []
    for number, entry in enumerate(entries, start=1):
        item = {"prompt": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ValueError(f"entry {number}: expected a string or an object with a string 'prompt'")
        parsed.append(item)
    return parsed


def file_workload(
    entries: list[dict], tokenizer: TokenizerLike, default_output_len: int, num_prompts: int | None
) -> list[BenchRequest]:
    """The file's prompts in order; `num_prompts` takes the first ones, cycling if the file is shorter."""
    if not entries:
        raise ValueError("the prompt file holds no prompts")
    count = len(entries) if num_prompts is None else num_prompts
    requests = []
    for index in range(count):
        entry = entries[index % len(entries)]
        output_len = int(entry.get("output_len", entry.get("max_tokens", default_output_len)))
        prompt = entry["prompt"]
        requests.append(BenchRequest(prompt, count_tokens(tokenizer, prompt), output_len))
    return requests


def assign_adapters(requests: list[BenchRequest], adapters: list[str], rng: np.random.Generator) -> None:
    """Spread requests evenly over `adapters` (counts differ by at most one), in a seeded order."""
    if not adapters:
        return
    labels = [adapters[i % len(adapters)] for i in range(len(requests))]
    for request, index in zip(requests, rng.permutation(len(requests)), strict=True):
        request.adapter = labels[index]
