"""What a checkpoint's sentence-transformers files say about its embeddings: pooling, normalization,
maximum length and Matryoshka dimensions. Pure reading, no torch.

- `modules.json` lists the pipeline: Transformer (path ""), Pooling, optionally Normalize. Other
  modules (Dense projections, ...) are refused rather than silently skipped.
- The Pooling folder's `config.json`: `pooling_mode` ("mean" | "cls" | "lasttoken", sentence-transformers
  6) or the older `pooling_mode_*_tokens` flags.
- `max_seq_length`: `sentence_bert_config.json` (older files), else the tokenizer's `model_max_length`
  (where sentence-transformers 6 keeps it).
- Matryoshka: `matryoshka_dimensions` (a list) or `is_matryoshka: true` in `config.json` (vLLM's
  convention); with neither, `dimensions` is refused.

- Text through the chat template: sentence-transformers 6 turns each text into a one-message
  conversation (`{"role": "user", ...}`) rendered by the tokenizer's chat template whenever the
  Transformer module supports the "message" modality: `modality_config` in `sentence_bert_config.json`
  says so (with the content `format`), and files without `modality_config` get it when the tokenizer
  has a chat template. `message_format` records that ("auto" is settled once the tokenizer is loaded,
  see inputs.py).

A checkpoint without `modules.json` (forced with `--is-embedding`) gets the common defaults: CLS pooling
for encoders, last-token pooling for decoders, normalized, plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fleetserve.runtime.engine.models import ModelKind
from fleetserve.runtime.engine.types import EngineError

PoolingMode = Literal["mean", "cls", "lasttoken"]
MessageFormat = Literal["structured", "flat", "auto"]
POOLING_MODES: tuple[PoolingMode, ...] = ("mean", "cls", "lasttoken")
_LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
_UNBOUNDED_TOKENIZER_LENGTH = 1_000_000  # transformers' "no limit" model_max_length is ~1e30


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    pooling: PoolingMode
    normalize: bool
    max_seq_length: int | None  # sentence-transformers' truncation length; None: the model's own limit
    is_matryoshka: bool = False
    matryoshka_dimensions: tuple[int, ...] | None = None  # allowed `dimensions`; None: any up to the size
    from_sentence_transformers: bool = True
    message_format: MessageFormat | None = None  # None: texts are tokenized as they are

    def check_dimensions(self, dimensions: int, size: int) -> str | None:
        """Why `dimensions` cannot be served (None when it can)."""
        if not self.is_matryoshka:
            return "this model does not support the dimensions parameter (it declares no Matryoshka dimensions)"
        if self.matryoshka_dimensions is not None and dimensions not in self.matryoshka_dimensions:
            allowed = ", ".join(map(str, self.matryoshka_dimensions))
            return f"dimensions must be one of {allowed} for this model, got {dimensions}"
        if dimensions > size:
            return f"dimensions must be at most the embedding size {size}, got {dimensions}"
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read {path}: {exc}") from exc
    return data


def _module_kind(entry: dict[str, Any]) -> str:
    """`sentence_transformers.models.Pooling` or `...sentence_transformer.modules.pooling.Pooling` -> Pooling."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def pooling_mode(config: dict[str, Any]) -> PoolingMode:
    mode = config.get("pooling_mode")
    if mode is None:
        active = [name for key, name in _LEGACY_FLAGS.items() if config.get(key)]
        mode = active[0] if len(active) == 1 else (active or ["mean"])
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in POOLING_MODES:
        raise EngineError(f"pooling {mode!r} is not supported (supported: {', '.join(POOLING_MODES)})")
    return mode


def _message_format(model_dir: Path) -> MessageFormat | None:
    sbert = model_dir / "sentence_bert_config.json"
    modality = _read_json(sbert).get("modality_config") if sbert.exists() else None
    if modality is None:
        return "auto"  # older files: decided by the tokenizer having a chat template
    if "message" not in modality:
        return None
    fmt = modality["message"].get("format", "auto")
    if fmt not in ("structured", "flat", "auto"):
        raise EngineError(f"message format {fmt!r} in {sbert} is not supported")
    return fmt


def _max_seq_length(model_dir: Path) -> int | None:
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.exists():
        value = _read_json(sbert).get("max_seq_length")
        if value:
            return int(value)
    tok = model_dir / "tokenizer_config.json"
    if tok.exists():
        value = _read_json(tok).get("model_max_length")
        if isinstance(value, int | float) and 0 < value < _UNBOUNDED_TOKENIZER_LENGTH:
            return int(value)
    return None


def _matryoshka(model_dir: Path) -> tuple[bool, tuple[int, ...] | None]:
    raw = _read_json(model_dir / "config.json")
    dims = raw.get("matryoshka_dimensions")
    if dims:
        return True, tuple(sorted(int(d) for d in dims))
    return bool(raw.get("is_matryoshka", False)), None


def read_embedding_spec(model_dir: Path, kind: ModelKind) -> EmbeddingSpec:
    is_matryoshka, dims = _matryoshka(model_dir)
    modules_path = model_dir / "modules.json"
    if not modules_path.exists():
        return EmbeddingSpec(pooling="cls" if kind == "encoder" else "lasttoken", normalize=True,
                             max_seq_length=None, is_matryoshka=is_matryoshka, matryoshka_dimensions=dims,
                             from_sentence_transformers=False)
    modules = json.loads(modules_path.read_text())
    pooling: PoolingMode | None = None
    normalize = False
    for entry in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind_name = _module_kind(entry)
        if kind_name == "Transformer":
            if entry.get("path", "") not in ("", "."):
                raise EngineError(f"the Transformer module must be at the checkpoint's root, not {entry['path']!r}")
        elif kind_name == "Pooling":
            pooling = pooling_mode(_read_json(model_dir / entry["path"] / "config.json"))
        elif kind_name == "Normalize":
            normalize = True
        else:
            raise EngineError(f"sentence-transformers module {entry.get('type')!r} is not supported "
                              "(supported: Transformer, Pooling, Normalize)")
    if pooling is None:
        raise EngineError(f"{modules_path} has no Pooling module")
    return EmbeddingSpec(pooling=pooling, normalize=normalize, max_seq_length=_max_seq_length(model_dir),
                         is_matryoshka=is_matryoshka, matryoshka_dimensions=dims,
                         message_format=_message_format(model_dir))
