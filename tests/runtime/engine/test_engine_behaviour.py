"""Engine behaviour on the tiny llama demo model: prefix cache, seeds, logit_bias, n > 1, stops, aborts."""

from __future__ import annotations

import pytest

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import EngineError, SamplingParams

from .helpers import run_to_completion

PROMPT = "The lighthouse keeper wrote in his log every night, describing the weather and the ships"


def make_engine(path, **overrides) -> LLMEngine:
    settings = {"page_size": 4, "max_num_batched_tokens": 64, "num_pages": 256, **overrides}
    return LLMEngine.from_config(
        EngineConfig(model_path=str(path), dtype="float32", device="cpu", **settings)
    )


@pytest.fixture(scope="module")
def engine(demo_model) -> LLMEngine:
    return make_engine(demo_model("llama"))


def generate(engine: LLMEngine, prompt: list[int], **params) -> list[int]:
    engine.add_request("one", prompt, SamplingParams(**params))
    return run_to_completion(engine)["one"].sequences[0].token_ids


def test_repeated_prompt_reports_cached_tokens_exactly(engine):
    engine.reset_prefix_cache()
    prompt = engine.tokenizer.encode(PROMPT)
    assert len(prompt) % 4 != 1  # so the expected count below is not trivially len - 1
    engine.add_request("first", prompt, SamplingParams(temperature=0, max_tokens=4))
    first = run_to_completion(engine)["first"]
    engine.add_request("again", prompt, SamplingParams(temperature=0, max_tokens=4))
    again = run_to_completion(engine)["again"]
    assert first.num_cached_tokens == 0
    # every full page of the prompt but the token that must be computed to sample
    assert again.num_cached_tokens == (len(prompt) - 1) // 4 * 4
    assert again.sequences[0].token_ids == first.sequences[0].token_ids
    # a prompt sharing a prefix hits the shared full pages only
    other = prompt[:9] + engine.tokenizer.encode(" something else entirely")
    engine.add_request("prefix", other, SamplingParams(temperature=0, max_tokens=1))
    assert run_to_completion(engine)["prefix"].num_cached_tokens == 8


def test_eviction_under_pressure_leaves_outputs_unchanged(demo_model):
    engine = make_engine(demo_model("llama"), num_pages=40)
    tok = engine.tokenizer
    prompts = [tok.encode(f"Story number {i}: {PROMPT} and then {i * 7} more words") for i in range(12)]
    expected = {}
    for i, p in enumerate(prompts):  # alone, cache cold for each distinct prompt
        expected[i] = generate(engine, p, temperature=0, max_tokens=8)
    hits_before = engine.pool.num_hits
    for i, p in enumerate(prompts):  # many prompts through a 40-page pool: earlier prefixes get evicted
        engine.add_request(f"r{i}", p, SamplingParams(temperature=0, max_tokens=8))
    results = run_to_completion(engine)
    assert engine.pool.num_hits > hits_before  # some prefixes were still cached ...
    full_hits = [(len(p) - 1) // 4 * 4 for p in prompts]
    assert any(results[f"r{i}"].num_cached_tokens < full_hits[i] for i in range(12))  # ... some were evicted
    for i in range(12):
        assert results[f"r{i}"].sequences[0].token_ids == expected[i]


def test_seeded_sampling_ignores_batch_composition(engine):
    prompt = engine.tokenizer.encode(PROMPT)
    params = {"temperature": 1.0, "top_p": 0.9, "seed": 1234, "max_tokens": 16, "ignore_eos": True}
    alone = generate(engine, prompt, **params)
    for i in range(5):  # other traffic, added before and after, with other settings
        engine.add_request(
            f"noise{i}",
            engine.tokenizer.encode(f"noise {i} " * (i + 1)),
            SamplingParams(temperature=0.7, max_tokens=5 + i),
        )
    engine.add_request("seeded", prompt, SamplingParams(**params))
    engine.add_request("noise-late", prompt[:5], SamplingParams(temperature=1.0, max_tokens=20))
    together = run_to_completion(engine)["seeded"].sequences[0].token_ids
    assert together == alone
    other_seed = generate(engine, prompt, **{**params, "seed": 99})
    assert other_seed != alone


def test_logit_bias_bans_and_forces(engine):
    prompt = engine.tokenizer.encode(PROMPT)
    greedy = generate(engine, prompt, temperature=0, max_tokens=12, ignore_eos=True)
    banned = greedy[0]
    out = generate(engine, prompt, temperature=0, max_tokens=12, ignore_eos=True, logit_bias={banned: -100.0})
    assert banned not in out and out[0] != greedy[0]
    forced = engine.tokenizer.encode(" harbour")[0]
    out = generate(
        engine, prompt, temperature=1.0, seed=3, max_tokens=6, ignore_eos=True, logit_bias={forced: 100.0}
    )
    assert out == [forced] * 6


def test_n_choices_share_prompt_pages_and_differ(engine):
    engine.reset_prefix_cache()
    prompt = engine.tokenizer.encode(PROMPT)
    engine.add_request(
        "n", prompt, SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=20, ignore_eos=True)
    )
    shared_seen = False
    while engine.has_unfinished_requests():
        seqs = engine.requests["n"].sequences if "n" in engine.requests else []
        running = [s for s in seqs if s.status == "running"]
        if len(running) == 3:
            full = (len(prompt) - 1) // 4
            heads = {tuple(s.page_ids[:full]) for s in running}
            shared_seen |= len(heads) == 1 and all(
                engine.pool.ref_counts[p] == 3 for p in running[0].page_ids[:full]
            )
        engine.step()
    assert shared_seen, "the three choices never shared the prompt's pages"
    engine.add_request(
        "n2", prompt, SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=20, ignore_eos=True)
    )
    result = run_to_completion(engine)["n2"]
    tokens = [result.sequences[i].token_ids for i in range(3)]
    assert len({tuple(t) for t in tokens}) == 3
    assert all(len(t) == 20 and result.sequences[i].num_finishes == 1 for i, t in enumerate(tokens))
    assert engine.pool.num_free == engine.pool.num_pages


