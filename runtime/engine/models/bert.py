"""BERT-family encoders (BERT, RoBERTa, XLM-RoBERTa): all-MiniLM, BGE, E5, GTE shapes, for embeddings.

Post-LayerNorm transformer over a flat batch of whole sequences ([T, hidden]); attention is
bidirectional inside each sequence (`RaggedAttention(causal=False)`). Query/key/value are fused into
one matrix when the weights are loaded. RoBERTa and XLM-RoBERTa number positions from
`pad_token_id + 1` (their first `pad_token_id + 1` position rows are never used), which is also why
their usable length is `max_position_embeddings - pad_token_id - 1` (512 of 514).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fleetserve.runtime.engine.embedding.attention import RaggedAttention
from fleetserve.runtime.engine.models import model_entry
from fleetserve.runtime.engine.types import EngineError

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass(slots=True)
class BertConfig:
    model_path: str
    architecture: str
    family: str  # bert | roberta
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    hidden_act: str
    layer_norm_eps: float
    max_position_embeddings: int
    type_vocab_size: int
    position_offset: int  # first position id (RoBERTa: pad_token_id + 1)
    max_model_len: int
    dtype: torch.dtype

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_pretrained(cls, model_dir: Path, dtype: torch.dtype, context_length: int | None = None) -> BertConfig:
        raw = json.loads((model_dir / "config.json").read_text())
        arch = (raw.get("architectures") or ["?"])[0]
        entry = model_entry(arch)
        if entry is None or entry.kind != "encoder":
            raise EngineError(f"{arch!r} is not a supported encoder (BertModel, RobertaModel, XLMRobertaModel)")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise EngineError(f"position_embedding_type {raw['position_embedding_type']!r} is not supported")
        if raw.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise EngineError(f"hidden_act {raw['hidden_act']!r} is not supported")
        offset = int(raw.get("pad_token_id", 1)) + 1 if entry.family == "roberta" else 0
        max_pos = int(raw["max_position_embeddings"])
        usable = max_pos - offset
        return cls(
            model_path=str(model_dir), architecture=arch, family=entry.family,
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"], intermediate_size=raw["intermediate_size"],
            hidden_act=raw.get("hidden_act", "gelu"), layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            max_position_embeddings=max_pos, type_vocab_size=int(raw.get("type_vocab_size", 2)),
            position_offset=offset, max_model_len=min(context_length or usable, usable), dtype=dtype,
        )


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # every token is of type 0 (single-segment inputs, as sentence-transformers encodes them)
        h = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(h)


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        h = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(h, cfg.intermediate_size)
        self.out = nn.Linear(cfg.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, h: torch.Tensor, attention: RaggedAttention) -> torch.Tensor:
        t = h.shape[0]
        q, k, v = self.qkv(h).view(t, 3, self.num_heads, self.head_dim).unbind(1)
        a = attention.forward(q, k, v).reshape(t, -1)
        h = self.attn_norm(h + self.attn_out(a))
        return self.out_norm(h + self.out(self.act(self.intermediate(h))))


class BertModel(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attention: RaggedAttention) -> torch.Tensor:
        """Flat batch -> last hidden states [T, hidden]; `positions` count from 0 in each sequence."""
        h = self.embeddings(input_ids, positions + self.config.position_offset)
        for layer in self.layers:
            h = layer(h, attention)
        return h


# Hugging Face name (after the model prefix and `encoder.layer.N.`) -> ours
_LAYER_NAMES = {
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "out",
    "output.LayerNorm": "out_norm",
}
_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
_PREFIXES = ("bert.", "roberta.", "model.")
_IGNORED = ("pooler.", "embeddings.position_ids", "cls.", "lm_head.")


def hf_to_ours(name: str) -> tuple[str, int | None] | None:
    """Our parameter name for a checkpoint tensor (and its q/k/v slot), or None when unused."""
    for prefix in _PREFIXES:
        name = name.removeprefix(prefix)
    if name.startswith(_IGNORED):
        return None
    name = name.replace(".gamma", ".weight").replace(".beta", ".bias")  # very old BERT checkpoints
    if name.startswith("embeddings."):
        return name, None
    if not name.startswith("encoder.layer."):
        return None
    index, _, rest = name.removeprefix("encoder.layer.").partition(".")
    module, _, kind = rest.rpartition(".")
    if module in _QKV:
        return f"layers.{index}.qkv.{kind}", _QKV.index(module)
    if module in _LAYER_NAMES:
        return f"layers.{index}.{_LAYER_NAMES[module]}.{kind}", None
    return None


def load_bert(cfg: BertConfig, tensors: Iterable[tuple[str, torch.Tensor]], device: torch.device) -> BertModel:
    with torch.device("meta"):
        model = BertModel(cfg)
    model = model.to_empty(device=device).to(cfg.dtype)
    params = dict(model.named_parameters())
    pending: dict[str, dict[int, torch.Tensor]] = {}
    loaded: set[str] = set()
    for hf_name, tensor in tensors:
        target = hf_to_ours(hf_name)
        if target is None:
            continue
        name, slot = target
        if slot is not None:
            pending.setdefault(name, {})[slot] = tensor
            if len(pending[name]) < 3:
                continue
            pieces = pending.pop(name)
            tensor = torch.cat([pieces[0], pieces[1], pieces[2]])
        param = params.get(name)
        if param is None or param.shape != tensor.shape:
            shape = None if param is None else tuple(param.shape)
            raise EngineError(f"checkpoint tensor {hf_name} {tuple(tensor.shape)} does not fit the model ({shape})")
        with torch.no_grad():
            param.copy_(tensor.to(param.dtype))
        loaded.add(name)
    missing = sorted(set(params) - loaded)
    if missing:
        raise EngineError(f"checkpoint {cfg.model_path} lacks weights: {', '.join(missing[:8])}")
    return model.eval()
