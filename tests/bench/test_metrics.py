"""Aggregation against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetserve.runtime.bench.client import RequestResult
from fleetserve.runtime.bench.metrics import (
    describe,
    error_reason,
    percentile,
    summarize,
    time_per_output_token,
)


def test_percentile_interpolates_between_ranks():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)  # position 2.7: 3 + 0.7 * (4 - 3)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([5.0], 99) == 5.0


def test_percentile_matches_numpy_default_on_uneven_data():
    values = sorted([0.3, 9.1, 2.2, 2.2, 7.0, 0.01, 5.5])
    for q in (1, 10, 50, 73, 90, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_describe_mean_std_percentiles():
    stats = describe([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert stats.mean == 5.0
    assert stats.std == 2.0  # the textbook population standard deviation example
    assert stats.p50 == 4.5
    assert stats.num_samples == 8
    assert describe([]) is None


def test_time_per_output_token_excludes_the_first_token():
    result = RequestResult(prompt_len=3, is_success=True, ttft=0.1, latency=1.0, output_tokens=5)
    assert time_per_output_token(result) == pytest.approx(0.225)  # (1.0 - 0.1) / 4
    result.output_tokens = 1
    assert time_per_output_token(result) is None


def test_summarize_hand_computed():
    ok_a = RequestResult(10, True, ttft=0.1, itl=[0.2, 0.2, 0.25, 0.25], latency=1.0, output_tokens=5)
    ok_a.usage_output_tokens = 5
    ok_b = RequestResult(20, True, ttft=0.3, itl=[0.17] * 10, latency=2.0, output_tokens=11)
    failed = RequestResult(40, False, "HTTP 503: queue full", latency=0.01)
    dropped = RequestResult(40, False, "RemoteProtocolError: peer closed", ttft=0.05, itl=[0.1], latency=0.3)
    summary = summarize([ok_a, failed, ok_b, dropped], duration_s=4.0)

    assert (summary.num_completed, summary.num_failed) == (2, 2)
    assert summary.total_input_tokens == 30  # failed requests' prompts do not count
    assert summary.total_output_tokens == 16
    assert summary.request_throughput == pytest.approx(0.5)
    assert summary.output_throughput == pytest.approx(4.0)
    assert summary.total_token_throughput == pytest.approx(11.5)
    assert summary.ttft_ms.mean == pytest.approx(200.0)
    assert summary.ttft_ms.p50 == pytest.approx(200.0)
    assert summary.tpot_ms.mean == pytest.approx((225.0 + 170.0) / 2)
    assert summary.itl_ms.num_samples == 14  # every gap of every successful request
    assert summary.itl_ms.mean == pytest.approx((0.9 + 1.7) / 14 * 1000)
    assert summary.e2el_ms.p99 == pytest.approx(1000 + 1000 * 0.99)
    assert summary.output_token_source == "mixed"
    assert summary.errors == {"HTTP 503": 1, "RemoteProtocolError": 1}


def test_input_tokens_prefer_the_servers_usage():
    chat = RequestResult(10, True, ttft=0.1, latency=0.2, output_tokens=1, usage_prompt_tokens=17)
    plain = RequestResult(10, True, ttft=0.1, latency=0.2, output_tokens=1)
    assert summarize([chat, plain], duration_s=1.0).total_input_tokens == 27


def test_summarize_with_no_success_has_no_latency_figures():
    summary = summarize([RequestResult(5, False, "ConnectError: refused")], duration_s=0.5)
    assert summary.num_completed == 0
    assert summary.ttft_ms is None and summary.e2el_ms is None
    assert summary.output_token_source == "none"
    assert summary.request_throughput == 0.0


def test_summarize_rejects_zero_duration():
    with pytest.raises(ValueError):
        summarize([], duration_s=0.0)


def test_error_reason():
    assert error_reason("HTTP 500: {...: ...}") == "HTTP 500"
    assert error_reason("stream ended before [DONE]") == "stream ended before [DONE]"
    assert error_reason(None) == "unknown error"
    assert not math.isnan(percentile([1.0, 1.0], 50))
