"""Turning sequence state into the per-step deltas the engine returns."""

from __future__ import annotations

from collections.abc import Iterable

from fleetserve.runtime.engine.sequence import Request, Sequence
from fleetserve.runtime.engine.types import CompletionOutput, FinishReason, RequestOutput


def finish(seq: Sequence, reason: FinishReason, stop_reason: str | int | None = None) -> None:
    seq.status = "finished"
    seq.finish_reason = reason
    seq.stop_reason = stop_reason


def collect_outputs(requests: Iterable[Request]) -> list[RequestOutput]:
    outputs = []
    for req in requests:
        completions = [c for c in (_take_delta(seq) for seq in req.sequences) if c is not None]
        prompt_logprobs = None
        if req.prompt_logprobs is not None and not req.prompt_logprobs_sent \
                and len(req.prompt_logprobs) == req.num_prompt_tokens:
            prompt_logprobs = req.prompt_logprobs
            req.prompt_logprobs_sent = True
        if not completions and prompt_logprobs is None:
            continue
        queue_time = None
        if not req.first_output_sent and req.first_scheduled_time is not None:
            queue_time = req.first_scheduled_time - req.arrival_time
        req.first_output_sent = True
        outputs.append(RequestOutput(
            request_id=req.request_id,
            outputs=completions,
            num_prompt_tokens=req.num_prompt_tokens,
            num_cached_tokens=req.num_cached_tokens,
            prompt_logprobs=prompt_logprobs,
            finished=req.is_finished,
            queue_time=queue_time,
        ))
    return outputs


def _take_delta(seq: Sequence) -> CompletionOutput | None:
    finishing = seq.finish_reason is not None and not seq.finish_sent
    if not seq.new_token_ids and not seq.new_text and not finishing:
        return None
    wants_logprobs = seq.request.params.logprobs is not None
    out = CompletionOutput(
        index=seq.index,
        new_token_ids=seq.new_token_ids,
        new_text=seq.new_text,
        new_logprobs=seq.new_logprobs if wants_logprobs else None,
        finish_reason=seq.finish_reason if finishing else None,
        stop_reason=seq.stop_reason if finishing else None,
    )
    seq.new_token_ids, seq.new_text, seq.new_logprobs = [], "", []
    seq.finish_sent = seq.finish_sent or finishing
    return out


def merge_outputs(earlier: RequestOutput, later: RequestOutput) -> RequestOutput:
    """One delta equal to `earlier` followed by `later` (both of the same request), as a consumer that missed
    a step would want it: token ids, text and logprobs concatenated per choice, the later finish state."""
    by_index = {c.index: c for c in earlier.outputs}
    for c in later.outputs:
        before = by_index.get(c.index)
        if before is None:
            by_index[c.index] = c
            continue
        logprobs = None
        if before.new_logprobs is not None or c.new_logprobs is not None:
            logprobs = (before.new_logprobs or []) + (c.new_logprobs or [])
        by_index[c.index] = CompletionOutput(
            index=c.index,
            new_token_ids=before.new_token_ids + c.new_token_ids,
            new_text=before.new_text + c.new_text,
            new_logprobs=logprobs,
            finish_reason=c.finish_reason or before.finish_reason,
            stop_reason=c.stop_reason if c.finish_reason else before.stop_reason,
        )
    return RequestOutput(
        request_id=later.request_id,
        outputs=sorted(by_index.values(), key=lambda c: c.index),
        num_prompt_tokens=later.num_prompt_tokens,
        num_cached_tokens=later.num_cached_tokens,
        prompt_logprobs=earlier.prompt_logprobs if earlier.prompt_logprobs is not None else later.prompt_logprobs,
        finished=later.finished,
        queue_time=earlier.queue_time if earlier.queue_time is not None else later.queue_time,
    )
