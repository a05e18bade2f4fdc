"""A trained model as a bundle: the base bundle with the trained (or EMA) weights, or its LoRA adapters, from a
finished run or any checkpoint (`vera-train export`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vera.errors import BadInput
from vera.model.lora import add_lora, lora_settings, save_lora
from vera.train import sharded as sharded_checkpoints
from vera.train.checkpoints import block_first
from vera.train.config import FitConfig, load_config
from safetensors.torch import load_file

from vera.model.bundle import load_bundle, save_bundle


LORA_FILE = "lora.safetensors"


def base_bundle_folder(cfg: FitConfig, run_dir: Path) -> Path:
    """The bundle a run started from (its VAE and text encoder go into every bundle it exports)."""
    return run_dir / "init_bundle" if cfg.bundle["from"] == "random" else Path(cfg.bundle["from"])


def write_bundle(cfg: FitConfig, base: Path, state: dict, target: str | Path, dtype: str | None = None) -> Path:
    """An inference bundle at `target` from trained tensors (whole, module key names): the base bundle with
    these weights, or with LoRA the base bundle unchanged plus the adapter file."""
    bundle = load_bundle(base, device="cpu")
    target = Path(target)
    if cfg.lora:
        target.mkdir(parents=True, exist_ok=True)
        save_lora(state, lora_settings(**cfg.lora), target / LORA_FILE)
        return save_bundle(bundle, target, defaults=cfg.defaults or None, lora=LORA_FILE)
    bundle.transformer.load_state_dict({k: v.float() for k, v in state.items()})
    bundle.transformer.to(getattr(torch, dtype or cfg.export_dtype))  # load_bundle casts to the compute dtype
    return save_bundle(bundle, target, defaults=cfg.defaults or None)


def export(checkpoint: str | Path, out: str | Path, *, use_ema: bool = True, dtype: str | None = None) -> Path:
    """An inference bundle from a training checkpoint (a `step_N/` folder or `step_N.safetensors` file inside a
    run's checkpoints/): its EMA weights (or the raw ones), with the VAE and text encoder of the bundle the run
    started from, and the run's sampler defaults. One process; no GPU needed."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise BadInput(f"{checkpoint}: no such checkpoint")
    run = checkpoint.parent.parent
    cfg = load_config(run / "config.json")
    if use_ema and not cfg.ema:
        raise BadInput(f"{run / 'config.json'}: the run kept no EMA (ema is null); export with --raw")
    base = base_bundle_folder(cfg, run)
    group = "ema" if use_ema else "model"
    if checkpoint.is_dir():
        model = load_bundle(base, device="cpu").transformer.float().requires_grad_(True)  # as fit trains it
        if cfg.lora:
            add_lora(model, **cfg.lora)
        held = ({k: v for k, v in model.named_parameters() if v.requires_grad} if use_ema  # what EMA keeps
                else model.state_dict())
        template = {f"{group}.{k}": torch.empty_like(v) for k, v in held.items()}
        tensors = sharded_checkpoints.read_tensors(checkpoint, template)
    else:
        tensors = {block_first(k): v for k, v in load_file(str(checkpoint)).items()}
    state = {k[len(group) + 1:]: v for k, v in tensors.items() if k.startswith(f"{group}.")}
    return write_bundle(cfg, base, state, out, dtype)
