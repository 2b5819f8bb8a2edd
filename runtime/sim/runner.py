"""`SimulatedRunner`: the ModelRunner of the worker simulator. No model, no KV tensors.

Each step sleeps for the time the profile says the batch would take on its GPU, then returns logits
in which one token per sampling row stands out by far, so the engine's own sampler picks it (its
penalties, grammar masks and stop checks still run). The token is a deterministic pseudo-random
function of the sequence's last token and length, drawn from the vocabulary without special tokens
(so a simulated answer never stops early on EOS; max_tokens and stop strings end it).
"""

from __future__ import annotations

import time

import torch

from fleetserve.runtime.engine.model_runner import LogitRows, StepLogits
from fleetserve.runtime.engine.scheduler import ScheduledSequence
from fleetserve.runtime.sim.profiles import SimProfile, StepWork

CHOSEN_LOGIT = 50.0  # others are 0: the chosen token keeps all but ~vocab * e^-50 of the probability
_MIX_A, _MIX_B, _MASK = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, (1 << 64) - 1


def pseudo_token(last_token: int, length: int, choices: list[int]) -> int:
    """One of `choices`, fixed by (last token, sequence length): the same prompt gives the same text."""
    x = ((last_token + 1) * _MIX_A + length * _MIX_B) & _MASK
    x ^= x >> 31
    x = (x * _MIX_B) & _MASK
    x ^= x >> 29
    return choices[x % len(choices)]


class SimulatedRunner:
    lora = None  # adapters are not simulated: a request naming one gets the engine's 404

    def __init__(self, profile: SimProfile, vocab_size: int, excluded_ids: set[int], time_scale: float = 1.0):
        self.profile = profile
        self.vocab_size = vocab_size
        self.choices = [i for i in range(vocab_size) if i not in excluded_ids]
        self.time_scale = time_scale
        self.num_steps = 0
        self.modelled_s = 0.0  # GPU time of every step so far, as modelled (not scaled)
        self._last_end = 0.0

    def execute(self, batch: list[ScheduledSequence]) -> StepLogits:
        started = time.monotonic()
        rows: list[LogitRows] = []
        chosen: list[tuple[int, int]] = []  # (row, token)
        num_rows = 0
        for item in batch:
            seq = item.seq
            first = num_rows
            if seq.wants_prompt_logprobs:
                num_rows += item.num_new_tokens
            elif item.samples:
                num_rows += 1
            if item.samples:
                chosen.append((num_rows - 1, pseudo_token(seq.token_ids[-1], len(seq.token_ids), self.choices)))
            rows.append(LogitRows(first, num_rows - first))
        logits = torch.zeros((num_rows, self.vocab_size), dtype=torch.float32)
        if chosen:
            index = torch.tensor(chosen, dtype=torch.long)
            logits[index[:, 0], index[:, 1]] = CHOSEN_LOGIT
        modelled = self.profile.step_time([StepWork(i.num_new_tokens, i.seq.num_computed_tokens) for i in batch])
        self.num_steps += 1
        self.modelled_s += modelled
        duration = modelled * self.time_scale
        # the engine's own work since the previous step (sampling, detokenizing, scheduling) counts as
        # part of this step's time when steps run back to back, as a GPU overlaps it (the profile's
        # step overhead already stands for it); so a busy simulated worker keeps the modelled pace
        origin = self._last_end if started - self._last_end < duration else started
        remaining = duration - (time.monotonic() - origin)
        if remaining > 0:
            time.sleep(remaining)
        self._last_end = time.monotonic()
        return StepLogits(logits, rows)
