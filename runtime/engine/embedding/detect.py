"""Is a checkpoint an embedding model? Read from its files (`fleetserve serve` decides which engine to
build; `--is-embedding` forces embeddings for any supported checkpoint, as SGLang's flag does)."""

from __future__ import annotations

import json
from pathlib import Path

from fleetserve.runtime.engine.models import model_entry


def is_embedding_checkpoint(model_dir: Path) -> bool:
    """True for sentence-transformers checkpoints (`modules.json`), encoders (BERT family) and bare
    decoders saved without an LM head (`Qwen3Model`, ...): none of them can generate."""
    if (model_dir / "modules.json").exists():
        return True
    try:
        raw = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    entry = model_entry((raw.get("architectures") or ["?"])[0])
    return entry is not None and (entry.kind == "encoder" or not entry.has_lm_head)
