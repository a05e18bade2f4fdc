"""Memory tiers on one device, applied from outside the network with diffusers' hooks (vera.plan.MEMORY_MODES).

  resident  everything on the device for the whole render.
  parts     the VAE on the device only while it encodes or decodes (`on_device`); the text encoder is loaded
            only on a prompt-cache miss and freed before sampling in every mode (vera.model.text).
  layers    also the transformer's joint blocks streamed from CPU memory (`apply_layer_offload`): diffusers'
            `apply_group_offloading` at block level finds `VeraMoT.blocks` (a ModuleList of JointBlocks) and
            makes each JointBlock one group, copied to the device when it starts and back when it ends, the next
            block prefetched on a side CUDA stream while the current one computes. The rest of the model (the
            three streams' embedders and heads, under 2% of the weights) is one group, on the device while the
            model runs.

`apply_fp8_storage` stores the transformer's Linear weights as float8 (e4m3) and computes in bf16: diffusers'
layerwise casting casts each layer up when it runs and back after. The embedders and norms stay in their dtype
(the layers diffusers leaves out for its own Wan transformer); `vera.model.dit.compute_dtype` maps a float8
weight to bf16 inputs.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers.hooks import apply_group_offloading, apply_layerwise_casting

# diffusers' skip list for its WanTransformer3DModel (patch embedding, condition embedders, norms), in our names.
FP8_SKIP_PATTERNS = ("patch_embedding", "text_embedding", "time_embedding", "time_projection", "norm")
CPU = torch.device("cpu")


def apply_layer_offload(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Keep `model`'s weights in CPU memory and bring one joint block at a time to `device` while it runs
    (with prefetch of the next on CUDA). Call on a model whose weights are on the CPU."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    apply_group_offloading(model, onload_device=device, offload_device=CPU, offload_type="block_level",
                           num_blocks_per_group=1, use_stream=cuda, record_stream=cuda, non_blocking=cuda)
    return model


def apply_fp8_storage(model: torch.nn.Module) -> torch.nn.Module:
    """Store the Linear weights (all but FP8_SKIP_PATTERNS) as float8_e4m3fn; each layer computes in bf16."""
    apply_layerwise_casting(model, storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16,
                            skip_modules_pattern=FP8_SKIP_PATTERNS)
    return model


def apply_memory(model: torch.nn.Module, strategy, device: torch.device) -> torch.nn.Module:
    """A Strategy's fp8 storage and transformer tier on a model loaded on the CPU (layers) or `device`."""
    if strategy.fp8_storage:
        apply_fp8_storage(model)
    if strategy.memory == "layers":
        apply_layer_offload(model, device)
    return model


@contextlib.contextmanager
def on_device(part, device: torch.device, enabled: bool = True):
    """Move `part` (a VAE, anything with `.to(device)`) to `device` for the block, back to the CPU after."""
    if not enabled:
        yield part
        return
    part.to(device)
    try:
        yield part
    finally:
        part.to(CPU)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
