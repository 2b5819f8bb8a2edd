"""Structured outputs through the engine on the tiny llama demo model (random weights: the hardest case).

Every bounded constraint must finish with `stop` well within max_tokens and validate; mixed batches,
n > 1, seeds, preemption and prefix-cache hits must keep each sequence's matcher right.
"""

from __future__ import annotations

import json
from concurrent.futures import Future

import pytest

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.grammar_compiler import GrammarSpec, grammar_spec
from fleetserve.runtime.engine.types import EngineError, SamplingParams
from tests.structured_cases import EBNF_GRAMMAR, EBNF_PATTERN, PHONE_REGEX, SCHEMAS, check_json, check_regex

from .helpers import run_to_completion

MAX_TOKENS = 256
PROMPTS = ["Generate user info", "Reply in JSON please: the weather in Paris", "Numbers and dates, 1 2 3"]


def make_engine(path, **overrides) -> LLMEngine:
    settings = {"page_size": 4, "max_num_batched_tokens": 64, "num_pages": 512, **overrides}
    return LLMEngine.from_config(EngineConfig(model_path=str(path), dtype="float32", device="cpu", **settings))


@pytest.fixture(scope="module")
def engine(demo_model) -> LLMEngine:
    return make_engine(demo_model("llama"))


def encode(engine: LLMEngine, text: str) -> list[int]:
    return engine.tokenizer.encode(text)


def constrained_requests(engine: LLMEngine, max_tokens: int = MAX_TOKENS) -> dict[str, tuple[list[int], SamplingParams, str, str]]:
    """request id -> (prompt, params, kind, name): every case, greedy and seeded with n = 2."""
    requests = {}
    cases = [("json", name, {"json_schema": json.dumps(schema)}) for name, schema in SCHEMAS.items()]
    cases += [("regex", "phone", {"regex": PHONE_REGEX}), ("ebnf", "arith", {"ebnf": EBNF_GRAMMAR})]
    for i, (kind, name, constraint) in enumerate(cases):
        prompt = encode(engine, PROMPTS[i % len(PROMPTS)])
        requests[f"{name}-greedy"] = (prompt, SamplingParams(temperature=0, max_tokens=max_tokens, **constraint), kind, name)
        requests[f"{name}-seeded"] = (prompt, SamplingParams(temperature=1.0, seed=i, n=2, max_tokens=max_tokens,
                                                             **constraint), kind, name)
    return requests


def check_output(kind: str, name: str, text: str) -> None:
    if kind == "json":
        check_json(text, SCHEMAS[name])
    elif kind == "regex":
        check_regex(text, PHONE_REGEX)
    else:
        assert EBNF_PATTERN.fullmatch(text), text


def test_bounded_constraints_finish_with_stop_and_validate(engine):
    requests = constrained_requests(engine)
    for request_id, (prompt, params, _, _) in requests.items():
        engine.add_request(request_id, prompt, params)
    results = run_to_completion(engine)
    eos = engine.model_config.eos_token_ids
    for request_id, (_, params, kind, name) in requests.items():
        seqs = results[request_id].sequences
        assert len(seqs) == params.n
        for seq in seqs.values():
            assert seq.finish_reason == "stop", (request_id, seq.text)
            assert len(seq.token_ids) < MAX_TOKENS // 2
            if kind != "ebnf":  # complete JSON or phone number: nothing may follow, no EOS is sampled
                assert not eos & set(seq.token_ids)
            check_output(kind, name, seq.text)


def test_unconstrained_neighbours_keep_their_greedy_tokens(engine):
    plain = {f"plain-{i}": encode(engine, p) for i, p in enumerate(PROMPTS)}
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    for request_id, prompt in plain.items():
        engine.add_request(request_id, prompt, params)
    alone = run_to_completion(engine)
    for request_id, prompt in plain.items():
        engine.add_request(request_id, prompt, params)
    for request_id, (prompt, constrained, _, _) in constrained_requests(engine).items():
        engine.add_request(request_id, prompt, constrained)
    mixed = run_to_completion(engine)
    for request_id in plain:
        assert mixed[request_id].sequences[0].token_ids == alone[request_id].sequences[0].token_ids


def run_all(engine: LLMEngine, requests) -> dict[str, list[list[int]]]:
    for request_id, (prompt, params, _, _) in requests.items():
        engine.add_request(request_id, prompt, params)
    results = run_to_completion(engine)
    return {rid: [s.token_ids for _, s in sorted(res.sequences.items())] for rid, res in results.items()}


