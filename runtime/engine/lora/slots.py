"""Which adapter sits in which device slot: `num_slots` slots, least recently used swapped out first.

Pure bookkeeping (no tensors): `assign` takes the adapters of the next step and answers which
of them must be copied into which slot. The scheduler guarantees a step never holds more distinct
adapters than there are slots, so an assignment always exists; pinned adapters never leave their slot.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import NamedTuple


class Placement(NamedTuple):
    key: Hashable
    slot: int


class SlotTable:
    def __init__(self, num_slots: int):
        self.num_slots = num_slots
        self.slot_of: dict[Hashable, int] = {}
        self.lru: OrderedDict[Hashable, None] = OrderedDict()  # least recently used first
        self.free: list[int] = list(range(num_slots - 1, -1, -1))  # pop() gives slot 0 first
        self.pinned: set[Hashable] = set()
        self.num_swaps = 0  # adapters copied into a slot

    def assign(self, keys: Iterable[Hashable]) -> list[Placement]:
        """Puts every key in a slot; returns the keys that were not in one (their weights must be copied)."""
        wanted = list(dict.fromkeys(keys))
        assert len(wanted) <= self.num_slots, "more adapters in one step than slots"
        placed = []
        for key in wanted:
            if key in self.slot_of:
                self.lru.move_to_end(key)
                continue
            slot = self.free.pop() if self.free else self._evict(keep=set(wanted))
            self.slot_of[key] = slot
            self.lru[key] = None
            placed.append(Placement(key, slot))
            self.num_swaps += 1
        return placed

    def pin(self, key: Hashable) -> Placement | None:
        """Keeps `key` in a slot for good; returns its placement when it was not in one yet."""
        placed = self.assign([key]) if key not in self.slot_of else []
        self.pinned.add(key)
        return placed[0] if placed else None

    def discard(self, key: Hashable) -> int | None:
        """Frees the key's slot (an unloaded adapter) and returns it; a later assign() can place it again."""
        self.pinned.discard(key)
        slot = self.slot_of.pop(key, None)
        if slot is not None:
            del self.lru[key]
            self.free.append(slot)
        return slot

    def _evict(self, keep: set[Hashable]) -> int:
        for key in self.lru:
            if key not in keep and key not in self.pinned:
                slot = self.slot_of.pop(key)
                del self.lru[key]
                return slot
        raise AssertionError("no slot can be freed: every slot holds a pinned adapter or one of this step")
