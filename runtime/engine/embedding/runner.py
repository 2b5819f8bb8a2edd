"""One embedding forward: token-id lists -> pooled (and, per the checkpoint, normalized) vectors.

Encoders (BERT family) run bidirectional attention; decoders (the Llama family's own model code, with no
KV cache and no LM head) run causal attention, and their final norm's output is pooled. Either way the
sequences of a batch are concatenated into one flat batch (see attention.py).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from fleetserve.runtime.engine.config import EngineConfig, ModelConfig, resolve_dtype
from fleetserve.runtime.engine.embedding.attention import RaggedAttention
from fleetserve.runtime.engine.embedding.pooling import normalize, pool
from fleetserve.runtime.engine.embedding.st_config import EmbeddingSpec, read_embedding_spec
from fleetserve.runtime.engine.loader import iter_safetensors, load_model, resolve_model_dir
from fleetserve.runtime.engine.models import ModelKind, model_entry
from fleetserve.runtime.engine.models.bert import BertConfig, load_bert
from fleetserve.runtime.engine.types import EngineError

logger = logging.getLogger(__name__)


class _DecoderBackend:
    """The generation model's attention-backend interface over whole sequences (no cache)."""

    def __init__(self, attention: RaggedAttention):
        self.attention = attention

    def forward(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attention.forward(q, k, v)


class EmbeddingModelInfo(NamedTuple):
    """What the server reports about the model (`/get_model_info`, /v1/models)."""

    model_path: str
    architecture: str
    kind: ModelKind
    hidden_size: int
    vocab_size: int
    max_model_len: int  # the longest input served: the model's limit, capped by max_seq_length
    dtype: torch.dtype


class EmbeddingRunner:
    def __init__(self, model: nn.Module, kind: ModelKind, spec: EmbeddingSpec, info: EmbeddingModelInfo,
                 device: torch.device):
        self.model = model
        self.kind = kind
        self.spec = spec
        self.info = info
        self.device = device
        self.attention = RaggedAttention(causal=kind == "decoder")
        self._backend = _DecoderBackend(self.attention)

    @torch.inference_mode()
    def embed(self, inputs: list[list[int]]) -> np.ndarray:
        """One forward over every input -> [len(inputs), hidden] float32 (full size; normalized if the
        checkpoint says so)."""
        lengths = [len(ids) for ids in inputs]
        flat = [t for ids in inputs for t in ids]
        input_ids = torch.tensor(flat, dtype=torch.long, device=self.device)
        positions = torch.cat([torch.arange(n) for n in lengths]).to(self.device)
        self.attention.plan(lengths, self.device)
        hidden = self._hidden(input_ids, positions)
        vectors = pool(hidden, lengths, self.spec.pooling)
        if self.spec.normalize:
            vectors = normalize(vectors)
        return vectors.cpu().numpy()

    def _hidden(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.kind == "encoder":
            return self.model(input_ids, positions, self.attention)
        m: Any = self.model  # LlamaForCausalLM: its modules without the logits
        h = m.embed_tokens(input_ids)
        rope = m.rotary.tables(positions, h.dtype)
        for layer in m.layers:
            h = layer(rope, h, self._backend)
        return m.norm(h)


def build_runner(config: EngineConfig, device: torch.device) -> tuple[EmbeddingRunner, Path]:
    """Loads the checkpoint named by `config.model_path` for embeddings; returns the runner and its dir."""
    import json

    model_dir = resolve_model_dir(config.model_path)
    raw = json.loads((model_dir / "config.json").read_text())
    arch = (raw.get("architectures") or ["?"])[0]
    entry = model_entry(arch)
    if entry is None:
        raise EngineError(f"unsupported architecture {arch!r} for embeddings")
    spec = read_embedding_spec(model_dir, entry.kind)
    dtype = resolve_dtype(config.dtype, raw, device.type)
    model: nn.Module
    if entry.kind == "encoder":
        bert_cfg = BertConfig.from_pretrained(model_dir, dtype, config.context_length)
        model = load_bert(bert_cfg, iter_safetensors(model_dir), device)
        hidden, vocab, limit = bert_cfg.hidden_size, bert_cfg.vocab_size, bert_cfg.max_model_len
    else:
        cfg = ModelConfig.from_pretrained(model_dir, config.dtype, device.type, config.context_length)
        # embeddings never compute logits: no LM head is built, a checkpoint's lm_head.weight is skipped
        model = load_model(dataclasses.replace(cfg, tie_word_embeddings=True), device)
        hidden, vocab, limit = cfg.hidden_size, cfg.vocab_size, cfg.max_model_len
    if spec.max_seq_length is not None:
        limit = min(limit, spec.max_seq_length)
    info = EmbeddingModelInfo(str(model_dir), arch, entry.kind, hidden, vocab, limit, dtype)
    logger.info("embedding model %s (%s, %s pooling%s, up to %d tokens, %s) on %s", model_dir, arch,
                spec.pooling, ", normalized" if spec.normalize else "", limit, dtype, device)
    return EmbeddingRunner(model, entry.kind, spec, info, device), model_dir
