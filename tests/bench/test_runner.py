"""Load control: Poisson arrivals, the concurrency cap, output-token resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetserve.runtime.bench.client import EndpointConfig, RequestResult
from fleetserve.runtime.bench.runner import LoadShape, arrival_offsets, resolve_output_tokens, run_requests
from fleetserve.runtime.bench.workloads import BenchRequest


def test_infinite_rate_sends_everything_at_once():
    assert arrival_offsets(4, math.inf, np.random.default_rng(0)) == [0.0, 0.0, 0.0, 0.0]


def test_poisson_arrivals_have_the_requested_mean_rate():
    offsets = arrival_offsets(4001, 20.0, np.random.default_rng(1))
    gaps = np.diff(offsets)
    assert offsets[0] == 0.0
    assert (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1 / 20, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 20, rel=0.1)  # exponential gaps: std equals the mean
    assert arrival_offsets(50, 20.0, np.random.default_rng(1)) == offsets[:50]  # reproducible by seed


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        arrival_offsets(3, 0.0, np.random.default_rng(0))


def workload(count: int, output_len: int = 3) -> list[BenchRequest]:
    return [BenchRequest(f"ka {i}", 2, output_len) for i in range(count)]


@pytest.mark.parametrize(("cap", "expected_peak"), [(2, 2), (None, 6)])
async def test_concurrency_cap_bounds_requests_in_flight(fake_server, cap, expected_peak):
    fake_server.behaviour.ttft_s, fake_server.behaviour.itl_s = 0.1, 0.01
    config = EndpointConfig(fake_server.base_url, "/v1/completions", "fake-model")
    shape = LoadShape(max_concurrency=cap, show_progress=False)
    outcome = await run_requests(config, workload(6), shape, np.random.default_rng(0))
    assert all(r.is_success for r in outcome.results)
    assert fake_server.behaviour.max_in_flight == expected_peak
    rounds = math.ceil(6 / expected_peak)
    assert outcome.duration_s >= rounds * 0.12 - 0.01


async def test_request_rate_spreads_sends_over_time(fake_server):
    fake_server.behaviour.ttft_s, fake_server.behaviour.itl_s = 0.0, 0.0
    config = EndpointConfig(fake_server.base_url, "/v1/completions", "fake-model")
    rng_seed = 3
    expected_last = arrival_offsets(8, 10.0, np.random.default_rng(rng_seed))[-1]
    outcome = await run_requests(
        config, workload(8), LoadShape(10.0, show_progress=False), np.random.default_rng(rng_seed)
    )
    assert outcome.duration_s >= expected_last
    assert len(outcome.results) == 8


def test_output_tokens_prefer_usage_then_tokenizer(bpe_tokenizer):
    text = " ka ka ka ka"
    with_usage = RequestResult(1, True, generated_text=text, usage_output_tokens=7)
    without_usage = RequestResult(1, True, generated_text=text)
    failed = RequestResult(1, False, "HTTP 500: x", generated_text=text)
    resolve_output_tokens([with_usage, without_usage, failed], bpe_tokenizer)
    assert with_usage.output_tokens == 7
    assert without_usage.output_tokens == len(bpe_tokenizer.encode(text, add_special_tokens=False))
    assert failed.output_tokens is None
