"""A per-user cache of written demo models, safe when several processes ask for the same one at once."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fleetserve.runtime.demo.checkpoint import DEMO_MODEL_VERSION, write_demo_model
from fleetserve.runtime.demo.spec import dims_for
from fleetserve.runtime.paths import cache_root


def default_demo_model_dir(arch: str = "llama", size: str = "tiny") -> Path:
    """The directory of the seed-0 demo model for (arch, size), written on first use.

    The model is written into a private temporary directory next to the target and renamed into place, so
    a reader never sees a half-written model; when two processes race, the first rename wins and the loser
    discards its copy.
    """
    dims_for(arch, size)
    root = cache_root()
    target = root / f"demo-{arch}-{size}-seed0-v{DEMO_MODEL_VERSION}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        write_demo_model(scratch, arch=arch, seed=0, size=size)
        scratch.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
