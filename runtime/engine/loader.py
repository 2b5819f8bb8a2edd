"""Finding a checkpoint (local directory or hub id) and loading its weights into the project's model."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from fleetserve.runtime.engine.config import ModelConfig
from fleetserve.runtime.engine.models import model_class
from fleetserve.runtime.engine.models.llama import LlamaForCausalLM
from fleetserve.runtime.engine.models.rope import RotaryEmbedding
from fleetserve.runtime.engine.types import EngineError

logger = logging.getLogger(__name__)

HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.txt"]


DEMO_SCHEME = "demo://"


def resolve_demo_model(model_path: str) -> Path:
    """``demo://ARCH-SIZE`` (e.g. ``demo://llama-tiny``): the built-in demo model, written on first use."""
    from fleetserve.runtime.demo import default_demo_model_dir

    arch, _, size = model_path.removeprefix(DEMO_SCHEME).partition("-")
    try:
        return default_demo_model_dir(arch, size or "tiny")
    except ValueError as exc:
        raise EngineError(f"{model_path!r}: {exc} (write demo://ARCH-SIZE, e.g. demo://llama-tiny)") from exc


def resolve_model_dir(model_path: str) -> Path:
    """A local directory as is; ``demo://ARCH-SIZE`` the demo model; anything else a hub id downloaded
    (or found in the HF cache)."""
    if model_path.startswith(DEMO_SCHEME):
        return resolve_demo_model(model_path)
    path = Path(model_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise EngineError(f"{path} has no config.json: not a Hugging Face checkpoint")
        return path
    if path.exists() or model_path.count("/") != 1:
        raise EngineError(f"model path {model_path!r} is neither a checkpoint directory nor a hub id (org/name)")
    from huggingface_hub import snapshot_download  # imported lazily: only hub users need it

    logger.info("downloading %s from the Hugging Face hub", model_path)
    try:
        return Path(snapshot_download(model_path, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # the hub client raises many types; all mean "cannot get the model"
        raise EngineError(f"cannot download {model_path!r} from the Hugging Face hub: {exc}") from exc


def iter_safetensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not files:
        raise EngineError(f"{model_dir} has no .safetensors weights")
    for name in files:
        with safe_open(str(model_dir / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield key, f.get_tensor(key)


# (our parameter suffix, index within the fused matrix) for each fused HF projection
_FUSED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


def load_model(cfg: ModelConfig, device: torch.device) -> LlamaForCausalLM:
    with torch.device("meta"):
        model = model_class(cfg.architecture)(cfg)
    model = model.to_empty(device=device).to(cfg.dtype)
    # the rope tables were created on meta: rebuild them on the device, in float32
    model.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_model_len, cfg.rope_theta, cfg.rope_scaling).to(device)
    params = dict(model.named_parameters())
    pending: dict[str, dict[int, torch.Tensor]] = {}
    loaded: set[str] = set()
    for hf_name, tensor in iter_safetensors(Path(cfg.model_path)):
        name = hf_name.removeprefix("model.")
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        parts = name.rsplit(".", 2)  # [..., proj, weight|bias]
        if len(parts) == 3 and parts[1] in _FUSED:
            fused, slot = _FUSED[parts[1]]
            target = f"{parts[0]}.{fused}.{parts[2]}"
            pending.setdefault(target, {})[slot] = tensor
            parts_needed = 3 if fused == "qkv_proj" else 2
            if len(pending[target]) == parts_needed:
                pieces = pending.pop(target)
                _copy(params, target, torch.cat([pieces[i] for i in range(parts_needed)]))
                loaded.add(target)
            continue
        if name not in params:
            logger.debug("ignoring checkpoint tensor %s", hf_name)
            continue
        _copy(params, name, tensor)
        loaded.add(name)
    missing = sorted(set(params) - loaded)
    if missing:
        raise EngineError(f"checkpoint {cfg.model_path} lacks weights: {', '.join(missing[:8])}")
    return model.eval()


def _copy(params: dict[str, torch.nn.Parameter], name: str, tensor: torch.Tensor) -> None:
    param = params.get(name)
    if param is None:
        raise EngineError(f"unexpected checkpoint tensor {name}")
    if param.shape != tensor.shape:
        raise EngineError(f"shape of {name}: checkpoint {tuple(tensor.shape)}, model {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(tensor.to(param.dtype))
