"""Parallelism applied to a plain VeraMoT from outside the network (as torchtitan's `parallelize_*` do).

The unit is the joint layer (`VeraMoT.blocks[i]`, a `JointBlock`). Each function takes (model, mesh) and
changes the model in place with hooks and a swapped attention module; the network code (vera.model.dit) does
not know about any of it:

  * `apply_fsdp`: FSDP2 shards each joint block and the root, so a block's parameters are gathered only
    while that block runs (14B: 80 GiB of bf16 weights / 8 GPUs = 10 GiB each).
  * `apply_sequence_parallel`: Ulysses. Every rank of the mesh keeps 1/P of each stream's tokens (and the
    matching RoPE rows) through the blocks; each block's `JointAttention` becomes `UlyssesAttention`, which
    trades tokens for heads with one all-to-all, attends over ALL tokens of all three streams for its 1/P of
    the heads, and trades back. The tokens are gathered again in front of each stream's head.
  * `apply_cfg_parallel`: the prompt and negative-prompt halves of the sampler's batch (vera.sampling runs
    them as one batch of 2B) go to the two halves of the mesh, and the velocities are gathered back.
  * `build_mesh` / `parallelize`: a `vera.plan.Strategy` onto a DeviceMesh ("cfg", "replica", "sp") and the
    three functions above (FSDP over the whole mesh, flattened).

Divisibility: the Ulysses degree must divide the head count (12 for 1.3B: 1, 2, 3, 4, 6, 12; 40 for 14B:
1, 2, 4, 5, 8, 10, 20, 40), else `apply_sequence_parallel` refuses (BadInput). It must also divide the token
count of one stream (latent frames x height/2 x width/2 after patching); a render whose size does not divide
is refused with BadInput naming the counts, rather than padded: Wan's sizes always divide (832x480 is 1,560
tokens per latent frame, a multiple of 8 and 12), and padding would need a key mask in the joint attention,
which rules out its fastest kernels.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from vera.errors import BadInput
from vera.model.checkpoint import _open_safetensors, read_config
from vera.model.dit import JointBlock, VeraMoT, build_on_meta, stream_first_key

MESH_DIMS = ("cfg", "replica", "sp")


# --------------------------------------------------------------------------------------------------- FSDP


def apply_fsdp(model: VeraMoT, mesh, *, param_dtype: torch.dtype | None = None,
               reduce_dtype: torch.dtype | None = torch.float32, reshard_after_forward: bool = True) -> VeraMoT:
    """Shard `model` with torch's FSDP2 (`fully_shard`) over `mesh`: one group per joint block, then the root
    (embedders and heads). Parameters keep their stored dtype (float32 master weights in training); with
    `param_dtype` they are gathered in that dtype for compute, and gradients are reduced in `reduce_dtype`.

    Forward inputs are NOT cast by FSDP (`cast_forward_inputs=False`): the residual stream between blocks stays
    float32, which is Wan2.1's bf16 recipe (vera.model.dit).
    """
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype, cast_forward_inputs=False)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


# ------------------------------------------------------------------------------------- Ulysses (sequence)


# torch's functional collectives (as torchtitan and diffusers' context parallelism use): differentiable, so training
# can backpropagate through them; waited at once, so the model only ever sees plain tensors.
def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """Chunk p of dim 0 goes to rank p; the result's chunk p came from rank p."""
    return funcol.wait_tensor(funcol.all_to_all_single_autograd(x.contiguous(), None, None, group))


def _all_gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Every rank's `x` concatenated along `dim` in rank order."""
    return funcol.wait_tensor(funcol.all_gather_single_autograd(x.contiguous(), dim, group))


