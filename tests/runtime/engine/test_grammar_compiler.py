"""The grammar compiler cache and the bitmask plumbing, against xgrammar on the demo tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
import xgrammar as xgr
from transformers import AutoTokenizer

from fleetserve.runtime.engine.grammar_compiler import (
    CompiledConstraint,
    GrammarCompilerCache,
    GrammarSpec,
    grammar_spec,
)
from fleetserve.runtime.engine.grammar_matcher import (
    GrammarMaskBuilder,
    SequenceGrammar,
    unpack_bitmask,
    unpack_bitmask_torch,
)
from fleetserve.runtime.engine.types import EngineError, SamplingParams
from tests.structured_cases import EBNF_GRAMMAR, PHONE_REGEX, SCHEMAS


@pytest.fixture(scope="module")
def tokenizer(demo_model):
    return AutoTokenizer.from_pretrained(str(demo_model("llama")))


@pytest.fixture(scope="module")
def cache(tokenizer):
    cache = GrammarCompilerCache(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    yield cache
    cache.shutdown()


def run_text(cache: GrammarCompilerCache, spec: GrammarSpec, text: str) -> SequenceGrammar:
    """A matcher fed ``text`` token by token (the tokenizer's own split)."""
    grammar = SequenceGrammar(cache.compile(spec), cache.vocab_size)
    for token in cache.tokenizer.encode(text, add_special_tokens=False):
        assert grammar.accept(token), f"token {token} refused"
    return grammar


@pytest.mark.parametrize(("params", "expected"), [
    (SamplingParams(), None),
    (SamplingParams(json_schema='{"type": "integer"}'), GrammarSpec("json_schema", '{"type": "integer"}')),
    (SamplingParams(json_object=True), GrammarSpec("json_object", '{"type": "object"}')),
    (SamplingParams(regex="a+"), GrammarSpec("regex", "a+")),
    (SamplingParams(ebnf='root ::= "a"'), GrammarSpec("ebnf", 'root ::= "a"')),
])
def test_grammar_spec_of_params(params, expected):
    assert grammar_spec(params) == expected


def test_every_case_compiles_and_the_cache_shares_futures(cache):
    specs = [GrammarSpec("json_schema", json.dumps(s)) for s in SCHEMAS.values()]
    specs += [GrammarSpec("regex", PHONE_REGEX), GrammarSpec("ebnf", EBNF_GRAMMAR), GrammarSpec("json_object", "{}")]
    for spec in specs:
        compiled = cache.compile(spec)
        assert isinstance(compiled, CompiledConstraint) and isinstance(compiled.grammar, xgr.CompiledGrammar)
        assert (compiled.token_filter is not None) == spec.kind.startswith("json")
        assert cache.submit(spec) is cache.submit(GrammarSpec(spec.kind, spec.text))


@pytest.mark.parametrize(("spec", "reason"), [
    (GrammarSpec("json_schema", '{"type": "foo"}'), 'invalid JSON schema (response_format.json_schema.schema): Unsupported type "foo"'),
    (GrammarSpec("json_schema", '{"type":'), "invalid JSON schema"),
    (GrammarSpec("regex", "(ab"), "invalid regex: Regex parsing error at position 4: The parenthesis is not closed."),
    (GrammarSpec("ebnf", "root ::= yes"), 'invalid EBNF grammar: EBNF parser error at line 1, column 10: Rule "yes" is not defined'),
])
def test_invalid_constraints_raise_engine_error_with_xgrammar_reason(cache, spec, reason):
    with pytest.raises(EngineError) as info:
        cache.compile(spec)
    assert str(info.value).startswith(reason)
    assert ".cc:" not in str(info.value)  # no C++ source location


def test_json_whitespace_is_bounded(cache):
    """any_whitespace=False: the fixed separators and nothing else, so no loop in spaces."""
    spec = GrammarSpec("json_schema", json.dumps(SCHEMAS["enums"]))
    grammar = SequenceGrammar(cache.compile(spec), cache.vocab_size)
    assert not grammar.matcher.accept_string(" ")
    assert grammar.matcher.accept_string('{"color": "red", ')
    assert not grammar.matcher.accept_string(" ")
    obj = SequenceGrammar(cache.compile(GrammarSpec("json_object", '{"type": "object"}')), cache.vocab_size)
    assert obj.matcher.accept_string('{"a": 1')
    assert not obj.matcher.accept_string("  ")


def test_json_strings_never_take_raw_control_characters(cache):
    """xgrammar 0.2.8 lets a maxLength string take U+000C raw; the JSON token filter bans it."""
    spec = GrammarSpec("json_schema", json.dumps({"type": "string", "maxLength": 10}))
    form_feed = cache.tokenizer.convert_tokens_to_ids("Č")  # byte-level BPE's spelling of b"\x0c"
    assert cache.tokenizer.decode([form_feed]) == "\x0c"
    grammar = run_text(cache, spec, '"ab')
    mask = GrammarMaskBuilder(cache.vocab_size).build([grammar], torch.device("cpu"))[0]
    assert not mask[form_feed]
    assert mask[cache.tokenizer.encode("c", add_special_tokens=False)[0]]
    assert xgr.GrammarMatcher(cache.compile(spec).grammar).accept_string('"\x0c')  # the bug being filtered


def test_grammar_finishes_when_only_a_stop_token_may_follow(cache):
    phone = GrammarSpec("regex", PHONE_REGEX)
    grammar = run_text(cache, phone, "123-456-789")
    assert not grammar.is_finished
    grammar.accept(cache.tokenizer.encode("0", add_special_tokens=False)[0])
    assert grammar.is_finished and not grammar.matcher.is_terminated()
    # complete but extendable ("7" could become "77"): not finished until the stop token
    digits = run_text(cache, GrammarSpec("regex", r"\d{1,2}"), "7")
    assert digits.matcher.is_completed() and not digits.is_finished
    assert digits.accept(cache.tokenizer.eos_token_id) and digits.is_finished


def test_a_refused_token_finishes_the_grammar(cache):
    grammar = SequenceGrammar(cache.compile(GrammarSpec("regex", "[0-9]+")), cache.vocab_size)
    assert not grammar.accept(cache.tokenizer.encode("a", add_special_tokens=False)[0])
    assert grammar.is_finished


def test_mask_builder_allows_what_the_grammar_allows(cache):
    phone = SequenceGrammar(cache.compile(GrammarSpec("regex", PHONE_REGEX)), cache.vocab_size)
    builder = GrammarMaskBuilder(cache.vocab_size)
    mask = builder.build([None, phone], torch.device("cpu"))
    assert mask is not None and mask.shape == (2, cache.vocab_size) and mask.dtype == torch.bool
    assert mask[0].all()
    allowed = {cache.tokenizer.decode([t]) for t in mask[1].nonzero().flatten().tolist()}
    assert allowed and all(text and text[0].isdigit() for text in allowed)
    assert "1" in allowed and "-" not in allowed
    assert builder.build([None, None], torch.device("cpu")) is None


def test_unpack_bitmask_against_shifts():
    bitmask = torch.randint(-(2**31), 2**31 - 1, (3, 7), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    reference = ((bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1).view(3, -1)[:, :200].bool()
    assert torch.equal(unpack_bitmask(bitmask, 200), reference)
    assert torch.equal(unpack_bitmask_torch(bitmask, 200), reference)  # the path for GPU devices
