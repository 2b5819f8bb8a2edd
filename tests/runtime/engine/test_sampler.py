"""Sampler: penalties, bias, min_tokens, truncation, seeded draws, distribution and logprobs."""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from fleetserve.runtime.engine import logprobs as logprobs_module
from fleetserve.runtime.engine.penalties import apply_penalties
from fleetserve.runtime.engine.sampler import SamplingRow, draw_inverse_cdf, sample, seeded_uniform
from fleetserve.runtime.engine.truncation import apply_min_p, apply_top_k_top_p
from fleetserve.runtime.engine.types import SamplingParams

VOCAB = 64
EOS = 3


def _logits(num_rows: int, seed: int = 0, vocab: int = VOCAB, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(num_rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def _row(
    output: list[int] | None = None, prompt: list[int] | None = None, offset: int = 0, **params
) -> SamplingRow:
    prompt = prompt or []
    return SamplingRow(SamplingParams(**params), prompt + (output or []), len(prompt), seed_offset=offset)


def _support(row_logits: torch.Tensor) -> set[int]:
    return set(torch.isfinite(row_logits).nonzero().flatten().tolist())


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """Tiny tensors: thread wake-ups on a shared 2-core machine cost more than the work."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _chi_square_critical(df: int, z: float = 3.29) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile at the normal quantile z (p ≈ 0.0005)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


# ---------------------------------------------------------------- greedy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_greedy_is_argmax_and_ignores_truncation_and_seed(dtype):
    logits = _logits(5, seed=1).to(dtype)
    original = logits.clone()
    rows = [_row(temperature=0.0, top_k=2, top_p=0.1, min_p=0.9, seed=i) for i in range(5)]
    result = sample(logits, rows)
    assert result.token_ids == logits.float().argmax(dim=-1).tolist()
    assert result.logprobs == [None] * 5
    assert torch.equal(logits, original)  # the caller's logits are not modified


def test_mixed_batch_greedy_rows_unaffected_by_sampled_rows():
    logits = _logits(6, seed=2)
    rows = [_row(temperature=0.0) if i % 2 == 0 else _row(temperature=1.5, seed=i) for i in range(6)]
    token_ids = sample(logits, rows).token_ids
    argmax = logits.argmax(dim=-1).tolist()
    assert [token_ids[i] for i in (0, 2, 4)] == [argmax[i] for i in (0, 2, 4)]


# ---------------------------------------------------------------- penalties


def test_repetition_penalty_matches_transformers():
    logits = _logits(3, seed=3)
    histories = [([1, 2, 5], [5, 7]), ([], [9, 9, 10]), ([4, 60], [])]
    penalties = [1.3, 1.7, 0.8]
    rows = [
        _row(prompt=p, output=o, repetition_penalty=r) for (p, o), r in zip(histories, penalties, strict=True)
    ]
    processed = logits.clone()
    apply_penalties(processed, rows)
    for i, ((prompt, output), penalty) in enumerate(zip(histories, penalties, strict=True)):
        expected = RepetitionPenaltyLogitsProcessor(penalty)(
            torch.tensor([prompt + output]), logits[i : i + 1].clone()
        )
        torch.testing.assert_close(processed[i : i + 1], expected)
    assert not torch.equal(processed, logits)


def test_frequency_and_presence_penalties_follow_openai_formula():
    logits = _logits(2, seed=4)
    rows = [
        _row(prompt=[1, 1, 2], output=[5, 5, 5, 8], frequency_penalty=0.5, presence_penalty=0.25),
        _row(prompt=[7], output=[7, 9], presence_penalty=-1.0),
    ]
    processed = logits.clone()
    apply_penalties(processed, rows)
    expected = logits.clone()
    for i, row in enumerate(rows):
        for token, count in Counter(row.output_token_ids).items():
            expected[i, token] -= row.params.frequency_penalty * count + row.params.presence_penalty
    torch.testing.assert_close(processed, expected)  # prompt tokens (1, 2) untouched


def test_penalties_only_touch_rows_that_ask():
    logits = _logits(3, seed=5)
    rows = [
        _row(output=[1, 2]),
        _row(output=[1, 2], frequency_penalty=2.0),
        _row(output=[1], repetition_penalty=1.0),
    ]
    processed = logits.clone()
    apply_penalties(processed, rows)
    assert torch.equal(processed[0], logits[0]) and torch.equal(processed[2], logits[2])
    assert processed[1, 1] == logits[1, 1] - 2.0


def test_repetition_penalty_changes_greedy_choice():
    logits = torch.zeros(1, VOCAB)
    logits[0, 10], logits[0, 11] = 2.0, 1.8
    assert sample(logits, [_row(temperature=0.0, output=[10])]).token_ids == [10]
    assert sample(logits, [_row(temperature=0.0, output=[10], repetition_penalty=1.2)]).token_ids == [11]


# ---------------------------------------------------------------- logit_bias, min_tokens, grammar mask


def test_logit_bias_bans_and_forces():
    logits = _logits(8, seed=6)
    argmax = logits.argmax(dim=-1).tolist()
    banned = [
        _row(temperature=t, seed=i, logit_bias={argmax[i]: -100.0}) for i, t in enumerate([0.0, 1.0] * 4)
    ]
    chosen = sample(logits, banned).token_ids
    assert all(token != argmax[i] for i, token in enumerate(chosen))
    forced = [
        _row(temperature=t, seed=i, logit_bias={42: 100.0, 7: -100.0}) for i, t in enumerate([0.0, 1.0] * 4)
    ]
    assert sample(logits, forced).token_ids == [42] * 8


def test_forced_token_reports_its_raw_logprob():
    logits = _logits(1, seed=7)
    weakest = int(logits.argmin())
    result = sample(logits, [_row(temperature=1.0, seed=1, logit_bias={weakest: 100.0}, logprobs=2)])
    assert result.token_ids == [weakest]
    raw = torch.log_softmax(logits[0], dim=-1)
    assert result.logprobs[0].logprob == pytest.approx(raw[weakest].item(), abs=1e-5)
    assert [token for token, _ in result.logprobs[0].top] == raw.topk(2).indices.tolist()


def test_min_tokens_bans_eos_and_stop_tokens_until_reached():
    logits = torch.zeros(4, VOCAB)
    logits[:, EOS] = 10.0
    logits[:, 20] = 9.0
    logits[:, 21] = 8.0
    rows = [
        _row(temperature=0.0, min_tokens=2, output=[5], stop_token_ids=[20]),  # too short: eos and 20 banned
        _row(temperature=0.0, min_tokens=2, output=[5, 6]),  # long enough
        _row(temperature=0.0, min_tokens=2, output=[], ignore_eos=True),  # eos not a stop: not banned
        _row(temperature=1.0, seed=3, min_tokens=5, output=[], stop_token_ids=[20, 21]),
    ]
    token_ids = sample(logits, rows, eos_token_ids={EOS}).token_ids
    assert token_ids[:3] == [21, EOS, EOS]
    assert token_ids[3] not in {EOS, 20, 21}


def test_allowed_mask_restricts_choice_and_min_tokens_yields_to_it():
    logits = _logits(3, seed=8)
    allowed = torch.zeros(3, VOCAB, dtype=torch.bool)
    allowed[0, [11, 12]] = True
    allowed[1, [13, 40]] = True
    allowed[2, EOS] = True  # the grammar only allows eos; min_tokens must not leave nothing
    rows = [_row(temperature=1.0, seed=0), _row(temperature=0.0), _row(temperature=0.0, min_tokens=9)]
    token_ids = sample(logits, rows, eos_token_ids={EOS}, allowed_mask=allowed).token_ids
    assert token_ids[0] in {11, 12}
    assert token_ids[1] == (13 if logits[1, 13] > logits[1, 40] else 40)
    assert token_ids[2] == EOS


def test_row_with_nothing_allowed_still_yields_an_id_in_the_vocabulary():
    allowed = torch.zeros(2, VOCAB, dtype=torch.bool)
    token_ids = sample(
        _logits(2), [_row(temperature=1.0), _row(temperature=0.0)], allowed_mask=allowed
    ).token_ids
    assert all(0 <= token < VOCAB for token in token_ids)


# ---------------------------------------------------------------- top-k, top-p, min-p


def _reference_support(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float
) -> set[int]:
    scores = logits.double().unsqueeze(0) / temperature
    if 0 < top_k < logits.shape[-1]:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    if min_p > 0.0:
        scores = MinPLogitsWarper(min_p)(None, scores)
    return _support(scores[0])


def _near_top_p_boundary(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> bool:
    """True when float32 rounding could flip a top-p decision (the reference runs in float64)."""
    values = (logits.double() / temperature).sort(descending=True).values
    if 0 < top_k < len(values):
        values = values[:top_k]
    cumulative = values.softmax(dim=-1).cumsum(dim=-1)
    return bool((cumulative - top_p).abs().min() < 1e-4)


truncation_params = st.tuples(
    st.sampled_from([0.3, 0.7, 1.0, 2.0]),  # temperature
    st.sampled_from([-1, 0, 1, 2, 5, 30, VOCAB, VOCAB + 5]),  # top_k
    st.sampled_from([1.0, 1.0, 1.0, 0.95, 0.6, 0.2, 0.01]),  # top_p
    st.sampled_from([0.0, 0.05, 0.3, 0.9]),  # min_p
)


@settings(max_examples=100, deadline=None)
@given(params=st.lists(truncation_params, min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_truncation_keeps_exactly_the_reference_support(params, seed):
    logits = _logits(len(params), seed=seed)
    for i, (temperature, top_k, top_p, _) in enumerate(params):
        if _near_top_p_boundary(logits[i], temperature, top_k, top_p):
            return
    scaled = logits / torch.tensor([[p[0]] for p in params])
    apply_top_k_top_p(scaled, [p[1] for p in params], [p[2] for p in params])
    apply_min_p(scaled, [p[3] for p in params])
    for i, (temperature, top_k, top_p, min_p) in enumerate(params):
        assert _support(scaled[i]) == _reference_support(logits[i], temperature, top_k, top_p, min_p)


@settings(max_examples=60, deadline=None)
@given(params=st.lists(truncation_params, min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_sampled_tokens_stay_inside_the_support(params, seed):
    logits = _logits(len(params), seed=seed)
    num_draws = 25  # each draw of each row is its own batch row (own step), all in one call
    rows = [
        _row(temperature=t, top_k=k, top_p=p, min_p=m, seed=seed, offset=i, output=[0] * draw)
        for draw in range(num_draws)
        for i, (t, k, p, m) in enumerate(params)
    ]
    token_ids = sample(logits.repeat(num_draws, 1), rows).token_ids
    for i, p in enumerate(params):
        if not _near_top_p_boundary(logits[i], p[0], p[1], p[2]):
            assert set(token_ids[i :: len(params)]) <= _reference_support(logits[i], *p)


def test_top_k_keeps_exactly_k_tokens_per_row():
    logits = _logits(4, seed=16)
    apply_top_k_top_p(logits, [1, 3, 10, -1], [1.0] * 4)
    assert [len(_support(row)) for row in logits] == [1, 3, 10, VOCAB]


def test_top_p_zero_keeps_only_the_most_likely_token():
    logits = _logits(2, seed=17)
    expected = logits.argmax(dim=-1).tolist()
    apply_top_k_top_p(logits, [-1, 5], [0.0, 0.0])
    assert [_support(row) for row in logits] == [{expected[0]}, {expected[1]}]


# ---------------------------------------------------------------- seeds


def _seeded_sequence(
    logits_row: torch.Tensor, seed: int, offset: int, steps: int, companions: int
) -> list[int]:
    """Tokens of one seeded sequence over ``steps`` steps, sitting among ``companions`` other rows."""
    tokens: list[int] = []
    for _ in range(steps):
        others = [_row(temperature=0.8, seed=None) for _ in range(companions)]
        rows = [
            *others[: companions // 2],
            _row(temperature=0.9, seed=seed, offset=offset, output=list(tokens)),
        ]
        rows += others[companions // 2 :]
        batch = torch.cat([_logits(companions // 2, seed=len(tokens) + 100), logits_row.unsqueeze(0)])
        batch = torch.cat([batch, _logits(companions - companions // 2, seed=len(tokens) + 200)])
        tokens.append(sample(batch, rows).token_ids[companions // 2])
    return tokens


def test_seeded_row_is_reproducible_whatever_the_batch():
    logits_row = _logits(1, seed=9, scale=1.0)[0]
    alone = _seeded_sequence(logits_row, seed=1234, offset=0, steps=12, companions=0)
    assert _seeded_sequence(logits_row, seed=1234, offset=0, steps=12, companions=5) == alone
    assert _seeded_sequence(logits_row, seed=1234, offset=0, steps=12, companions=2) == alone
    assert len(set(alone)) > 1  # it is a stream, not one repeated token


def test_seeded_row_after_preemption_redraws_the_same_tokens():
    logits_row = _logits(1, seed=10, scale=1.0)
    first = [
        sample(logits_row, [_row(temperature=1.0, seed=7, output=[0] * step)]).token_ids[0]
        for step in range(8)
    ]
    # Recomputation: same history lengths, different batch position.
    batch = torch.cat([_logits(3, seed=11), logits_row])
    for step in range(8):
        rows = [_row(temperature=1.0) for _ in range(3)] + [_row(temperature=1.0, seed=7, output=[0] * step)]
        assert sample(batch, rows).token_ids[3] == first[step]


def test_seed_offsets_and_seeds_give_different_streams():
    logits_row = _logits(1, seed=12, scale=1.0)[0]
    streams = {
        (seed, offset): tuple(_seeded_sequence(logits_row, seed=seed, offset=offset, steps=16, companions=0))
        for seed, offset in [(5, 0), (5, 1), (5, 2), (6, 0)]
    }
    assert len(set(streams.values())) == len(streams)


def test_seeded_uniform_is_a_pure_function_in_unit_interval():
    values = [
        seeded_uniform(seed, offset, step)
        for seed in (0, 1, -3, 2**70)
        for offset in range(3)
        for step in range(50)
    ]
    assert all(0.0 <= v < 1.0 for v in values)
    assert len(set(values)) == len(values)
    assert seeded_uniform(42, 1, 7) == seeded_uniform(42, 1, 7)


def test_forked_process_does_not_repeat_unseeded_draws():
    logits = torch.zeros(64, 2**16)  # 64 unseeded draws from a uniform distribution
    rows = [_row(temperature=1.0) for _ in range(64)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its draws and leave without running pytest's teardown
        os.write(write_end, json.dumps(sample(logits, rows).token_ids).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_draws = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child_draws != sample(logits, rows).token_ids


# ---------------------------------------------------------------- distribution


def test_inverse_cdf_on_a_uniform_grid_matches_probabilities_exactly():
    logits = torch.tensor([[0.5, float("-inf"), 2.0, -1.0, 1.0, float("-inf")]])
    probs = torch.softmax(logits[0].double(), dim=-1)
    num_draws = 10_000
    uniforms = (torch.arange(num_draws, dtype=torch.float64) + 0.5) / num_draws
    token_ids = draw_inverse_cdf(logits.expand(num_draws, -1), uniforms)
    counts = torch.bincount(token_ids, minlength=6).double()
    assert counts[1] == 0 and counts[5] == 0
    assert torch.all((counts - num_draws * probs).abs() <= 1.0)


def test_inverse_cdf_extreme_uniforms_never_pick_banned_tokens():
    neg_inf = float("-inf")
    logits = torch.tensor([[neg_inf, 1.0, 2.0, neg_inf], [neg_inf, 1.0, 2.0, neg_inf]])
    uniforms = torch.tensor([0.0, 1.0 - 2.0**-53], dtype=torch.float64)
    assert draw_inverse_cdf(logits, uniforms).tolist() == [2, 1]


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 1.0},
        {"temperature": 0.6, "top_k": 6},
        {"temperature": 1.3, "top_p": 0.8, "min_p": 0.02},
        {"temperature": 1.0, "repetition_penalty": 1.5, "frequency_penalty": 0.3, "logit_bias": {0: 1.5}},
    ],
)
def test_seeded_draws_follow_the_processed_distribution(params):
    vocab = 10
    logits = _logits(1, seed=13, vocab=vocab, scale=1.0)
    prompt, output = [1, 2], [2, 4, 4]
    processed = logits.clone()
    reference_row = _row(prompt=prompt, output=output, **params)
    apply_penalties(processed, [reference_row])
    for token, bias in reference_row.params.logit_bias.items():
        processed[0, token] += bias
    scaled = processed / params["temperature"]
    apply_top_k_top_p(scaled, [reference_row.params.top_k], [reference_row.params.top_p])
    apply_min_p(scaled, [reference_row.params.min_p])
    expected = torch.softmax(scaled[0].double(), dim=-1)

    num_draws = 3000  # one batch: every row is the same sequence with its own seed
    rows = [_row(prompt=prompt, output=output, seed=s, **params) for s in range(num_draws)]
    token_ids = sample(logits.expand(num_draws, -1), rows).token_ids
    counts = torch.bincount(torch.tensor(token_ids), minlength=vocab).double()
    assert set(token_ids) <= _support(scaled[0])
    kept = expected > 0
    chi_square = (((counts - num_draws * expected) ** 2)[kept] / (num_draws * expected[kept])).sum().item()
    assert chi_square < _chi_square_critical(int(kept.sum()) - 1)


def test_stream_over_steps_follows_the_distribution():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    logits = probs.log().unsqueeze(0)
    counts = Counter(
        sample(logits, [_row(seed=99, offset=2, output=[0] * step)]).token_ids[0] for step in range(2000)
    )
    observed = torch.tensor([counts[i] for i in range(4)], dtype=torch.float64)
    chi_square = ((observed - 2000 * probs.double()) ** 2 / (2000 * probs.double())).sum().item()
    assert chi_square < _chi_square_critical(3)


# ---------------------------------------------------------------- logprobs


def test_logprobs_are_raw_log_softmax_with_top_k():
    logits = _logits(4, seed=14).to(torch.bfloat16)
    rows = [
        _row(temperature=0.0, logprobs=3),
        _row(temperature=1.0, seed=1, logprobs=0, repetition_penalty=2.0, output=[1, 2, 3]),
        _row(temperature=0.0),
        _row(temperature=0.5, seed=2, top_k=2, logprobs=5, logit_bias={9: 5.0}),
    ]
    result = sample(logits, rows)
    raw = torch.log_softmax(logits.float(), dim=-1)
    assert result.logprobs[2] is None
    for i, k in [(0, 3), (1, 0), (3, 5)]:
        entry = result.logprobs[i]
        assert entry.token_id == result.token_ids[i]
        assert entry.logprob == pytest.approx(raw[i, entry.token_id].item(), abs=1e-5)
        top = raw[i].topk(k)
        assert [token for token, _ in entry.top] == top.indices.tolist()
        assert [value for _, value in entry.top] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_prompt_logprobs_match_direct_computation(monkeypatch):
    logits = _logits(7, seed=15)
    targets = [5, 0, 63, 5, 17, 2, 9]
    expected = torch.log_softmax(logits, dim=-1)
    for chunk_elements in (1 << 26, 2 * VOCAB):  # one chunk, then chunks of two positions
        monkeypatch.setattr(logprobs_module, "_PROMPT_CHUNK_ELEMENTS", chunk_elements)
        result = logprobs_module.prompt_logprobs(logits, targets, k=2)
        assert [entry.token_id for entry in result] == targets
        assert [entry.logprob for entry in result] == pytest.approx(
            [expected[t, token].item() for t, token in enumerate(targets)], abs=1e-5
        )
        assert [[token for token, _ in entry.top] for entry in result] == expected.topk(2).indices.tolist()
    assert all(
        entry.top == [] for entry in logprobs_module.prompt_logprobs(logits, torch.tensor(targets), k=0)
    )


def test_prompt_logprobs_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        logprobs_module.prompt_logprobs(_logits(3), [1, 2], k=1)
