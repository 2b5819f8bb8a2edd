"""Pure aggregation of request results into the benchmark's figures.

Definitions (the same as `vllm bench serve`, so the two can be compared):
  TTFT   time to first token, per successful request.
  TPOT   time per output token after the first: (latency - ttft) / (output_tokens - 1), per successful
         request with more than one output token.
  ITL    inter-token latency: every gap between text-carrying chunks, over all successful requests.
  E2EL   end-to-end latency, per successful request.
  Throughputs divide totals over successful requests by the benchmark's duration (first send to last
  completion). Input tokens are the server's usage.prompt_tokens where reported (so chat templates count),
  else the client's count. Percentiles interpolate linearly between order statistics (numpy's default).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Literal, NamedTuple

from fleetserve.runtime.bench.client import RequestResult

MS_PER_S = 1000.0
PERCENTILES = (50, 90, 99)

TokenSource = Literal["usage", "tokenizer", "mixed", "none"]


class Stats(NamedTuple):
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    num_samples: int


class Summary(NamedTuple):
    num_completed: int
    num_failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float  # completed requests per second
    output_throughput: float  # output tokens per second
    total_token_throughput: float  # input + output tokens per second
    ttft_ms: Stats | None
    tpot_ms: Stats | None
    itl_ms: Stats | None
    e2el_ms: Stats | None
    output_token_source: TokenSource
    errors: dict[str, int]  # failure reason -> count


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ascending values, interpolating linearly between ranks."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def describe(values: Sequence[float]) -> Stats | None:
    """Mean, population standard deviation and percentiles; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    mean = math.fsum(ordered) / len(ordered)
    variance = math.fsum((v - mean) ** 2 for v in ordered) / len(ordered)
    p50, p90, p99 = (percentile(ordered, q) for q in PERCENTILES)
    return Stats(mean, math.sqrt(variance), p50, p90, p99, len(ordered))


def time_per_output_token(result: RequestResult) -> float | None:
    """Seconds per output token after the first; None when it is undefined."""
    if result.ttft is None or result.output_tokens is None or result.output_tokens < 2:
        return None
    return (result.latency - result.ttft) / (result.output_tokens - 1)


def error_reason(error: str | None) -> str:
    """A failure's kind for counting: the text before the first colon ("HTTP 503", "ReadTimeout")."""
    return (error or "unknown error").split(":", 1)[0]


def token_source(results: Sequence[RequestResult]) -> TokenSource:
    """Where the output token counts came from: the servers' usage, the client's tokenizer, or both."""
    from_usage = {r.usage_output_tokens is not None for r in results}
    if not from_usage:
        return "none"
    if len(from_usage) > 1:
        return "mixed"
    return "usage" if from_usage == {True} else "tokenizer"


def input_tokens(result: RequestResult) -> int:
    """The prompt's tokens as the server counted them (template and BOS included), else the client's count."""
    return result.prompt_len if result.usage_prompt_tokens is None else result.usage_prompt_tokens


def in_ms(values: Sequence[float]) -> list[float]:
    return [v * MS_PER_S for v in values]


def summarize(results: Sequence[RequestResult], duration_s: float) -> Summary:
    """Aggregate results; output tokens must be resolved first (runner.resolve_output_tokens)."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    done = [r for r in results if r.is_success]
    failed = [r for r in results if not r.is_success]
    total_input = sum(input_tokens(r) for r in done)
    total_output = sum(r.output_tokens or 0 for r in done)
    tpots = [t for t in (time_per_output_token(r) for r in done) if t is not None]
    return Summary(
        num_completed=len(done),
        num_failed=len(failed),
        duration_s=duration_s,
        total_input_tokens=total_input,
        total_output_tokens=total_output,
        request_throughput=len(done) / duration_s,
        output_throughput=total_output / duration_s,
        total_token_throughput=(total_input + total_output) / duration_s,
        ttft_ms=describe(in_ms([r.ttft for r in done if r.ttft is not None])),
        tpot_ms=describe(in_ms(tpots)),
        itl_ms=describe(in_ms([gap for r in done for gap in r.itl])),
        e2el_ms=describe(in_ms([r.latency for r in done])),
        output_token_source=token_source(done),
        errors=dict(Counter(error_reason(r.error) for r in failed)),
    )
