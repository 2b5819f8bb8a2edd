"""Fixtures shared by the engine tests."""

from __future__ import annotations

import pytest

from fleetserve.runtime.engine.async_engine import AsyncEngine
from fleetserve.runtime.engine.config import EngineConfig


@pytest.fixture
async def async_engine(demo_model):
    """A running AsyncEngine on the tiny llama demo model (4-token pages, 256 of them)."""
    eng = AsyncEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", page_size=4,
                                               num_pages=256))
    await eng.start()
    yield eng
    await eng.shutdown()
