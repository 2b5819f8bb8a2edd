"""Fixtures shared by the whole suite: demo-model checkpoints written once per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`demo_model(arch="llama", size="tiny", seed=0)` -> the directory of that checkpoint."""
    from fleetserve.runtime.demo import write_demo_model

    made: dict[tuple[str, str, int], Path] = {}

    def get(arch: str = "llama", size: str = "tiny", seed: int = 0) -> Path:
        key = (arch, size, seed)
        if key not in made:
            made[key] = write_demo_model(tmp_path_factory.mktemp(f"demo-{arch}-{size}-{seed}"), arch, seed, size)
        return made[key]

    return get
