"""`fleetserve bench`: the command line. Parses options, builds the workload, runs it, reports."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from pathlib import Path

import httpx
import numpy as np

from fleetserve.runtime.bench.client import EndpointConfig
from fleetserve.runtime.bench.metrics import summarize
from fleetserve.runtime.bench.prompts import PromptBuilder, PromptLengthError
from fleetserve.runtime.bench.report import build_result_json, format_table
from fleetserve.runtime.bench.runner import LoadShape, resolve_output_tokens, run_requests, run_warmup
from fleetserve.runtime.bench.tokenizer import TokenizerLike, load_tokenizer, sampleable_token_ids
from fleetserve.runtime.bench.workloads import (
    BenchRequest,
    RandomSpec,
    SharedPrefixSpec,
    assign_adapters,
    file_workload,
    parse_prompt_file,
    random_workload,
    shared_prefix_workload,
)
from fleetserve.runtime.wire import DEFAULT_PORT

# Independent random streams derived from --seed, so e.g. the request rate never changes the prompts.
STREAM_ADAPTERS, STREAM_ARRIVALS, STREAM_WARMUP = 1, 2, 3
WARMUP_MAX_OUTPUT_LEN = 16
MODELS_TIMEOUT_S = 30.0
DESCRIPTION = (
    "Benchmark an OpenAI-compatible server (fleetserve, vLLM, SGLang) with streaming requests: time to first "
    "token, inter-token latency, time per output token, end-to-end latency, throughput and failures. "
    "See docs/benchmarks.md."
)


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--dataset", choices=["random", "shared-prefix", "file"], default="random")
    group.add_argument(
        "--dataset-path", help="JSON list or JSONL of prompts (strings or {prompt, output_len})"
    )
    group.add_argument(
        "--num-prompts", type=int, help="requests to send (default 100; shared-prefix: groups × per group)"
    )
    group.add_argument("--random-input-len", type=int, default=1024)
    group.add_argument("--random-output-len", type=int, default=128)
    group.add_argument(
        "--random-range-ratio", type=float, default=0.0, help="lengths uniform in len·[1-r, 1+r]"
    )
    group.add_argument("--sp-num-groups", type=int, default=4, help="shared-prefix: distinct system prompts")
    group.add_argument("--sp-prompts-per-group", type=int, default=8)
    group.add_argument("--sp-system-prompt-len", type=int, default=512, help="tokens of each shared prefix")
    group.add_argument("--sp-question-len", type=int, default=64, help="tokens after the prefix")
    group.add_argument("--sp-output-len", type=int, default=64)
    group.add_argument(
        "--output-len", type=int, default=128, help="file prompts without their own output_len"
    )
    group.add_argument(
        "--lora-names", help="comma-separated adapters; requests spread evenly, sent as model base:adapter"
    )
    group.add_argument(
        "--lora-as-model",
        action="store_true",
        help="send an adapter as model: ADAPTER (vLLM's form, which fleetserve also takes), not base:adapter",
    )
    group.add_argument("--seed", type=int, default=0)


def add_load_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load")
    group.add_argument(
        "--request-rate", type=float, default=math.inf, help="requests/s, Poisson; inf: all at once"
    )
    group.add_argument("--max-concurrency", type=int, help="requests in flight at most")
    group.add_argument("--warmup-requests", type=int, default=1, help="untimed requests sent first")
    group.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        help="seconds a request may wait for any byte (connecting, its first token, its next chunk)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetserve bench", description=DESCRIPTION)
    parser.add_argument("--base-url", help=f"server URL (default http://HOST:PORT, port {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--endpoint", choices=["/v1/completions", "/v1/chat/completions"], default="/v1/completions"
    )
    parser.add_argument("--model", help="model name to send (default: the server's first /v1/models entry)")
    parser.add_argument("--tokenizer", help="tokenizer path or hub id (default: --model)")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default $OPENAI_API_KEY")
    parser.add_argument(
        "--ignore-eos", action="store_true", help="generate exactly max_tokens (server extension)"
    )
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument(
        "--extra-body", type=json.loads, default={}, help="JSON merged into every request body"
    )
    add_workload_args(parser)
    add_load_args(parser)
    parser.add_argument("--output", type=Path, help="write the result JSON here")
    parser.add_argument("--label", default="", help="a name for this run in the table and the JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = [
        "random_input_len",
        "random_output_len",
        "sp_num_groups",
        "sp_prompts_per_group",
        "sp_output_len",
    ]
    positive += ["output_len"] + [
        n for n in ("num_prompts", "max_concurrency") if getattr(args, n) is not None
    ]
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup_requests < 0 or args.sp_system_prompt_len < 0 or args.sp_question_len < 0:
        parser.error("--warmup-requests, --sp-system-prompt-len and --sp-question-len must be >= 0")
    if not 0.0 <= args.random_range_ratio < 1.0:
        parser.error("--random-range-ratio must be in [0, 1)")
    if args.dataset == "file" and not args.dataset_path:
        parser.error("--dataset file needs --dataset-path")
    num_sp = args.sp_num_groups * args.sp_prompts_per_group
    if args.dataset == "shared-prefix" and args.num_prompts not in (None, num_sp):
        parser.error(f"shared-prefix sends groups × prompts per group = {num_sp} prompts; drop --num-prompts")


def resolve_model(base_url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=MODELS_TIMEOUT_S)
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def build_workload(args: argparse.Namespace, tokenizer: TokenizerLike) -> list[BenchRequest]:
    if args.dataset == "file":
        entries = parse_prompt_file(Path(args.dataset_path).read_text(encoding="utf-8"))
        requests = file_workload(entries, tokenizer, args.output_len, args.num_prompts)
    else:
        builder = PromptBuilder(tokenizer, sampleable_token_ids(tokenizer), np.random.default_rng(args.seed))
        if args.dataset == "random":
            spec = RandomSpec(
                args.num_prompts or 100,
                args.random_input_len,
                args.random_output_len,
                args.random_range_ratio,
            )
            requests = random_workload(builder, spec)
        else:
            spec = SharedPrefixSpec(
                args.sp_num_groups,
                args.sp_prompts_per_group,
                args.sp_system_prompt_len,
                args.sp_question_len,
                args.sp_output_len,
            )
            requests = shared_prefix_workload(builder, spec)
    adapters = [name.strip() for name in (args.lora_names or "").split(",") if name.strip()]
    assign_adapters(requests, adapters, np.random.default_rng([args.seed, STREAM_ADAPTERS]))
    return requests


def build_warmup(
    args: argparse.Namespace, tokenizer: TokenizerLike, workload: list[BenchRequest]
) -> list[BenchRequest]:
    """Random prompts as long as the workload's first, short outputs; fresh text, so warm-up never fills
    the prefix cache with the measured prompts. The requests cycle through the workload's adapters in
    order of first use, so `--warmup-requests` at least their number warms every adapter (a server that
    loads adapters lazily pays for that before the clock starts)."""
    if args.warmup_requests == 0 or not workload:
        return []
    rng = np.random.default_rng([args.seed, STREAM_WARMUP])
    builder = PromptBuilder(tokenizer, sampleable_token_ids(tokenizer), rng)
    adapters = list(dict.fromkeys(request.adapter for request in workload))
    warmup = []
    for index in range(args.warmup_requests):
        model = workload[index % len(workload)]
        prompt = builder.build(model.prompt_len)
        output_len = min(model.output_len, WARMUP_MAX_OUTPUT_LEN)
        warmup.append(
            BenchRequest(prompt.text, prompt.num_tokens, output_len, adapters[index % len(adapters)])
        )
    return warmup


def run_config(args: argparse.Namespace, base_url: str, model: str, num_requests: int) -> dict[str, object]:
    """The settings recorded in the JSON (the API key left out)."""
    config = {k: v for k, v in vars(args).items() if k not in ("api_key", "output")}
    config.update(
        base_url=base_url, model=model, num_requests=num_requests, request_rate=str(args.request_rate)
    )
    return config


def table_settings(args: argparse.Namespace, base_url: str, model: str) -> dict[str, object]:
    return {
        "Server": base_url + args.endpoint,
        "Model": model,
        "Dataset": args.dataset,
        "Request rate (req/s)": args.request_rate,
        "Max concurrency": args.max_concurrency or "unlimited",
        "Ignore EOS": args.ignore_eos,
    }


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    model = args.model or resolve_model(base_url, args.api_key)
    tokenizer = load_tokenizer(args.tokenizer or model, args.trust_remote_code)
    try:
        workload = build_workload(args, tokenizer)
    except PromptLengthError as exc:
        print(f"fleetserve bench: cannot build the workload with this tokenizer: {exc}", file=sys.stderr)
        return 2
    config = EndpointConfig(
        base_url,
        args.endpoint,
        model,
        args.api_key,
        args.ignore_eos,
        args.temperature,
        args.extra_body,
        args.lora_as_model,
    )
    shape = LoadShape(args.request_rate, args.max_concurrency, args.request_timeout, not args.no_progress)
    warmup_errors = asyncio.run(run_warmup(config, build_warmup(args, tokenizer, workload), shape))
    if warmup_errors:
        print(f"fleetserve bench: warm-up failed: {warmup_errors[0]}", file=sys.stderr)
        return 1
    outcome = asyncio.run(
        run_requests(config, workload, shape, np.random.default_rng([args.seed, STREAM_ARRIVALS]))
    )
    resolve_output_tokens(outcome.results, tokenizer)
    summary = summarize(outcome.results, outcome.duration_s)
    print(
        format_table(summary, f"fleetserve bench {args.label}".strip(), table_settings(args, base_url, model))
    )
    if args.output is not None:
        document = build_result_json(
            summary, run_config(args, base_url, model, len(workload)), outcome.results
        )
        args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0 if summary.num_completed > 0 else 1
