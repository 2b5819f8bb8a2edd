"""Write the demo model as a Hugging Face checkpoint directory."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save

from fleetserve.runtime.demo.spec import build_config, dims_for
from fleetserve.runtime.demo.tokenizer import ENDOFTEXT, IM_END, added_token_ids, write_tokenizer_files
from fleetserve.runtime.demo.weights import init_weights

# Bump whenever the written files change for the same arguments (it names the cache directories).
DEMO_MODEL_VERSION = 2

CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_demo_model(path: str | Path, arch: str = "llama", seed: int = 0, size: str = "tiny",
                     sliding_window: int | None = None) -> Path:
    """Write the demo checkpoint for (arch, seed, size) into `path` (created if missing); return it.
    `sliding_window`: a sliding-window variant (qwen2, qwen3, mistral; spec.py says which layers slide).

    The same arguments always produce byte-identical files. Raises ValueError for an unknown arch or size.
    """
    dims_for(arch, size)  # validates arch and size before anything is written
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer_files(directory, arch)
    token_ids = added_token_ids(tokenizer, arch)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    _write_json(directory / "config.json", build_config(arch, size, vocab_size, token_ids, sliding_window))
    _write_json(
        directory / "generation_config.json",
        {
            "bos_token_id": token_ids[ENDOFTEXT],
            "eos_token_id": [token_ids[IM_END], token_ids[ENDOFTEXT]],
            "pad_token_id": token_ids[ENDOFTEXT],
        },
    )
    # save() + write_bytes rather than save_file, which creates the file with mode 0600 whatever the umask.
    weights = init_weights(arch, size, vocab_size, seed)
    (directory / "model.safetensors").write_bytes(save(weights, metadata={"format": "pt"}))
    return directory
