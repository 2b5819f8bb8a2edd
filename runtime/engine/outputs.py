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
