"""Multi-LoRA serving side by side: fleetserve vs vLLM's CPU build, the same adapters, the same client.

Both servers load the same demo checkpoint and the same 4 PEFT adapters at start (ranks 8/16/16/32 by
default, random non-zero A and B on all seven projections: the most LoRA work per token), and each is
driven by `fleetserve bench` twice per seed, alternating:

  base   the random workload (256 in / 64 out by default, `--ignore-eos`) on the base model;
  mixed  the same prompts spread evenly over the 4 adapters, each request naming its adapter as
         `model: ADAPTER` (`--lora-as-model`: vLLM's form, which fleetserve takes too).

So every request, prompt and output length is the same on both servers; only the server differs.
Both servers run at once (ports --port and --port + 1) and each seed's runs alternate between them
(vLLM base, fleetserve base, vLLM mixed, fleetserve mixed), so other work on the machine disturbs
both alike. Before each run the script waits until neither server uses CPU (vLLM's workers keep
working for a while after a run and would slow the next run down); the 1-minute load average at the start of each run is kept in the JSON.
Printed: output tok/s, p50 TTFT and mean TPOT of each (medians over the seeds, every seed's value),
mixed / base per server (the issue's target: >= 0.70) and fleetserve / vLLM per workload (target:
>= 1.0 on the mixed batch).

    bash benchmarks/setup_vllm.sh
    python -P benchmarks/compare_vllm_lora.py [--size large] [--dtype float32] [--repeats 3]

Servers listen on 127.0.0.1 only; every run is bounded (prompt counts, request and start-up
timeouts). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from compare_vllm import (  # noqa: E402  (benchmarks/ is not a package)
    SERVED_NAME,
    Server,
    Settings,
    add_run_args,
    fmt,
    ratio,
    run_fleetserve_bench,
    settings_from,
    start_server,
    stop_server,
    write_checkpoint,
)

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WORKLOADS = ("base", "mixed")
QUIET_IDLE_S = 2.0
QUIET_TIMEOUT_S = 120.0
FIGURES = (
    ("output tok/s", "output_throughput", True),
    ("p50 TTFT (ms)", "median_ttft_ms", False),
    ("mean TPOT (ms)", "mean_tpot_ms", False),
    ("load (1-min avg at start)", "load_avg_1m", None),
)


def make_adapters(checkpoint: Path, out: Path, ranks: list[int]) -> dict[str, Path]:
    """PEFT adapters for `checkpoint` (made with PEFT itself; written once, reused by later runs)."""
    from tests.runtime.lora.adapters import AdapterSpec, make_adapter

    adapters = {}
    for index, rank in enumerate(ranks):
        spec = AdapterSpec(f"lora{index}-r{rank}", rank, 2 * rank, ALL_TARGETS, seed=index)
        path = out / spec.name
        if not (path / "adapter_config.json").exists():
            make_adapter(checkpoint, path, spec, scale=0.1)
        adapters[spec.name] = path
    return adapters


def server_for(
    name: str, checkpoint: Path, adapters: dict[str, Path], args: argparse.Namespace, settings: Settings
) -> Server:
    common = ["--host", "127.0.0.1", "--port", str(settings.port), "--served-model-name", SERVED_NAME]
    max_rank = str(max(int(r) for r in args.ranks.split(",")))
    modules = [f"{n}={p}" for n, p in adapters.items()]
    if name == "vllm":
        command = [str(settings.vllm_bin), "serve", str(checkpoint), *common, "--dtype", args.dtype]
        command += ["--enforce-eager", "--max-model-len", "2048", "--disable-log-stats"]
        command += ["--enable-lora", "--max-loras", str(len(adapters)), "--max-lora-rank", max_rank]
        command += ["--lora-modules", *modules]
        return Server(name, command, {"VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gib)})
    command = [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", "--model-path", str(checkpoint)]
    command += [*common, "--dtype", args.dtype, "--kv-cache-memory-gb", str(settings.kv_cache_gib)]
    command += ["--enable-lora", "--max-loras-per-batch", str(len(adapters)), "--max-lora-rank", max_rank]
    command += ["--lora-paths", *modules]
    return Server(name, command, {})


def bench_args(workload: str, adapters: dict[str, Path], args: argparse.Namespace, seed: int) -> list[str]:
    """The same prompts for both workloads of a seed (same seed, same lengths); mixed adds the adapters."""
    common = ["--dataset", "random", "--random-input-len", str(args.prompt_len)]
    common += ["--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts)]
    common += ["--max-concurrency", str(args.concurrency), "--ignore-eos", "--seed", str(seed)]
    common += ["--warmup-requests", str(len(adapters))]  # one per adapter: vLLM loads them on first use
    if workload == "mixed":
        common += ["--lora-names", ",".join(adapters), "--lora-as-model"]
    return common


def measure(
    names: list[str],
    checkpoint: Path,
    adapters: dict[str, Path],
    args: argparse.Namespace,
    settings: Settings,
) -> dict[str, dict[str, list[dict]]]:
    """Serve with every server at once (each on a port of its own), then for each seed and workload run
    the servers one after the other, so that anything else on the machine disturbs both alike."""
    runs: dict[str, dict[str, list[dict]]] = {name: {w: [] for w in WORKLOADS} for name in names}
    processes, ports = {}, {}
    try:
        for offset, name in enumerate(names):
            own = replace(settings, port=settings.port + offset)
            try:
                processes[name] = start_server(
                    server_for(name, checkpoint, adapters, args, own),
                    settings.work_dir / f"lora-{args.size}-{name}.log",
                    own,
                )
                ports[name] = own
            except RuntimeError as error:
                print(f"!! {error}", file=sys.stderr)
        for seed in range(args.repeats):
            for workload in WORKLOADS:
                for name, own in ports.items():
                    waited = wait_quiet(processes)
                    print(
                        f"== {name} / {workload} / seed {seed} (waited {waited:.0f} s for quiet)", flush=True
                    )
                    output = settings.work_dir / f"lora-{args.size}-{name}-{workload}-seed{seed}.json"
                    output.unlink(missing_ok=True)
                    runs[name][workload].append(
                        run_fleetserve_bench(
                            bench_args(workload, adapters, args, seed), checkpoint, output, own
                        )
                    )
    finally:
        for process in processes.values():
            stop_server(process)
    return runs


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of every process in the process group `pgid`, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wait_quiet(
    processes: dict[str, subprocess.Popen], idle_s: float = QUIET_IDLE_S, timeout_s: float = QUIET_TIMEOUT_S
) -> float:
    """Waits until no server process used more than 5% of a core over `idle_s` (bounded by
    `timeout_s`): a server that goes on working after its run (vLLM does, for seconds) would otherwise
    slow the next server's run. Returns the seconds waited."""
    start = time.monotonic()
    before = sum(group_cpu_seconds(p.pid) for p in processes.values())
    while time.monotonic() - start < timeout_s:
        time.sleep(idle_s)
        now = sum(group_cpu_seconds(p.pid) for p in processes.values())
        if now - before < 0.05 * idle_s:
            break
        before = now
    return time.monotonic() - start


