"""The model registry: a checkpoint's `architectures[0]` -> the project's model class.

Entries name their module and class instead of importing them, so config readers can consult the
registry without importing torch modules (and without an import cycle: the models import config).

- Decoders (the Llama family) serve generation; the same classes serve decoder embedding models
  (last-token pooling, e.g. Qwen3-Embedding). Checkpoints that sentence-transformers saves from a
  decoder carry the bare transformer (`LlamaModel`, `Qwen3Model`, ...): no LM head, embeddings only.
- Encoders (the BERT family: BERT, RoBERTa, XLM-RoBERTa) are bidirectional and serve embeddings only.
"""

from __future__ import annotations

import importlib
from typing import Literal, NamedTuple

ModelKind = Literal["decoder", "encoder"]


class ModelEntry(NamedTuple):
    family: str  # llama | mistral | qwen2 | qwen3 | bert | roberta
    kind: ModelKind
    module: str  # under fleetserve.runtime.engine.models
    class_name: str
    has_lm_head: bool  # False: a bare transformer checkpoint, only embeddings can be served from it


def _decoder(family: str, has_lm_head: bool = True) -> ModelEntry:
    return ModelEntry(family, "decoder", "llama", "LlamaForCausalLM", has_lm_head)


def _encoder(family: str) -> ModelEntry:
    return ModelEntry(family, "encoder", "bert", "BertModel", False)


ARCHITECTURES: dict[str, ModelEntry] = {
    "LlamaForCausalLM": _decoder("llama"),
    "MistralForCausalLM": _decoder("mistral"),
    "Qwen2ForCausalLM": _decoder("qwen2"),
    "Qwen3ForCausalLM": _decoder("qwen3"),
    "LlamaModel": _decoder("llama", has_lm_head=False),
    "MistralModel": _decoder("mistral", has_lm_head=False),
    "Qwen2Model": _decoder("qwen2", has_lm_head=False),
    "Qwen3Model": _decoder("qwen3", has_lm_head=False),
    "BertModel": _encoder("bert"),
    "RobertaModel": _encoder("roberta"),
    "XLMRobertaModel": _encoder("roberta"),
}

DECODER_ARCHITECTURES = {name: e.family for name, e in ARCHITECTURES.items() if e.kind == "decoder"}


def model_entry(architecture: str) -> ModelEntry | None:
    return ARCHITECTURES.get(architecture)


def model_class(architecture: str) -> type:
    """The model class of a registered architecture (its module is imported on first use)."""
    entry = ARCHITECTURES[architecture]
    module = importlib.import_module(f"{__name__}.{entry.module}")
    return getattr(module, entry.class_name)