class UlyssesAttention(nn.Module):
    """The joint attention of a sequence-parallel group: in, each stream's q/k/v for ALL heads and this rank's
    L/P tokens; all-to-all to 1/P of the heads for all L tokens; the block's own attention (joint over the
    streams, or isolated) runs on that; all-to-all back. Both all-to-alls carry every stream at once."""

    def __init__(self, attention: nn.Module, group):
        super().__init__()
        self.attention = attention  # the JointAttention it replaces (no parameters)
        self.group = group
        self.degree = dist.get_world_size(group)

    def forward(self, q: list, k: list, v: list, isolate: bool = False) -> list:
        streams, degree = len(q), self.degree
        # (3 * streams, B, heads, L/P, hd) -> rank p gets head group p: (P, 3S, B, heads/P, L/P, hd)
        x = torch.stack([*q, *k, *v]).unflatten(2, (degree, -1)).movedim(2, 0)
        x = _all_to_all(x, self.group)
        # received chunk p holds token block p: put the blocks in order -> (3S, B, heads/P, L, hd)
        x = x.permute(1, 2, 3, 0, 4, 5).flatten(3, 4)
        q, k, v = (list(part.unbind(0)) for part in x.split(streams))
        out = torch.stack(self.attention(q, k, v, isolate))  # (S, B, heads/P, L, hd)
        # token block p back to rank p: (P, S, B, heads/P, L/P, hd)
        out = _all_to_all(out.unflatten(3, (degree, -1)).permute(3, 0, 1, 2, 4, 5), self.group)
        # received chunk p holds head group p -> (S, B, heads, L/P, hd)
        return list(out.permute(1, 2, 0, 3, 4, 5).flatten(2, 3).unbind(0))


