"""Side-by-side serving comparison: fleetserve vs vLLM's CPU build, on the same demo checkpoint.

For each checkpoint size it serves the model with vLLM (from benchmarks/.venv-vllm, made by
setup_vllm.sh), drives it with `fleetserve bench`, stops it, then does the same with `fleetserve serve`,
and prints every figure with the fleetserve/vLLM ratio. Servers listen on 127.0.0.1 only; every run is
bounded (prompt counts, request timeout, server start-up timeout).

Workloads (both with --ignore-eos, concurrency 16 by default):
  random         256 input / 64 output tokens
  shared-prefix  4 groups, 512-token system prompt + 64-token question, 64 output tokens

With --cross-check, the random workload is also run with `vllm bench serve` against each server,
alternating with `fleetserve bench` (fleetserve, vllm, fleetserve, vllm), to show how the two tools agree
next to their run-to-run noise.

    bash benchmarks/setup_vllm.sh
    python benchmarks/compare_vllm.py --sizes large,tiny --num-prompts 32 --cross-check

Each workload runs --repeats times (default 3, seeds 0, 1, 2: other prompts and system prompts each
time) on each server; the tables give the medians and each seed's ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx

HERE = Path(__file__).resolve().parent
SERVED_NAME = "demo"
READY_POLL_S = 2.0
STOP_GRACE_S = 30.0
LOG_TAIL_CHARS = 3000

# (label, JSON key, higher is better; None: context, no ratio)
FIGURES = [
    ("completed requests", "completed", True),
    ("failed requests", "failed", False),
    ("request throughput (req/s)", "request_throughput", True),
    ("output throughput (tok/s)", "output_throughput", True),
    ("total throughput (tok/s)", "total_token_throughput", True),
    ("mean TTFT (ms)", "mean_ttft_ms", False),
    ("p50 TTFT (ms)", "median_ttft_ms", False),
    ("p99 TTFT (ms)", "p99_ttft_ms", False),
    ("mean TPOT (ms)", "mean_tpot_ms", False),
    ("p99 TPOT (ms)", "p99_tpot_ms", False),
    ("mean ITL (ms)", "mean_itl_ms", False),
    ("p99 ITL (ms)", "p99_itl_ms", False),
    ("mean E2EL (ms)", "mean_e2el_ms", False),
    ("p99 E2EL (ms)", "p99_e2el_ms", False),
    ("machine load (1-min average, at start)", "load_avg_1m", None),
]


@dataclass(slots=True)
class Settings:
    work_dir: Path
    vllm_bin: Path
    sizes: list[str]
    num_prompts: int
    concurrency: int
    kv_cache_gib: int
    port: int
    startup_timeout_s: float
    request_timeout_s: float
    cross_check: bool
    servers: list[str]
    repeats: int


class Server(NamedTuple):
    name: str
    command: list[str]
    env: dict[str, str]


def server_for(name: str, checkpoint: Path, settings: Settings) -> Server:
    common = ["--host", "127.0.0.1", "--port", str(settings.port), "--served-model-name", SERVED_NAME]
    if name == "vllm":
        command = [str(settings.vllm_bin), "serve", str(checkpoint), *common, "--dtype", "bfloat16"]
        command += ["--enforce-eager", "--max-model-len", "2048", "--disable-log-stats"]
        return Server(name, command, {"VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gib)})
    command = [
        sys.executable,
        "-P",
        "-m",
        "fleetserve.runtime.cli",
        "serve",
        "--model-path",
        str(checkpoint),
        *common,
    ]
    command += ["--dtype", "bfloat16", "--kv-cache-memory-gb", str(settings.kv_cache_gib)]
    return Server(name, command, {})


def bench_workloads(settings: Settings, seed: int = 0) -> dict[str, list[str]]:
    """`fleetserve bench` arguments for each workload (besides server, model and output). Each seed is
    another set of prompts (other system prompts too), so a repeat never hits the previous one's cache."""
    per_group = max(1, settings.num_prompts // 4)
    load = [
        "--max-concurrency",
        str(settings.concurrency),
        "--ignore-eos",
        "--seed",
        str(seed),
        "--warmup-requests",
        "2",
    ]
    random = ["--dataset", "random", "--random-input-len", "256", "--random-output-len", "64"]
    shared = ["--dataset", "shared-prefix", "--sp-num-groups", "4", "--sp-prompts-per-group", str(per_group)]
    shared += ["--sp-system-prompt-len", "512", "--sp-question-len", "64", "--sp-output-len", "64"]
    return {
        "random": [*random, "--num-prompts", str(settings.num_prompts), *load],
        "shared-prefix": [*shared, *load],
    }


def is_port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_server(server: Server, log_path: Path, settings: Settings) -> subprocess.Popen:
    if is_port_taken(settings.port):  # else the readiness check would talk to someone else's server
        raise RuntimeError(f"port {settings.port} is already in use; pick another with --port")
    log = log_path.open("w")
    process = subprocess.Popen(
        server.command,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=settings.work_dir,
        env={**os.environ, **server.env},
        start_new_session=True,
    )
    deadline = time.monotonic() + settings.startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {process.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(f"http://127.0.0.1:{settings.port}/v1/models", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(READY_POLL_S)
    stop_server(process)
    raise RuntimeError(f"{server.name} not ready after {settings.startup_timeout_s:.0f} s:\n{tail(log_path)}")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the process group this script started, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def run_fleetserve_bench(args: list[str], checkpoint: Path, output: Path, settings: Settings) -> dict:
    command = [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "bench", "--port", str(settings.port)]
    command += [
        "--model",
        SERVED_NAME,
        "--tokenizer",
        str(checkpoint),
        "--output",
        str(output),
        "--no-progress",
    ]
    command += ["--request-timeout", str(settings.request_timeout_s), *args]
    load = os.getloadavg()[0]
    subprocess.run(command, cwd=settings.work_dir, check=False)
    return {**json.loads(output.read_text())["summary"], "load_avg_1m": load} if output.exists() else {}


def run_vllm_bench(checkpoint: Path, output: Path, settings: Settings) -> dict:
    """`vllm bench serve` on the random workload, the same shape as fleetserve bench's."""
    command = [str(settings.vllm_bin), "bench", "serve", "--backend", "openai", "--port", str(settings.port)]
    command += ["--endpoint", "/v1/completions", "--model", SERVED_NAME, "--tokenizer", str(checkpoint)]
    command += ["--dataset-name", "random", "--random-input-len", "256", "--random-output-len", "64"]
    command += ["--random-range-ratio", "0", "--num-prompts", str(settings.num_prompts), "--seed", "0"]
    command += ["--max-concurrency", str(settings.concurrency), "--ignore-eos", "--num-warmups", "2"]
    command += ["--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99"]
    command += ["--save-result", "--result-dir", str(output.parent), "--result-filename", output.name]
    load = os.getloadavg()[0]
    subprocess.run(command, cwd=settings.work_dir, check=False, stdout=subprocess.DEVNULL)
    return {**json.loads(output.read_text()), "load_avg_1m": load} if output.exists() else {}


def measure_server(name: str, checkpoint: Path, size: str, settings: Settings) -> dict[str, dict]:
    """Serve `checkpoint` with `name`, run every workload (and the cross-check), stop the server."""
    tag = f"{size}-{name}"
    results: dict[str, dict] = {}
    try:
        process = start_server(
            server_for(name, checkpoint, settings), settings.work_dir / f"{tag}.log", settings
        )
    except RuntimeError as error:
        print(f"!! {error}", file=sys.stderr)
        return results
    try:
        runs: dict[str, list[dict]] = {workload: [] for workload in bench_workloads(settings)}
        for seed in range(settings.repeats):
            for workload, args in bench_workloads(settings, seed).items():
                print(f"== {size}: {name} / {workload} / seed {seed}", flush=True)
                output = settings.work_dir / f"{tag}-{workload}-seed{seed}.json"
                runs[workload].append(run_fleetserve_bench(args, checkpoint, output, settings))
        for workload, summaries in runs.items():
            results[workload] = {**median_summary(summaries), "runs": summaries}
        if settings.cross_check:
            results.update(cross_check(checkpoint, tag, settings))
    finally:
        stop_server(process)
    return results


def cross_check(checkpoint: Path, tag: str, settings: Settings) -> dict[str, dict]:
    """Alternate the two tools on the random workload: fleetserve bench, vllm bench serve, twice."""
    random_args = bench_workloads(settings)["random"]
    results = {}
    for attempt in (1, 2):
        print(f"== cross-check {tag}: round {attempt}", flush=True)
        fleet = settings.work_dir / f"{tag}-xcheck-fleetserve-bench-{attempt}.json"
        results[f"random: fleetserve bench #{attempt}"] = run_fleetserve_bench(
            random_args, checkpoint, fleet, settings
        )
        vllm = settings.work_dir / f"{tag}-xcheck-vllm-bench-{attempt}.json"
        results[f"random: vllm bench serve #{attempt}"] = run_vllm_bench(checkpoint, vllm, settings)
    return results


def median_summary(runs: list[dict]) -> dict:
    """Each figure's median over the runs that report it (a failed run reports nothing)."""
    summary: dict[str, float] = {}
    for _, key, _ in FIGURES:
        values = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
        if values:
            summary[key] = statistics.median(values)
    return summary


def fmt(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def ratio(fleet: object, vllm: object) -> str:
    """fleetserve / vLLM; above 1 is better for throughputs, below 1 for latencies."""
    if not isinstance(fleet, (int, float)) or not isinstance(vllm, (int, float)) or vllm == 0:
        return "n/a"
    return f"{fleet / vllm:.2f}"


def comparison_table(size: str, workload: str, vllm: dict, fleet: dict) -> str:
    """A markdown table: figure | vLLM | fleetserve | fleetserve/vLLM."""
    lines = [
        f"### {size} model, {workload}",
        "",
        "| figure | vLLM | fleetserve | fleetserve/vLLM |",
        "|---|---:|---:|---:|",
    ]
    for label, key, higher_is_better in FIGURES:
        if higher_is_better is None:
            lines.append(f"| {label} | {fmt(vllm.get(key))} | {fmt(fleet.get(key))} | |")
            continue
        better = "higher is better" if higher_is_better else "lower is better"
        lines.append(
            f"| {label} | {fmt(vllm.get(key))} | {fmt(fleet.get(key))} | {ratio(fleet.get(key), vllm.get(key))} ({better}) |"
        )
    vllm_runs, fleet_runs = vllm.get("runs", []), fleet.get("runs", [])
    if len(vllm_runs) > 1 and len(vllm_runs) == len(fleet_runs):
        lines.append("")
        lines.append(
            f"Medians of {len(fleet_runs)} runs (seeds 0–{len(fleet_runs) - 1}); ratio for each seed:"
        )
        lines.append("")
        for label, key in (
            ("output throughput", "output_throughput"),
            ("p50 TTFT", "median_ttft_ms"),
            ("mean TPOT", "mean_tpot_ms"),
        ):
            each = ", ".join(
                ratio(f.get(key), v.get(key)) for f, v in zip(fleet_runs, vllm_runs, strict=True)
            )
            lines.append(f"- {label}: {each}")
    return "\n".join(lines)


def cross_check_table(size: str, server: str, results: dict[str, dict]) -> str:
    """A markdown table of the alternating fleetserve bench / vllm bench serve runs on one server."""
    runs = [name for name in results if name.startswith("random: ")]
    header = "| figure | " + " | ".join(name.removeprefix("random: ") for name in runs) + " |"
    lines = [f"### cross-check on the {server} server ({size} model, random 256/64)", "", header]
    lines.append("|---|" + "---:|" * len(runs))
    for label, key, _ in FIGURES:
        lines.append(f"| {label} | " + " | ".join(fmt(results[name].get(key)) for name in runs) + " |")
    return "\n".join(lines)


def add_run_args(parser: argparse.ArgumentParser, port: int) -> None:
    """Options every side-by-side script shares: where to work, which servers, load, timeouts."""
    parser.add_argument("--work-dir", type=Path, default=HERE / "results", help="checkpoints, logs, JSON")
    parser.add_argument("--vllm-venv", type=Path, default=HERE / ".venv-vllm")
    parser.add_argument("--servers", default="vllm,fleetserve", help="which servers to run, in order")
    parser.add_argument("--num-prompts", type=int, default=32, help="random prompts; shared-prefix: 4 × n/4")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each workload per server (seeds 0..n-1); medians reported",
    )


def settings_from(args: argparse.Namespace, sizes: list[str], cross_check: bool) -> Settings:
    return Settings(
        work_dir=args.work_dir.resolve(),
        vllm_bin=args.vllm_venv.resolve() / "bin" / "vllm",
        sizes=sizes,
        num_prompts=args.num_prompts,
        concurrency=args.concurrency,
        kv_cache_gib=args.kv_cache_gib,
        port=args.port,
        startup_timeout_s=args.startup_timeout,
        request_timeout_s=args.request_timeout,
        cross_check=cross_check,
        servers=args.servers.split(","),
        repeats=max(1, args.repeats),
    )


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_args(parser, port=30999)
    parser.add_argument("--sizes", default="large,tiny", help="demo-model sizes, comma-separated")
    parser.add_argument(
        "--cross-check", action="store_true", help="also run vllm bench serve (random workload)"
    )
    args = parser.parse_args(argv)
    return settings_from(args, args.sizes.split(","), args.cross_check)


def write_checkpoint(size: str, settings: Settings) -> Path:
    """The demo checkpoint of `size` (llama arch, seed 0), written once."""
    path = settings.work_dir / f"demo-{size}"
    if not (path / "config.json").exists():
        command = [
            sys.executable,
            "-P",
            "-m",
            "fleetserve.runtime.cli",
            "demo-model",
            str(path),
            "--size",
            size,
        ]
        subprocess.run(command, cwd=settings.work_dir, check=True)
    return path


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    if "vllm" in settings.servers and not settings.vllm_bin.exists():
        print(f"no vLLM at {settings.vllm_bin}: run benchmarks/setup_vllm.sh first", file=sys.stderr)
        return 2
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    everything: dict[str, dict] = {}
    tables = []
    for size in settings.sizes:
        checkpoint = write_checkpoint(size, settings)
        measured = {name: measure_server(name, checkpoint, size, settings) for name in settings.servers}
        everything[size] = measured
        vllm, fleet = measured.get("vllm", {}), measured.get("fleetserve", {})
        tables += [
            comparison_table(size, w, vllm.get(w, {}), fleet.get(w, {})) for w in bench_workloads(settings)
        ]
        if settings.cross_check:
            tables += [
                cross_check_table(size, name, results) for name, results in measured.items() if results
            ]
    report = "\n\n".join(tables)
    print(report)
    (settings.work_dir / "comparison.md").write_text(report + "\n")
    (settings.work_dir / "comparison.json").write_text(json.dumps(everything, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