def median(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
    return statistics.median(values) if values else None


def report(measured: dict[str, dict[str, list[dict]]], args: argparse.Namespace) -> str:
    servers = list(measured)
    lines = [
        f"### {args.size} model ({args.dtype}), {args.num_prompts} × ({args.prompt_len} in + "
        f"{args.output_len} out), concurrency {args.concurrency}, {args.repeats} seeds",
        "",
    ]
    lines += [
        "| server | workload | " + " | ".join(label for label, _, _ in FIGURES) + " | failed |",
        "|---|---|" + "---:|" * (len(FIGURES) + 1),
    ]
    for server in servers:
        for workload in WORKLOADS:
            runs = measured[server][workload]
            cells = []
            for _, key, _ in FIGURES:
                each = ", ".join(fmt(run.get(key)) for run in runs)
                cells.append(f"{fmt(median(runs, key))} ({each})")
            failed = sum(int(run.get("failed", 0)) for run in runs)
            lines.append(f"| {server} | {workload} | " + " | ".join(cells) + f" | {failed} |")
    lines += ["", "Medians, then each seed's value. Ratios of the medians:", ""]
    for server in servers:
        base = median(measured[server]["base"], "output_throughput")
        mixed = median(measured[server]["mixed"], "output_throughput")
        per_seed = ", ".join(
            ratio(m.get("output_throughput"), b.get("output_throughput"))
            for m, b in zip(measured[server]["mixed"], measured[server]["base"], strict=False)
        )
        lines.append(f"- {server}: mixed / base output tok/s = {ratio(mixed, base)} (per seed: {per_seed})")
    if {"fleetserve", "vllm"} <= set(servers):
        for workload in WORKLOADS:
            fleet, vllm = measured["fleetserve"][workload], measured["vllm"][workload]
            parts = [
                f"{label} {ratio(median(fleet, key), median(vllm, key))}"
                for label, key, better in FIGURES
                if better is not None
            ]
            lines.append(f"- {workload}: fleetserve / vLLM: " + ", ".join(parts))
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, port=30998)
    p.add_argument("--size", default="large", help="demo-model size (llama)")
    p.add_argument(
        "--dtype",
        default="float32",
        help="both servers' dtype (float32: CPUs without AVX-512 BF16 only emulate bfloat16)",
    )
    p.add_argument("--ranks", default="8,16,16,32")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=64)
    args = p.parse_args(argv)
    args.repeats = max(1, args.repeats)
    return args, settings_from(args, [args.size], cross_check=False)


def main(argv: list[str]) -> int:
    args, settings = parse_args(argv)
    if "vllm" in settings.servers and not settings.vllm_bin.exists():
        print(f"no vLLM at {settings.vllm_bin}: run benchmarks/setup_vllm.sh first", file=sys.stderr)
        return 2
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = write_checkpoint(args.size, settings)
    adapters = make_adapters(
        checkpoint, settings.work_dir / f"adapters-{args.size}", [int(r) for r in args.ranks.split(",")]
    )
    measured = measure(settings.servers, checkpoint, adapters, args, settings)
    text = report(measured, args)
    print(text)
    (settings.work_dir / f"lora-{args.size}.md").write_text(text + "\n")
    (settings.work_dir / f"lora-{args.size}.json").write_text(json.dumps(measured, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
