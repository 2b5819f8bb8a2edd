"""LoRA for one engine: the wrapped model, the loaded adapters, the device slots, each step's layout.

Everything here runs on the engine's thread except `read`, which is torch-free file I/O (the async
engine runs it off the step loop). The scheduler asks `fits` before it admits a sequence whose adapter
is not running yet; the model runner calls `prepare` before each forward.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fleetserve.runtime.engine.config import ModelConfig
from fleetserve.runtime.engine.lora.adapter import (
    SUPPORTED_TARGETS,
    AdapterError,
    AdapterFiles,
    LoRAAdapter,
    LoRALimits,
    build_adapter,
    read_adapter,
)
from fleetserve.runtime.engine.lora.layers import StepState, wrap_projections
from fleetserve.runtime.engine.lora.ops import build_lora_batch, packed_scales, prefer_packed, segment_runs
from fleetserve.runtime.engine.lora.registry import AdapterRegistry
from fleetserve.runtime.engine.lora.slots import SlotTable
from fleetserve.runtime.engine.lora.weights import GroupSpec, SlotWeights
from fleetserve.runtime.engine.models.llama import LORA_PROJECTIONS, lora_target_shapes

logger = logging.getLogger(__name__)

DEFAULT_MAX_RANK = 64


@dataclass(frozen=True, slots=True)
class LoRASettings:
    max_loras_per_batch: int = 8
    max_loaded_loras: int | None = None
    max_lora_rank: int = DEFAULT_MAX_RANK
    target_modules: frozenset[str] = frozenset(SUPPORTED_TARGETS)

    def __post_init__(self) -> None:
        if self.max_loras_per_batch < 1:
            raise AdapterError(f"--max-loras-per-batch must be at least 1, got {self.max_loras_per_batch}")
        if self.max_lora_rank < 1:
            raise AdapterError(f"--max-lora-rank must be at least 1, got {self.max_lora_rank}")
        if self.max_loaded_loras is not None and self.max_loaded_loras < 1:
            raise AdapterError(f"--max-loaded-loras must be at least 1, got {self.max_loaded_loras}")
        unknown = sorted(self.target_modules - set(SUPPORTED_TARGETS))
        if unknown or not self.target_modules:
            raise AdapterError(f"--lora-target-modules: unknown {', '.join(unknown) or '(none given)'}; "
                               f"choose from {', '.join(SUPPORTED_TARGETS)} or all")


class LoRAManager:
    def __init__(self, model: nn.Module, cfg: ModelConfig, settings: LoRASettings, device: torch.device,
                 packed: bool | None = None):
        """`packed`: use the packed form of the op (ops.py); default on CPU."""
        self.settings = settings
        self.packed = device.type == "cpu" if packed is None else packed
        self.limits = LoRALimits(settings.max_lora_rank, settings.target_modules)
        self.num_layers = cfg.num_layers
        self.shapes = lora_target_shapes(cfg)
        self.dtype, self.device = cfg.dtype, device
        specs = []
        for path, targets in LORA_PROJECTIONS.items():
            enabled = sum(t in settings.target_modules for t in targets)
            if enabled:
                specs.append(GroupSpec(path, targets, self.shapes[targets[0]][0],
                                       tuple(self.shapes[t][1] for t in targets), enabled))
        self.weights = SlotWeights(specs, cfg.num_layers, settings.max_loras_per_batch, settings.max_lora_rank,
                                   cfg.dtype, device)
        self.step = StepState()
        count = wrap_projections(model.layers, self.weights.groups, self.weights, self.step)
        logger.info("LoRA: %d projections wrapped, %d slots, max rank %d, targets %s", count,
                    settings.max_loras_per_batch, settings.max_lora_rank, ", ".join(sorted(settings.target_modules)))
        self.registry = AdapterRegistry(settings.max_loaded_loras, settings.max_loras_per_batch - 1)
        self.slots = SlotTable(settings.max_loras_per_batch)

    # -- adapters ----------------------------------------------------------------------------------

    def read(self, path: str) -> AdapterFiles:
        """Reads and checks an adapter directory (or hub id); torch-free, safe on any thread."""
        return read_adapter(path, self.limits)

    def add(self, name: str, files: AdapterFiles, pinned: bool = False) -> LoRAAdapter | None:
        """Loads `files` as adapter `name`; returns the adapter it replaces under that name, if any."""
        self.registry.check_add(name, pinned)
        adapter = build_adapter(files, name, self.registry.next_version(), self.num_layers, self.shapes, self.dtype)
        adapter.pinned = pinned
        old = self.registry.add(adapter)
        if old is not None:
            self._free_slot(old)  # requests still running on it put it back in a slot when they run
        if pinned:
            placed = self.slots.pin(adapter.key)
            if placed is not None:
                self.weights.write(placed.slot, adapter)
                self._repack()
        logger.info("LoRA adapter %s loaded from %s (rank %d, scaling %g, targets %s%s)", name, files.path,
                    adapter.rank, adapter.scaling, ",".join(sorted(adapter.target_modules)),
                    ", pinned" if pinned else "")
        return old

    def remove(self, name: str) -> LoRAAdapter:
        adapter = self.registry.remove(name)
        self._free_slot(adapter)
        logger.info("LoRA adapter %s unloaded", name)
        return adapter

    def find(self, ref: str) -> LoRAAdapter | None:
        return self.registry.find(ref)

    @property
    def names(self) -> list[str]:
        return self.registry.names

    # -- scheduling and running --------------------------------------------------------------------

    def fits(self, keys: set[Hashable]) -> bool:
        """Whether one step can hold these adapters (by key) beside the pinned ones."""
        return len(keys | self.slots.pinned) <= self.settings.max_loras_per_batch

    def prepare(self, adapters: Sequence[tuple[int, LoRAAdapter | None]]) -> None:
        """Sets up the next forward: (number of tokens, adapter or None) per sequence, in batch order."""
        by_key = {a.key: a for _, a in adapters if a is not None}
        if not by_key:
            self.step.batch = None
            return
        placements = self.slots.assign(by_key)
        for placed in placements:
            self.weights.write(placed.slot, by_key[placed.key])
        if placements:
            self._repack()
        slot_of = self.slots.slot_of
        segments = [(n, None if a is None else slot_of[a.key]) for n, a in adapters]
        self.step.batch = build_lora_batch(segments, self.device)
        runs, num_tokens = segment_runs(segments), sum(n for n, _ in segments)
        if not self.packed or not prefer_packed(num_tokens, len(runs)):
            self.step.scales = None
        else:
            self.step.scales = {
                path: packed_scales(runs, num_tokens, g.columns, self.weights.scalings, g.packed_width, self.dtype,
                                    self.device)
                for path, g in self.weights.groups.items() if g.packed_width
            }

    def _free_slot(self, adapter: LoRAAdapter) -> None:
        slot = self.slots.discard(adapter.key)
        if slot is not None:
            self.weights.clear(slot)
            self._repack()

    def _repack(self) -> None:
        if self.packed:
            for group in self.weights.groups.values():
                group.repack()
