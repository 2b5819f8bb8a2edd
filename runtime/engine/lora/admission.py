"""The scheduler's LoRA rule: never more distinct adapters in a step than device slots, and no starvation.

A step's batch is drawn from the running sequences, so it is enough that the running sequences never
hold more distinct adapters (beside the pinned ones) than there are slots. A waiting sequence whose
adapter is not running yet is admitted only if its adapter fits. Once one has to wait for a slot,
sequences of the running adapters stop overtaking it (base-model sequences still may, they need no
slot): the running adapters drain, a slot frees up, and the waiting one takes it (S-LoRA's rule).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetserve.runtime.engine.sequence import Sequence

Fits = Callable[[set[Hashable]], bool]


class AdapterSlots:
    """One admission pass's view of the adapters in the running batch."""

    __slots__ = ("active", "fits", "is_slot_awaited")

    def __init__(self, running: Iterable[Sequence], fits: Fits):
        self.active = {s.request.cache_key for s in running if s.request.cache_key is not None}
        self.fits = fits
        self.is_slot_awaited = False  # an earlier waiting sequence is waiting for a slot

    def admits(self, seq: Sequence) -> bool:
        key = seq.request.cache_key
        if key is None:
            return True
        if self.is_slot_awaited:
            return False
        if key in self.active or self.fits(self.active | {key}):
            return True
        self.is_slot_awaited = True
        return False

    def take(self, seq: Sequence) -> None:
        if seq.request.cache_key is not None:
            self.active.add(seq.request.cache_key)
