"""Which queued inputs go into the next forward: a pure core, so the policy is table-testable.

Inputs are taken in arrival order until the next would exceed the token budget or the input cap (a
request with many inputs may be split over consecutive forwards); a forward always takes at least one
input, so an input longer than the budget still runs (alone).
"""

from __future__ import annotations

from collections.abc import Sequence


def take_batch(lengths: Sequence[int], max_tokens: int, max_inputs: int) -> int:
    """How many of the queued inputs (their token counts, oldest first) the next forward takes."""
    total = 0
    for count, n in enumerate(lengths):
        if count == max_inputs or (count > 0 and total + n > max_tokens):
            return count
        total += n
    return len(lengths)
