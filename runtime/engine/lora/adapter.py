"""PEFT LoRA adapters: find the directory (local or hub id), read and check it, build its weights.

A PEFT adapter is `adapter_config.json` + `adapter_model.safetensors` (or the legacy
`adapter_model.bin`, refused here: pickles are not loaded). Reading (`read_adapter`) is plain I/O and
JSON checks, so it can run off the engine's thread; building the tensors (`build_adapter`) is torch
work and runs on it. Every refusal is an `AdapterError` whose message says why (the server answers 400).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetserve.runtime.engine.types import EngineError

logger = logging.getLogger(__name__)

# PEFT target names fleetserve can serve (the Llama family's projections)
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
HUB_PATTERNS = [CONFIG_FILE, WEIGHTS_FILE]
# keys like base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight (an adapter name may follow lora_A)
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.[\w-]+)?\.weight$")


class AdapterError(EngineError):
    """An adapter that cannot be loaded; the message says why."""


class AdapterNotFoundError(EngineError):
    """A request names an adapter that is not loaded (the server answers 404)."""


@dataclass(frozen=True, slots=True)
class LoRALimits:
    """What the server was started to accept (`--max-lora-rank`, `--lora-target-modules`)."""

    max_rank: int
    target_modules: frozenset[str]


@dataclass(slots=True)
class AdapterFiles:
    """An adapter read from disk, its config checked; weights still raw safetensors bytes."""

    path: str  # as the user gave it (a directory or a hub id)
    directory: Path
    rank: int
    scaling: float
    target_modules: frozenset[str]
    weights: bytes


@dataclass(eq=False, slots=True)
class LoRAAdapter:
    """A loaded adapter. `version` is unique per load, so a reload under the same name is a new adapter."""

    name: str
    path: str
    version: int
    rank: int
    scaling: float
    target_modules: frozenset[str]
    # (layer, target) -> (A [rank, in], B [out, rank]) in the model's dtype
    weights: dict[tuple[int, str], tuple[Any, Any]] = field(default_factory=dict)
    pinned: bool = False

    @property
    def key(self) -> tuple[str, int]:
        """The prefix-cache key and slot identity of this load."""
        return (self.name, self.version)


def resolve_adapter_dir(path: str) -> Path:
    """A local directory as is; `org/name` is downloaded from the Hugging Face hub (or found in its cache)."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.exists() or path.count("/") != 1 or path.startswith(("/", ".", "~")):
        raise AdapterError(f"LoRA path {path!r} is neither an adapter directory nor a hub id (org/name)")
    from huggingface_hub import snapshot_download  # lazily: only hub users need it

    logger.info("downloading LoRA adapter %s from the Hugging Face hub", path)
    try:
        return Path(snapshot_download(path, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # the hub client raises many types; all mean "cannot get the adapter"
        raise AdapterError(f"cannot download LoRA adapter {path!r} from the Hugging Face hub: {exc}") from exc


def read_adapter(path: str, limits: LoRALimits) -> AdapterFiles:
    """Reads and checks an adapter's config and reads its weights file; no torch (safe off the engine thread)."""
    directory = resolve_adapter_dir(path)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file():
        raise AdapterError(f"LoRA adapter {path!r} has no {CONFIG_FILE}")
    if not weights_path.is_file():
        other = " (adapter_model.bin is not loaded: convert it to safetensors)" if (
            directory / "adapter_model.bin").exists() else ""
        raise AdapterError(f"LoRA adapter {path!r} has no {WEIGHTS_FILE}{other}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{CONFIG_FILE} of LoRA adapter {path!r} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"{CONFIG_FILE} of LoRA adapter {path!r} is not a JSON object")
    rank, scaling, targets = check_config(config, path, limits)
    return AdapterFiles(path, directory, rank, scaling, targets, weights_path.read_bytes())


def check_config(config: dict[str, Any], path: str, limits: LoRALimits) -> tuple[int, float, frozenset[str]]:
    """(rank, scaling, target modules) of a PEFT LoRA config; AdapterError for what cannot be served."""
    where = f"LoRA adapter {path!r}"
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"{where} is a {peft_type} adapter; only LORA is supported")
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterError(f"{where}: {CONFIG_FILE} needs a positive integer `r`, got {rank!r}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise AdapterError(f"{where}: `lora_alpha` must be a number, got {alpha!r}")
    if rank > limits.max_rank:
        raise AdapterError(f"{where} has rank {rank}, above this server's --max-lora-rank {limits.max_rank}")
    unsupported = [
        (config.get("use_dora"), "DoRA (use_dora)"),
        (config.get("bias", "none") != "none", f"bias={config.get('bias')!r}"),
        (config.get("lora_bias"), "lora_bias"),
        (config.get("modules_to_save"), "modules_to_save"),
        (config.get("rank_pattern"), "rank_pattern"),
        (config.get("alpha_pattern"), "alpha_pattern"),
        (config.get("fan_in_fan_out"), "fan_in_fan_out"),
        (config.get("layer_replication"), "layer_replication"),
        (config.get("target_parameters"), "target_parameters"),
    ]
    refused = [name for flag, name in unsupported if flag]
    if refused:
        raise AdapterError(f"{where} uses {', '.join(refused)}, which fleetserve does not serve")
    targets = _target_names(config.get("target_modules"), where)
    disabled = sorted(targets - limits.target_modules)
    if disabled:
        raise AdapterError(f"{where} targets {', '.join(disabled)}, not enabled on this server "
                           f"(--lora-target-modules: {', '.join(sorted(limits.target_modules))})")
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return rank, float(scaling), targets


def _target_names(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str):  # a regex over module paths: which of the supported names it can match
        if value == "all-linear":
            return frozenset(SUPPORTED_TARGETS)
        names = frozenset(t for t in SUPPORTED_TARGETS if re.search(value, f"model.layers.0.self_attn.{t}")
                          or re.search(value, f"model.layers.0.mlp.{t}"))
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = frozenset(v.rsplit(".", 1)[-1] for v in value)
    else:
        raise AdapterError(f"{where}: `target_modules` must be a list of module names, got {value!r}")
    unknown = sorted(names - set(SUPPORTED_TARGETS))
    if unknown:
        raise AdapterError(f"{where} targets {', '.join(unknown)}; supported: {', '.join(SUPPORTED_TARGETS)}")
    if not names:
        raise AdapterError(f"{where} targets no module fleetserve knows ({value!r})")
    return names


def build_adapter(files: AdapterFiles, name: str, version: int, num_layers: int,
                  shapes: dict[str, tuple[int, int]], dtype: Any) -> LoRAAdapter:
    """Parses the weights and checks them against the model: `shapes` maps target -> (in, out) features."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    where = f"LoRA adapter {files.path!r}"
    try:
        tensors = load_safetensors(files.weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise AdapterError(f"{WEIGHTS_FILE} of {where} is not a valid safetensors file: {exc}") from exc
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        m = _KEY.search(key)
        if m is None:
            raise AdapterError(f"{where} has tensor {key!r}, which is not a LoRA A/B weight of a supported module")
        layer, target, which = int(m[1]), m[2], m[3]
        if target not in files.target_modules:
            raise AdapterError(f"{where} has weights for {target}, which its config does not target")
        if layer >= num_layers:
            raise AdapterError(f"{where} has weights for layer {layer}; the model has {num_layers} layers")
        pairs.setdefault((layer, target), {})[which] = tensor
    if not pairs:
        raise AdapterError(f"{where} holds no LoRA weights")
    weights = {}
    for (layer, target), pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{where}: layer {layer} {target} has lora_{''.join(pair)} without its pair")
        a, b = pair["A"], pair["B"]
        in_features, out_features = shapes[target]
        if tuple(a.shape) != (files.rank, in_features) or tuple(b.shape) != (out_features, files.rank):
            raise AdapterError(
                f"{where}: layer {layer} {target} has A {tuple(a.shape)} and B {tuple(b.shape)}; this model needs "
                f"A ({files.rank}, {in_features}) and B ({out_features}, {files.rank})")
        weights[(layer, target)] = (a.to(dtype).contiguous(), b.to(dtype).contiguous())
    return LoRAAdapter(name, files.path, version, files.rank, files.scaling, files.target_modules, weights)
