"""The benchmark's output: a readable summary table and a JSON document for machines.

JSON summary keys follow `vllm bench serve --save-result` (mean_ttft_ms, p99_itl_ms, output_throughput…)
so the two tools' results can be read by the same scripts.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetserve.runtime.bench.client import RequestResult
from fleetserve.runtime.bench.metrics import MS_PER_S, Stats, Summary

WIDTH = 62
LABEL_WIDTH = 40
LATENCY_ROWS = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2EL", "e2el"))
PERCENTILE_NAMES = (("median", "p50"), ("p90", "p90"), ("p99", "p99"))


def _line(label: str, value: object) -> str:
    return f"{label + ':':<{LABEL_WIDTH}}{value!s:>{WIDTH - LABEL_WIDTH}}"


def _stats_cells(stats: Stats | None) -> str:
    if stats is None:
        return f"{'n/a':>10}" * 4
    return "".join(f"{v:>10.2f}" for v in (stats.mean, stats.p50, stats.p90, stats.p99))


def format_table(summary: Summary, title: str, settings: dict[str, object]) -> str:
    """The table printed at the end of a run."""
    lines = [f" {title} ".center(WIDTH, "=")]
    lines += [_line(name, value) for name, value in settings.items()]
    lines.append("-" * WIDTH)
    lines += [
        _line("Successful requests", summary.num_completed),
        _line("Failed requests", summary.num_failed),
        _line("Benchmark duration (s)", f"{summary.duration_s:.2f}"),
        _line("Total input tokens", summary.total_input_tokens),
        _line(f"Total output tokens (from {summary.output_token_source})", summary.total_output_tokens),
        _line("Request throughput (req/s)", f"{summary.request_throughput:.2f}"),
        _line("Output token throughput (tok/s)", f"{summary.output_throughput:.2f}"),
        _line("Total token throughput (tok/s)", f"{summary.total_token_throughput:.2f}"),
        " Latency (ms) ".center(WIDTH, "-"),
        f"{'':<22}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for label, key in LATENCY_ROWS:
        stats = getattr(summary, f"{key}_ms")
        lines.append(f"{label:<22}{_stats_cells(stats)}")
    if summary.errors:
        lines.append(" Failures ".center(WIDTH, "-"))
        lines += [_line(reason, count) for reason, count in sorted(summary.errors.items())]
    lines.append("=" * WIDTH)
    return "\n".join(lines)


def summary_fields(summary: Summary) -> dict[str, object]:
    """Flat figures, named as `vllm bench serve` names them."""
    fields: dict[str, object] = {
        "completed": summary.num_completed,
        "failed": summary.num_failed,
        "duration": summary.duration_s,
        "total_input_tokens": summary.total_input_tokens,
        "total_output_tokens": summary.total_output_tokens,
        "request_throughput": summary.request_throughput,
        "output_throughput": summary.output_throughput,
        "total_token_throughput": summary.total_token_throughput,
        "output_token_source": summary.output_token_source,
        "errors": summary.errors,
    }
    for _, key in LATENCY_ROWS:
        stats: Stats | None = getattr(summary, f"{key}_ms")
        fields[f"mean_{key}_ms"] = None if stats is None else stats.mean
        fields[f"std_{key}_ms"] = None if stats is None else stats.std
        for name, attr in PERCENTILE_NAMES:
            fields[f"{name}_{key}_ms"] = None if stats is None else getattr(stats, attr)
    return fields


def request_fields(result: RequestResult) -> dict[str, object]:
    return {
        "success": result.is_success,
        "error": result.error,
        "prompt_len": result.prompt_len,
        "output_tokens": result.output_tokens,
        "ttft_ms": None if result.ttft is None else result.ttft * MS_PER_S,
        "latency_ms": result.latency * MS_PER_S,
        "itl_ms": [gap * MS_PER_S for gap in result.itl],
    }


def build_result_json(
    summary: Summary, config: dict[str, object], results: Sequence[RequestResult]
) -> dict[str, object]:
    return {
        "config": config,
        "summary": summary_fields(summary),
        "requests": [request_fields(r) for r in results],
    }
