"""Fixtures of the LoRA tests: PEFT adapters for the demo checkpoints, written once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .adapters import SPECS, AdapterSpec, make_adapter


@pytest.fixture(scope="session")
def lora_adapters(demo_model, tmp_path_factory) -> Callable[..., dict[str, Path]]:
    """`lora_adapters(arch)` -> {name: adapter dir} of SPECS for the tiny demo model of that arch."""
    made: dict[str, dict[str, Path]] = {}

    def get(arch: str = "llama") -> dict[str, Path]:
        if arch not in made:
            base, root = demo_model(arch), tmp_path_factory.mktemp(f"lora-{arch}")
            made[arch] = {s.name: make_adapter(base, root / s.name, s) for s in SPECS}
        return made[arch]

    return get


@pytest.fixture(scope="session")
def extra_adapter(demo_model, tmp_path_factory) -> Callable[..., Path]:
    """`extra_adapter(spec, arch="llama")` -> the dir of one more adapter (e.g. other weights for a reload)."""
    made: dict[tuple, Path] = {}

    def get(spec: AdapterSpec, arch: str = "llama") -> Path:
        key = (spec, arch)
        if key not in made:
            made[key] = make_adapter(demo_model(arch), tmp_path_factory.mktemp(f"extra-{spec.name}") / spec.name, spec)
        return made[key]

    return get
