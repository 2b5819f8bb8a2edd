"""Small drivers shared by the engine tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import RequestOutput, TokenLogprob


@dataclass
class Collected:
    """Everything one sequence produced, accumulated over steps."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    num_finishes: int = 0


@dataclass
class RequestResult:
    sequences: dict[int, Collected] = field(default_factory=dict)
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finished: bool = False


def absorb(results: dict[str, RequestResult], out: RequestOutput) -> None:
    res = results.setdefault(out.request_id, RequestResult())
    res.num_prompt_tokens, res.num_cached_tokens = out.num_prompt_tokens, out.num_cached_tokens
    if out.prompt_logprobs is not None:
        assert res.prompt_logprobs is None, "prompt logprobs sent twice"
        res.prompt_logprobs = out.prompt_logprobs
    for c in out.outputs:
        seq = res.sequences.setdefault(c.index, Collected())
        assert seq.finish_reason is None, "output after finish"
        seq.token_ids += c.new_token_ids
        seq.text += c.new_text
        seq.logprobs += c.new_logprobs or []
        if c.finish_reason is not None:
            seq.finish_reason = c.finish_reason
            seq.num_finishes += 1
    res.finished = out.finished


def run_to_completion(engine: LLMEngine, max_steps: int = 100_000) -> dict[str, RequestResult]:
    results: dict[str, RequestResult] = {}
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            return results
        for out in engine.step():
            absorb(results, out)
    raise AssertionError("engine did not finish")