def test_stop_string_is_never_emitted(engine):
    prompt = engine.tokenizer.encode(PROMPT)
    params = {"temperature": 0, "max_tokens": 30, "ignore_eos": True}
    full = engine.tokenizer.decode(generate(engine, prompt, **params))
    stop = full[12:15]
    assert stop and full.index(stop) == 12
    engine.add_request("s", prompt, SamplingParams(**params, stop=[stop]))
    got = run_to_completion(engine)["s"].sequences[0]
    assert got.text == full[:12] and got.finish_reason == "stop"


def test_stop_token_and_max_tokens_finish_reasons(engine):
    prompt = engine.tokenizer.encode(PROMPT)
    greedy = generate(engine, prompt, temperature=0, max_tokens=6, ignore_eos=True)
    engine.add_request("t", prompt, SamplingParams(temperature=0, max_tokens=6, stop_token_ids=[greedy[2]]))
    engine.add_request("m", prompt, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    results = run_to_completion(engine)
    stopped = results["t"].sequences[0]
    assert stopped.token_ids == greedy[:3] and stopped.finish_reason == "stop"
    assert results["m"].sequences[0].finish_reason == "length"


def test_admission_refuses_what_cannot_fit(engine):
    limit = engine.model_config.max_model_len
    with pytest.raises(EngineError, match=str(limit)):
        engine.add_request("big", [1] * (limit - 10), SamplingParams(max_tokens=11))
    with pytest.raises(EngineError, match="empty"):
        engine.add_request("empty", [], SamplingParams())
    with pytest.raises(EngineError, match="vocabulary"):
        engine.add_request("oov", [engine.model_config.vocab_size], SamplingParams())
    assert not engine.has_unfinished_requests()


def test_abort_frees_pages_at_once(engine):
    prompt = engine.tokenizer.encode(PROMPT)
    engine.add_request("a", prompt, SamplingParams(n=2, max_tokens=50, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.pool.num_used > 0
    engine.abort_request("a")
    assert engine.pool.num_used == 0
    (out,) = engine.step()
    assert out.finished and {c.finish_reason for c in out.outputs} == {"abort"}
    assert not engine.has_unfinished_requests()