def test_preemption_keeps_each_matcher_in_step(demo_model, engine):
    """A pool so small that sequences are preempted and recomputed: same tokens as without."""
    requests = constrained_requests(engine, max_tokens=96)
    expected = run_all(engine, requests)
    tight = make_engine(demo_model("llama"), num_pages=40, max_num_batched_tokens=32)
    got = run_all(tight, requests)
    assert tight.stats().num_preemptions > 0
    assert got == expected
    for request_id, (_, _, kind, name) in requests.items():
        for tokens in got[request_id]:
            check_output(kind, name, tight.tokenizer.decode(tokens, skip_special_tokens=True))


def test_prefix_cache_hit_gives_the_same_constrained_output(engine):
    prompt = encode(engine, PROMPTS[1] * 4)
    params = SamplingParams(temperature=1.0, seed=5, max_tokens=MAX_TOKENS, json_schema=json.dumps(SCHEMAS["refs"]))
    engine.reset_prefix_cache()
    first = run_all(engine, {"a": (prompt, params, "json", "refs")})["a"]
    engine.add_request("b", prompt, params)
    second = run_to_completion(engine)["b"]
    assert second.num_cached_tokens > 0
    assert [second.sequences[0].token_ids] == first
    check_json(second.sequences[0].text, SCHEMAS["refs"])


def test_grammar_ending_needs_no_eos_and_extendable_text_may_take_it(engine):
    prompt = encode(engine, PROMPTS[0])
    engine.add_request("yes-no", prompt, SamplingParams(temperature=0, max_tokens=8, ebnf='root ::= "yes" | "no"'))
    engine.add_request("digits", prompt, SamplingParams(temperature=1.0, seed=3, n=4, max_tokens=8, regex=r"[0-9]{1,40}"))
    results = run_to_completion(engine)
    yes_no = results["yes-no"].sequences[0]
    assert yes_no.text in ("yes", "no") and yes_no.finish_reason == "stop"
    for seq in results["digits"].sequences.values():
        assert seq.text.isdigit()
        assert seq.finish_reason in ("stop", "length")
        if seq.finish_reason == "length":
            assert len(seq.token_ids) == 8


def test_max_tokens_cuts_a_constraint_with_length(engine):
    engine.add_request("cut", encode(engine, PROMPTS[0]),
                       SamplingParams(temperature=0, max_tokens=5, json_schema=json.dumps(SCHEMAS["nested_address"])))
    seq = run_to_completion(engine)["cut"].sequences[0]
    assert seq.finish_reason == "length" and len(seq.token_ids) == 5
    assert '{"person": {'.startswith(seq.text)  # a prefix of the only possible start


def test_invalid_constraint_is_refused_on_add(engine):
    params = SamplingParams(regex="(unclosed")
    with pytest.raises(EngineError, match="invalid regex"):
        engine.grammars.compile(grammar_spec(params))  # as the server does first
    with pytest.raises(EngineError, match="parenthesis is not closed"):
        engine.add_request("bad", encode(engine, PROMPTS[0]), params)
    assert not engine.has_unfinished_requests()


def test_a_request_waits_unscheduled_while_its_grammar_compiles(engine, monkeypatch):
    """Compilation never holds up the loop: the others run, the constrained one starts once compiled."""
    pending: Future = Future()
    compiled = engine.grammars.compile(GrammarSpec("regex", PHONE_REGEX))
    monkeypatch.setattr(engine.grammars, "submit", lambda spec: pending)
    prompt = encode(engine, PROMPTS[0])
    engine.add_request("slow", prompt, SamplingParams(temperature=0, max_tokens=32, regex=PHONE_REGEX))
    engine.add_request("free", prompt, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    outputs = []
    while "free" in engine.requests:
        outputs += engine.step()
    assert {out.request_id for out in outputs} == {"free"}
    assert engine.stats().num_waiting == 1 and engine.requests["slow"].sequences[0].num_computed_tokens == 0
    pending.set_result(compiled)
    seq = run_to_completion(engine)["slow"].sequences[0]
    assert seq.finish_reason == "stop"
    check_regex(seq.text, PHONE_REGEX)


def test_a_grammar_that_fails_in_the_background_aborts_its_request(engine, monkeypatch):
    failed: Future = Future()
    monkeypatch.setattr(engine.grammars, "submit", lambda spec: failed)
    engine.add_request("doomed", encode(engine, PROMPTS[0]), SamplingParams(max_tokens=8, regex="a"))
    failed.set_exception(EngineError("invalid regex: nope"))
    results = run_to_completion(engine)
    assert results["doomed"].sequences[0].finish_reason == "abort"
    assert engine.stats().num_used_pages == 0
