"""Turns a scheduled batch into tensors, runs the model over the paged KV cache, returns logits."""

from __future__ import annotations

from typing import NamedTuple

import torch

from fleetserve.runtime.engine.attention import AttentionBackend, BatchLayout
from fleetserve.runtime.engine.lora.manager import LoRAManager
from fleetserve.runtime.engine.models.llama import LlamaForCausalLM
from fleetserve.runtime.engine.scheduler import ScheduledSequence


class LogitRows(NamedTuple):
    """Where one scheduled sequence's rows are in the step's logits (num_rows may be 0)."""

    first: int
    num_rows: int


class StepLogits(NamedTuple):
    logits: torch.Tensor  # [rows, vocab] float32
    rows: list[LogitRows]  # one per scheduled sequence, in batch order


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, backend: AttentionBackend, page_size: int, device: torch.device):
        self.model = model
        self.backend = backend
        self.page_size = page_size
        self.device = device
        self.lora: LoRAManager | None = None  # set by the factory when LoRA is enabled

    @torch.inference_mode()
    def execute(self, batch: list[ScheduledSequence]) -> StepLogits:
        input_ids: list[int] = []
        positions: list[int] = []
        logits_index: list[int] = []
        rows: list[LogitRows | None] = [None] * len(batch)
        # with LoRA, the tokens of one adapter are laid out together (one contiguous segment per adapter);
        # `rows` still answers in batch order
        order = list(range(len(batch))) if self.lora is None else sorted(range(len(batch)),
                                                                          key=lambda i: _adapter_order(batch[i]))
        for i in order:
            item = batch[i]
            seq, start = item.seq, item.seq.num_computed_tokens
            end = start + item.num_new_tokens
            offset = len(input_ids)
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            # every position when the prompt's logprobs are wanted, else only the one that samples
            first_row = len(logits_index)
            if seq.wants_prompt_logprobs:
                logits_index.extend(range(offset, offset + item.num_new_tokens))
            elif item.samples:
                logits_index.append(offset + item.num_new_tokens - 1)
            rows[i] = LogitRows(first_row, len(logits_index) - first_row)
        ordered = [batch[i] for i in order]
        layout = BatchLayout(
            query_lens=[item.num_new_tokens for item in ordered],
            kv_lens=[item.seq.num_computed_tokens + item.num_new_tokens for item in ordered],
            page_tables=[item.seq.page_ids for item in ordered],
            page_size=self.page_size,
        )
        self.backend.plan(layout)
        if self.lora is not None:
            self.lora.prepare([(item.num_new_tokens, item.seq.request.lora) for item in ordered])
        dev = self.device
        logits = self.model(
            torch.tensor(input_ids, dtype=torch.long, device=dev),
            torch.tensor(positions, dtype=torch.long, device=dev),
            self.backend,
            torch.tensor(logits_index, dtype=torch.long, device=dev),
        )
        return StepLogits(logits, [r for r in rows if r is not None])


def _adapter_order(item: ScheduledSequence) -> tuple:
    """Base-model sequences first, then each adapter's (by name and load) together."""
    key = item.seq.request.cache_key
    return (0, "", 0) if key is None else (1, *key)
