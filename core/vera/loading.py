"""A bundle loaded for a Strategy (vera.plan): load -> parallelize -> offload, composed here so that loading
weights (vera.model.bundle) knows nothing of meshes or memory tiers.

    parts        vera.model.bundle.load_parts: VAE (on the CPU between uses unless resident), text encoder
    weights      sharded over the mesh, each process reading its share of the file (vera.parallel.load_sharded),
                 or the whole file (LoRA merged) on the device, or in CPU memory when blocks are streamed
    placement    fp8 storage and streamed blocks (vera.offload.apply_memory), then the strategy's parallelism
                 (vera.parallel.parallelize) when the process is one of several
"""

from __future__ import annotations

from pathlib import Path

import torch

from vera.errors import BadInput
from vera.model.attention import resolve_kernel, use_kernel
from vera.model.bundle import Bundle, load_parts, load_weights
from vera.offload import CPU, apply_memory
from vera.parallel import load_sharded, parallelize
from vera.plan import Strategy


def load_placed_bundle(name_or_path: str | Path = "demo", device: str | torch.device = "auto",
                       cache_dir: str | Path | None = None, strategy: Strategy | None = None, mesh=None,
                       attention: str = "auto", student: bool = False) -> Bundle:
    """Load a bundle ("demo" or a folder) for `strategy` (default: every part resident on `device`). With a
    `mesh` (vera.parallel.build_mesh; one process of several) the transformer gets the strategy's
    parallelism, and with sharded weights each process reads only its share of the file. `attention` names the
    joint attention's kernel (vera.model.attention: auto, native, flash, ...); BadInput if it cannot run here,
    before any weight is read. `student`: the bundle's distilled student (speed turbo) in place of its
    transformer."""
    strategy = strategy or Strategy()
    bundle, path, lora = load_parts(name_or_path, device, cache_dir, memory=strategy.memory, student=student)
    cfg = bundle.config
    bundle.attention = resolve_kernel(attention, bundle.device, bundle.dtype, cfg.num_heads, cfg.head_dim)
    if mesh is not None and strategy.shard_weights:
        if lora or student:
            raise BadInput(f"{bundle.path}: a bundle with LoRA adapters cannot be loaded with sharded weights; "
                           "merge them first (load and save_bundle it on one machine) or render without sharding")
        transformer = load_sharded(path, bundle.config, mesh, strategy, bundle.device, bundle.dtype)
    else:  # streamed blocks live in CPU memory
        transformer = load_weights(bundle, path, lora, CPU if strategy.memory == "layers" else bundle.device)
        apply_memory(transformer, strategy, bundle.device)
        if mesh is not None:
            parallelize(transformer, mesh, strategy)
    use_kernel(transformer, bundle.attention, bundle.device, bundle.dtype)
    bundle.transformer = transformer
    return bundle
