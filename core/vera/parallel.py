"""Parallelism applied to a plain VeraMoT from outside the network (as torchtitan's `parallelize_*` do).

The unit is the joint layer (`VeraMoT.blocks[i]`, a `JointBlock`): FSDP2 shards each block and the root, so a
block's parameters are gathered only while that block runs.
"""

from __future__ import annotations

import torch

from vera.model.dit import VeraMoT


def apply_fsdp(model: VeraMoT, mesh, *, param_dtype: torch.dtype | None = None,
               reduce_dtype: torch.dtype | None = torch.float32, reshard_after_forward: bool = True) -> VeraMoT:
    """Shard `model` with torch's FSDP2 (`fully_shard`) over `mesh`: one group per joint block, then the root
    (embedders and heads). Parameters keep their stored dtype (float32 master weights in training); with
    `param_dtype` they are gathered in that dtype for compute, and gradients are reduced in `reduce_dtype`.

    Forward inputs are NOT cast by FSDP (`cast_forward_inputs=False`): the residual stream between blocks stays
    float32, which is Wan2.1's bf16 recipe (vera.model.dit).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype, cast_forward_inputs=False)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model
