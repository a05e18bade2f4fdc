"""One rank of tests/engine/test_parallel.py, started by torchrun: a small seeded VeraMoT run with each strategy, compared
with the same model run whole in this process (what one process computes).

    python -m torch.distributed.run --standalone --nproc-per-node N tests/parallel_worker.py OUT.json

Rank 0 writes {strategy name: max |parallel - one process|} to OUT.json.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist

from vera.errors import BadInput
from vera.model.configs import VeraConfig
from vera.model.dit import VeraMoT
from vera.offload import apply_memory
from vera.parallel import UlyssesAttention, apply_sequence_parallel, build_mesh, parallelize
from vera.plan import Strategy

# 4 heads (Ulysses degrees 1, 2, 4), 2 layers; a 2x4x8 latent grid = 16 tokens per stream after the 1x2x2 patch.
CONFIG = VeraConfig(dim=48, ffn_dim=96, num_heads=4, num_layers=2, z_dim=4, mask_channels=4, text_dim=32,
                    freq_dim=32, text_len=8)


def strategies(world: int) -> dict[str, Strategy]:
    found = {f"sp{world}": Strategy(devices=world, sequence_parallel=world),
             f"fsdp{world}": Strategy(devices=world, shard_weights=True),
             f"sp{world}+fsdp": Strategy(devices=world, sequence_parallel=world, shard_weights=True),
             "cfg2": Strategy(devices=world, cfg_parallel=True, sequence_parallel=world // 2),
             f"sp{world}+layers": Strategy(devices=world, sequence_parallel=world, memory="layers")}
    if world == 4:
        found["cfg2+sp2+fsdp"] = Strategy(devices=4, cfg_parallel=True, sequence_parallel=2, shard_weights=True)
    return found


def sharded_loads(model, x, t, context, path) -> dict:
    """Each rank reads only its rows of a checkpoint (vera.parallel.load_sharded): the same output."""
    from vera.model.checkpoint import save_vera
    from vera.parallel import load_sharded

    if dist.get_rank() == 0:
        save_vera(model, path)
    dist.barrier()
    found = {}
    reference = model(x, t, context)
    for name, strategy in strategies(dist.get_world_size()).items():
        if strategy.shard_weights:
            loaded = load_sharded(path, CONFIG, build_mesh(strategy), strategy, torch.device("cpu"), torch.float32)
            local = sum(p.to_local().numel() for p in loaded.parameters())
            # this rank's share (rows of small tensors such as the (1, 6, dim) modulations go to rank 0 whole)
            assert local <= sum(p.numel() for p in model.parameters()) * (1 / dist.get_world_size() + 0.1), name
            found[f"{name}/loaded"] = float((loaded(x, t, context) - reference).abs().max())
    return found


def gradients(model, x, t, context) -> dict:
    """Training through FSDP (+ Ulysses): every rank computes the same loss on the gathered output; FSDP averages
    the gradients over the ranks. Returns the largest gradient difference from one process, relative to the
    largest gradient, per strategy."""
    weights = torch.randn(2, 3, CONFIG.z_dim, 2, 4, 8, generator=torch.Generator().manual_seed(5))
    reference = copy.deepcopy(model).train().requires_grad_(True)
    (reference(x, t, context) * weights).sum().backward()
    expected = {name: p.grad for name, p in reference.named_parameters()}
    scale = max(float(g.abs().max()) for g in expected.values())
    found = {}
    world = dist.get_world_size()
    for name, strategy in strategies(world).items():
        if not strategy.shard_weights:
            continue
        parallel = parallelize(copy.deepcopy(model).train().requires_grad_(True), build_mesh(strategy), strategy)
        (parallel(x, t, context) * weights).sum().backward()
        worst = max(float((p.grad.full_tensor() - expected[key]).abs().max())
                    for key, p in parallel.named_parameters())
        found[f"{name}/gradients"] = worst / scale
    return found


def refusals(model, x, t, context) -> dict:
    """The BadInput messages for a degree that does not divide the heads, or the tokens (1x1x3 after patching)."""
    mesh = build_mesh(Strategy(devices=dist.get_world_size(), sequence_parallel=dist.get_world_size()))["sp"]
    found = {}
    three_heads = VeraMoT(VeraConfig(**{**CONFIG.to_dict(), "num_heads": 3, "dim": 36}))
    try:
        apply_sequence_parallel(three_heads, mesh)
    except BadInput as exc:
        found["heads"] = str(exc)
    parallel = apply_sequence_parallel(copy.deepcopy(model), mesh)
    try:
        parallel(x[..., :1, :2, :6], t, context)
    except BadInput as exc:
        found["tokens"] = str(exc)
    return found


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = VeraMoT(CONFIG).eval()
    x = torch.randn(2, 3, CONFIG.in_dim, 2, 4, 8)  # batch 2: the [prompt, negative] pair of guidance
    t = torch.tensor([700.0, 700.0])
    context = torch.randn(2, CONFIG.text_len, CONFIG.text_dim)
    results = {}
    with torch.no_grad():
        references = {isolate: model(x, t, context, isolate_streams=isolate) for isolate in (False, True)}
        for name, strategy in strategies(dist.get_world_size()).items():
            parallel = apply_memory(copy.deepcopy(model), strategy, torch.device("cpu"))  # streamed blocks
            parallel = parallelize(parallel, build_mesh(strategy), strategy)
            ulysses = isinstance(parallel.blocks[0].attention, UlyssesAttention)
            assert ulysses == (strategy.sequence_parallel > 1), name
            for isolate, reference in references.items():  # one parallel model, both attention layouts
                out = parallel(x, t, context, isolate_streams=isolate)
                results[name + ("/isolated" if isolate else "")] = float((out - reference).abs().max())
        results["reference_abs_mean"] = float(references[True].abs().mean())
        results.update(sharded_loads(model, x, t, context, out_path + ".safetensors"))
        results["refused"] = refusals(model, x, t, context)
    results.update(gradients(model, x, t, context))
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, results)  # every rank's result, not only rank 0's
    if dist.get_rank() == 0:
        worst = {key: max(r[key] for r in errors) if isinstance(results[key], float) else results[key]
                 for key in results}
        with open(out_path, "w") as f:
            json.dump(worst, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
