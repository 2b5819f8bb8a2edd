"""Where the runtime keeps files it writes for itself (demo models, compiled CPU kernels)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "FLEETSERVE_CACHE"


def cache_root() -> Path:
    """$FLEETSERVE_CACHE if set, else ~/.cache/fleetserve."""
    configured = os.environ.get(ENV_CACHE)
    return Path(configured) if configured else Path.home() / ".cache" / "fleetserve"
