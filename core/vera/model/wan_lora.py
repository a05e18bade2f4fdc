"""Wan2.1 LoRAs from the ecosystem, merged into chosen streams of a Vera transformer.

A Vera stream is a Wan2.1 transformer (docs/model.md), so an adapter trained on Wan2.1 (a style, a subject, a
step-distillation LoRA such as lightx2v's) applies to it. Three key layouts are read, each converted to diffusers'
names by diffusers' own Wan converters (diffusers.loaders.lora_conversion_utils), the code diffusers' WanPipeline
runs for them:

- diffusers / peft: `transformer.blocks.0.attn1.to_q.lora_A.weight` (as saved by diffusers' `save_lora_weights`);
- ComfyUI / kohya "non-diffusers": `diffusion_model.blocks.0.self_attn.q.lora_down.weight` (or lora_A/lora_B),
  with optional `.alpha` and `.diff_b` (bias deltas): `_convert_non_diffusers_wan_lora_to_diffusers`;
- musubi-tuner: `lora_unet_blocks_0_self_attn_q.lora_down.weight` + `.alpha`:
  `_convert_musubi_wan_lora_to_diffusers`.

The converters fold alpha/rank into the two factors, so each layer's change is B @ A (+ the bias delta), merged
as W + scale * B @ A into each named stream's layer (vera.model.checkpoint maps diffusers' names to Wan's, which
are ours inside a stream). A bundle names them in bundle.json:

    "lora": [{"path": "style.safetensors", "streams": ["edit", "composite"], "scale": 0.8}, ...]

Keys that match no layer of the model are refused, all of them listed (BadInput), never skipped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.loaders.lora_conversion_utils import (_convert_musubi_wan_lora_to_diffusers,
                                                     _convert_non_diffusers_wan_lora_to_diffusers)
from safetensors import SafetensorError
from safetensors.torch import load_file

from vera.errors import BadInput
from vera.model.checkpoint import diffusers_key_to_wan
from vera.model.configs import STREAMS
from vera.model.dit import block_first_key
from vera.model.lora import apply_lora, is_vera_lora

FORMATS = ("diffusers", "non-diffusers", "musubi")
_FACTORS = (".lora_A.weight", ".lora_B.weight", ".lora_B.bias")


def lora_format(keys) -> str:
    """Which layout a Wan LoRA file's keys are in (the tests diffusers' Wan loader makes, in its order)."""
    keys = list(keys)
    if any(k.startswith("diffusion_model.") for k in keys):
        return "non-diffusers"
    if any(k.startswith("lora_unet_") for k in keys):
        return "musubi"
    return "diffusers"


def read_wan_lora(path: str | Path) -> dict:
    """The file's adapters in diffusers' names, without the `transformer.` prefix, alpha folded in."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise BadInput(f"{path}: not a readable LoRA file ({exc})") from None
    fmt = lora_format(state)
    try:
        if fmt == "non-diffusers":
            state = _convert_non_diffusers_wan_lora_to_diffusers(state)
        elif fmt == "musubi":
            state = _convert_musubi_wan_lora_to_diffusers(state)
    except ValueError as exc:  # the converters refuse keys left over after converting, listing them
        raise BadInput(f"{path}: LoRA keys that match no layer of Wan2.1 (diffusers' {fmt} converter: {exc})") \
            from None
    except KeyError as exc:  # musubi's converter expects every layer of every block it names
        raise BadInput(f"{path}: not a complete {fmt} Wan LoRA: {exc} is missing") from None
    return {k.removeprefix("transformer."): v for k, v in state.items()}


def layer_deltas(state: dict, source) -> dict:
    """{Wan layer name (blocks.0.self_attn.q): {"A", "B", "bias"}} from diffusers-named adapters; every key that
    names no Wan2.1 layer is refused, listed."""
    layers, unmatched = {}, []
    for key, value in state.items():
        factor = next((f for f in _FACTORS if key.endswith(f)), None)
        wan = diffusers_key_to_wan(key[:-len(factor)] + ".weight") if factor else None
        if wan is None:
            unmatched.append(key)
            continue
        part = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_B.bias": "bias"}[factor]
        layers.setdefault(wan[:-len(".weight")], {})[part] = value
    broken = [name for name, parts in layers.items() if ("A" in parts) != ("B" in parts)]
    if unmatched or broken:
        raise BadInput(f"{source}: LoRA keys that match no layer: {', '.join(sorted(unmatched) + broken)}")
    return layers


@torch.no_grad()
def merge_wan_lora(model: torch.nn.Module, path: str | Path, streams=STREAMS, scale: float = 1.0) -> list[str]:
    """Merge a Wan2.1 LoRA file into `streams` of `model` (a VeraMoT) in place; returns the parameters changed."""
    unknown = sorted(set(streams) - set(STREAMS))
    if unknown or not streams:
        raise BadInput(f"{path}: lora streams must be among {', '.join(STREAMS)}, got {list(streams)}")
    params = dict(model.named_parameters())
    layers = layer_deltas(read_wan_lora(path), path)
    missing = [f"{name} ({stream})" for name in layers for stream in streams
               if block_first_key(f"{stream}.{name}.weight") not in params]
    if missing:
        raise BadInput(f"{path}: LoRA keys that match no layer of this model: {', '.join(missing)}")
    changed = []
    for name, parts in layers.items():
        for stream in streams:
            weight = params[block_first_key(f"{stream}.{name}.weight")]
            if "A" in parts:
                delta = parts["B"].double() @ parts["A"].double()
                if delta.shape != weight.shape:
                    raise BadInput(f"{path}: the LoRA for {name} is {tuple(delta.shape)}, the model's layer is "
                                   f"{tuple(weight.shape)}")
                weight.add_((scale * delta).to(weight.dtype))
                changed.append(block_first_key(f"{stream}.{name}.weight"))
            if "bias" in parts:
                bias = params[block_first_key(f"{stream}.{name}.bias")]
                bias.add_((scale * parts["bias"].double()).to(bias.dtype))
                changed.append(block_first_key(f"{stream}.{name}.bias"))
    return changed


def merge_lora_file(model: torch.nn.Module, path: Path, streams=None, scale: float = 1.0) -> None:
    """A bundle's LoRA entry: Vera's own adapter file (vera.model.lora, its streams in its keys) or a Wan2.1
    LoRA in any of FORMATS, merged into `streams` (default all)."""
    if is_vera_lora(path):
        if streams:
            raise BadInput(f"{path}: a Vera LoRA names its streams in its keys; drop 'streams' from its entry")
        apply_lora(model, path, scale)
    else:
        merge_wan_lora(model, path, streams or STREAMS, scale)