def _rank_tokens(tensor: torch.Tensor, dim: int, degree: int, rank: int) -> torch.Tensor:
    """This rank's contiguous 1/degree of the tokens along `dim`; BadInput if they do not divide."""
    length = tensor.shape[dim]
    if length % degree:
        divisors = [d for d in range(2, min(length, 64) + 1) if length % d == 0][:8]
        raise BadInput(f"sequence parallel: degree {degree} does not divide the {length} tokens per stream of this "
                       f"frame size and window (divisors: {', '.join(map(str, divisors)) or 'none'}); use a number "
                       f"of devices whose sequence-parallel degree divides it, or another size")
    return tensor.narrow(dim, rank * (length // degree), length // degree)


def apply_sequence_parallel(model: VeraMoT, mesh) -> VeraMoT:
    """Ulysses sequence parallelism over the 1-D `mesh` (see the module docstring). Every rank of the mesh must
    call the model with the same inputs; every rank gets the whole output."""
    group, degree, rank = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    heads = model.cfg.num_heads
    if heads % degree:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0]
        raise BadInput(f"sequence parallel: degree {degree} does not divide the model's {heads} attention heads "
                       f"(possible degrees: {', '.join(map(str, divisors))})")
    signature = inspect.signature(JointBlock.forward)

    def shard_block_inputs(block, args, kwargs):
        # The model passes every block the RoPE angles of all L tokens: keep this rank's rows. The first block
        # also gets all L tokens of the residual streams (B, streams, L, dim): keep this rank's share.
        bound = signature.bind(block, *args, **kwargs)
        a = bound.arguments
        full = a["cos"].shape[0]
        a["cos"], a["sin"] = (_rank_tokens(a[name], 0, degree, rank) for name in ("cos", "sin"))
        if a["x"].shape[2] == full:
            a["x"] = _rank_tokens(a["x"], 2, degree, rank)
        return bound.args[1:], bound.kwargs

    def gather_head_input(head, args):
        x, *rest = args  # (B, L/P, dim) -> (B, L, dim), token blocks in rank order
        return (_all_gather(x, 1, group), *rest)

    for block in model.blocks:
        block.attention = UlyssesAttention(block.attention, group)
        block.register_forward_pre_hook(shard_block_inputs, with_kwargs=True)
    for stream in model.streams:
        stream.head.register_forward_pre_hook(gather_head_input)
    return model


# ------------------------------------------------------------------------------------------- CFG parallel


def apply_cfg_parallel(model: VeraMoT, mesh) -> VeraMoT:
    """Split the batch across the 1-D `mesh` (size 2 for [prompt, negative prompt]) and gather the outputs.

    vera.sampling stacks the guidance branches as one batch [prompt..., negative...]; rank r of the mesh runs
    rows r*B/n..(r+1)*B/n. A batch that does not divide (no guidance: B=1) runs whole on every rank.
    """
    group, size, rank = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    signature = inspect.signature(VeraMoT.forward)
    split = {"on": False}

    def split_batch(module, args, kwargs):
        bound = signature.bind(module, *args, **kwargs)
        a = bound.arguments
        batch = a["x"].shape[0]
        split["on"] = batch % size == 0
        if split["on"]:
            share = batch // size
            for name in ("x", "t", "context"):
                if a[name].ndim and a[name].shape[0] == batch:
                    a[name] = a[name].narrow(0, rank * share, share)
        return bound.args[1:], bound.kwargs

    def gather_batch(module, args, output):
        return _all_gather(output, 0, group) if split["on"] else output

    model.register_forward_pre_hook(split_batch, with_kwargs=True)
    model.register_forward_hook(gather_batch)
    return model


# ----------------------------------------------------------------------------------------- a Strategy


def build_mesh(strategy, device_type: str = "cpu"):
    """The DeviceMesh of a `vera.plan.Strategy`: ("cfg", "replica", "sp") of sizes (2 with cfg_parallel else 1,
    the rest, sequence_parallel). Ranks of one "replica" row compute the same thing; they exist to hold a
    share of sharded weights (FSDP without sequence parallelism). Needs the default process group."""
    cfg = 2 if strategy.cfg_parallel else 1
    if strategy.devices % (cfg * strategy.sequence_parallel):
        raise BadInput(f"{strategy.devices} devices cannot hold {cfg} guidance group(s) of sequence-parallel "
                       f"degree {strategy.sequence_parallel}")
    if dist.get_world_size() != strategy.devices:
        raise BadInput(f"the strategy is for {strategy.devices} devices, but {dist.get_world_size()} processes run")
    replica = strategy.devices // (cfg * strategy.sequence_parallel)
    return init_device_mesh(device_type, (cfg, replica, strategy.sequence_parallel), mesh_dim_names=MESH_DIMS)


def parallelize(model: VeraMoT, mesh, strategy, param_dtype: torch.dtype | None = None) -> VeraMoT:
    """Apply a Strategy's parallelism to `model` on a mesh from `build_mesh` (after its memory tier, if any)."""
    if strategy.shard_weights and (strategy.memory == "layers" or strategy.fp8_storage):
        raise BadInput("sharded weights do not combine with blocks streamed from CPU memory or fp8 storage (both "
                       "act on whole layers on one device); use memory parts or resident with sharding")
    if mesh["sp"].size() > 1:
        apply_sequence_parallel(model, mesh["sp"])
    if mesh["cfg"].size() > 1:
        apply_cfg_parallel(model, mesh["cfg"])
    if strategy.shard_weights:
        apply_fsdp(model, mesh._flatten("shard"), param_dtype=param_dtype)
    return model


def load_sharded(path, cfg, mesh, strategy, device: torch.device, dtype: torch.dtype) -> VeraMoT:
    """A VeraMoT parallelized for `strategy` (which shards its weights) whose every rank reads only its own rows
    of the checkpoint file: built on the meta device, sharded, then filled from safetensors slices. Peak host
    memory is one tensor's rows, not the model (14B: 80 GiB per rank if each rank read the whole file)."""
    path = Path(path)
    found = read_config(path)
    if found != cfg:
        raise BadInput(f"{path}: the checkpoint's config differs from the bundle's ({found} vs {cfg})")

    model = parallelize(build_on_meta(cfg), mesh, strategy)
    sharded = {}
    with _open_safetensors(path) as f:
        # FSDP2's documented way to fill a meta-device model: a state dict of DTensors shaped like its parameters,
        # loaded with assign=True. FSDP2 shards dim 0 as torch.chunk does (ceil(n / world) rows per rank).
        for name, meta in model.state_dict().items():
            rows, world = meta.shape[0], meta.device_mesh.size()
            per_rank = -(-rows // world)
            start = min(meta.device_mesh.get_local_rank() * per_rank, rows)
            local = f.get_slice(stream_first_key(name))[start:min(start + per_rank, rows)]
            sharded[name] = nn.Parameter(DTensor.from_local(local.to(device=device, dtype=dtype), meta.device_mesh,
                                                            meta.placements, shape=meta.shape, stride=meta.stride()),
                                         requires_grad=False)
    model.load_state_dict(sharded, assign=True)
    return model.eval()
