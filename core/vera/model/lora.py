"""LoRA adapters for studios: low-rank updates on every stream's attention and FFN, through peft.

A fine-tune on a few hundred of a studio's own layered shots trains only the adapters (the base weights stay
frozen), and saves them as one small safetensors file that a bundle references:

    bundle.json   "lora": {"path": "lora.safetensors", "scale": 1.0}

`load_bundle` applies it at load time, merged into the base weights (W + scale * B A), so rendering costs
nothing extra. The file holds the adapter tensors under the checkpoint's stream-first names
(`edit.blocks.0.self_attn.q.lora_A.weight`) and its settings (rank, alpha, targets) as JSON metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vera.atomic import atomic_path
from vera.errors import BadInput
from vera.jsonio import parse
from vera.model.configs import STREAMS
from vera.model.dit import block_first_key, stream_first_key

# Linear layers of a stream's block that get adapters (names inside a WanBlock).
TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
           "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
METADATA_KEY = "vera_lora"


def target_pattern(targets=TARGETS) -> str:
    """peft's target_modules as a regex over full module names: these layers of every stream at every depth."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise BadInput(f"lora: unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    layers = "|".join(t.replace(".", r"\.") for t in targets)
    return rf"blocks\.\d+\.({'|'.join(STREAMS)})\.({layers})"


def lora_settings(rank: int, alpha: float | None = None, targets=TARGETS) -> dict:
    """Checked adapter settings; alpha defaults to the rank (scale alpha/rank = 1)."""
    if int(rank) < 1:
        raise BadInput(f"lora: rank must be at least 1, got {rank}")
    target_pattern(targets)
    return {"rank": int(rank), "alpha": float(rank if alpha is None else alpha), "targets": list(targets)}


def add_lora(model: torch.nn.Module, rank: int, alpha: float | None = None, targets=TARGETS) -> dict:
    """Freeze `model` and inject trainable adapters in place; returns the settings to save with them."""
    settings = lora_settings(rank, alpha, targets)
    model.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=settings["rank"], lora_alpha=settings["alpha"],
                                       target_modules=target_pattern(targets)), model)
    return settings


def adapter_state(state: dict) -> dict:
    """The adapter tensors of a (peft-injected) model's state dict, under the file's stream-first names."""
    return {stream_first_key(k.replace(".default.", ".")): v for k, v in state.items() if ".lora_" in k}


def save_lora(state: dict, settings: dict, path: str | Path) -> Path:
    """Write the adapters of `state` (a model's state dict, or an EMA of it) to `path`, atomically."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in adapter_state(state).items()}
    if not tensors:
        raise ValueError("save_lora: the state holds no LoRA adapters")
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(settings)})
    return path


def is_vera_lora(path: str | Path) -> bool:
    """Whether `path` is a Vera adapter file (its settings in the metadata), not another tool's LoRA."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return METADATA_KEY in (f.metadata() or {})
    except (OSError, SafetensorError) as exc:
        raise BadInput(f"{path}: not a readable LoRA file ({exc})") from None


def apply_lora(model: torch.nn.Module, path: str | Path, scale: float = 1.0) -> torch.nn.Module:
    """Merge the adapters in `path` into `model`'s weights in place (W + scale * alpha/rank * B A)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            settings = parse((f.metadata() or {})[METADATA_KEY], path, "LoRA settings metadata")
            tensors = {block_first_key(k): f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError, KeyError, ValueError, BadInput) as exc:
        raise BadInput(f"{path}: not a Vera LoRA file ({exc})") from None
    dtype = next(model.parameters()).dtype
    add_lora(model, settings["rank"], settings["alpha"] * float(scale), settings["targets"])
    result = set_peft_model_state_dict(model, {k: v.to(dtype) for k, v in tensors.items()})
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if missing or result.unexpected_keys:
        raise BadInput(f"{path}: adapters do not fit this model (missing {len(missing)}, unexpected "
                       f"{len(result.unexpected_keys)}, e.g. {(missing or result.unexpected_keys)[0]})")
    # merge, then put the plain Linear back: the network is the same module tree as without adapters
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    del model.peft_config
    return model.requires_grad_(False)
