"""Hooks on the joint layers for speed, beside the sampling loop that runs them: the step cache (diffusers'
MagCache, per a vera.presets.StepPlan), the count of joint-layer evaluations (full and skipped) the manifest
records, and regional compilation.

Why MagCache and not diffusers' other caches: FirstBlockCache reads its input under the fixed name
`hidden_states` (our blocks take `x`) and needs a pipeline-set cache context; TaylorSeer, FasterCache and
PyramidAttentionBroadcast hook diffusers' `Attention` / `FeedForward` modules, which our network does not use;
MagCache reads the argument name from `TransformerBlockRegistry`, where JointBlock is registered here. The
decision is one per step for the whole batch, so the three streams and both CFG branches (one batch,
vera.sampling) are always skipped or computed together.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from diffusers.hooks import HookRegistry, MagCacheConfig, ModelHook, apply_mag_cache
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

from vera.presets import StepPlan

_COUNT_HOOK = "vera_layer_count"
_REGISTERED = []


def _register_joint_blocks(blocks) -> None:
    """Tell diffusers' caches how a JointBlock is called: the residual streams are the argument `x`, and the
    block returns them as one tensor (all streams, all CFG branches: cached and skipped as one). The registry
    matches exact classes, so a block FSDP2 has sharded (a generated subclass, FSDPJointBlock) is registered too."""
    for cls in {type(block) for block in blocks} - set(_REGISTERED):
        TransformerBlockRegistry.register(cls, TransformerBlockMetadata(
            return_hidden_states_index=0, return_encoder_hidden_states_index=None, hidden_states_argument_name="x"))
        _REGISTERED.append(cls)


class LayerCount:
    """Joint-layer evaluations, in layer x batch-row units (a CFG step's two branches count twice)."""

    def __init__(self):
        self.full = 0
        self.skipped = 0

    def as_dict(self) -> dict:
        return {"full": self.full, "skipped": self.skipped}


def layer_count(model) -> LayerCount:
    """The running count of a model (kept on it, so a caller can take the difference around a render)."""
    if not hasattr(model, "_vera_layer_count"):
        model._vera_layer_count = LayerCount()
    return model._vera_layer_count


def _counting_hook(count: LayerCount):
    class CountEvaluations(ModelHook):
        """Innermost hook: runs only when the layer really computes."""

        def pre_forward(self, module, *args, **kwargs):
            count.full += int(args[0].shape[0] if args else kwargs["x"].shape[0])
            return args, kwargs

    return CountEvaluations()


class StepCache:
    """Hooks on the joint layers for one sampling run (see `step_cache`). The sampler calls
    `before_step(batch)` before each model call."""

    def __init__(self, model, plan: StepPlan, timesteps):
        self.model, self.plan, self.timesteps = model, plan, timesteps
        self.count = layer_count(model)
        self.blocks = list(getattr(model, "blocks", ()))  # a stand-in model without joint layers: nothing to hook
        self.handles, self.leader, self.calls = [], None, 0

    def __enter__(self):
        self.full_before = self.count.full
        for block in self.blocks:
            # registered first = innermost: it runs only when the layer really computes
            HookRegistry.check_if_exists_or_initialize(block).register_hook(_counting_hook(self.count), _COUNT_HOOK)
            self.handles.append(block.register_forward_pre_hook(self._count_call))  # every call, skipped or not
        if self.plan.caching and self.blocks:
            _register_joint_blocks(self.blocks)
            config = MagCacheConfig(threshold=self.plan.cache_threshold, max_skip_steps=self.plan.cache_max_skip,
                                    retention_ratio=self.plan.cache_retention,
                                    num_inference_steps=len(self.timesteps),
                                    mag_ratios=magnitude_ratios(self.plan.curve, self.timesteps))
            apply_mag_cache(getattr(self.model, "network", self.model), config)  # a wrapper's inner model
            self.leader = HookRegistry.check_if_exists_or_initialize(self.blocks[0]).get_hook(
                "mag_cache_leader_block_hook")
        if hasattr(self.model, "step_cache_started"):  # vera.workers' leader: the other ranks do the same
            self.model.step_cache_started(self.plan, self.timesteps)
        return self

    def _count_call(self, module, args):
        self.calls += int(args[0].shape[0])

    def before_step(self, batch: int) -> None:
        """The guidance schedule dropped the negative branch: keep the cached residual of the prompt branch
        (the first rows of the [prompt, negative] batch), so a skipped step stays right in shape and meaning."""
        if self.leader is None:
            return
        try:
            state = self.leader.state_manager.get_state()
        except ValueError:  # no cache context yet: no step has run
            return
        if state.previous_residual is not None and state.previous_residual.shape[0] > batch:
            state.previous_residual = state.previous_residual[:batch]

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        for block in self.blocks:
            registry = HookRegistry.check_if_exists_or_initialize(block)
            for name in reversed(list(registry.hooks)):  # outermost first
                registry.remove_hook(name, recurse=False)
        self.count.skipped += self.calls - (self.count.full - self.full_before)
        if hasattr(self.model, "step_cache_ended"):
            self.model.step_cache_ended()
        return False


def step_cache(model, plan: StepPlan | None, timesteps) -> StepCache:
    """Counting (always) and MagCache (when the plan caches) on `model.blocks` for one sampling run over
    `timesteps`: `with step_cache(model, plan, timesteps) as cache: ...`."""
    return StepCache(model, plan or StepPlan(steps=len(timesteps)), timesteps)


def compile_blocks(model, report=print, backend: str = "inductor") -> None:
    """Regional compilation: `torch.compile` each JointBlock's forward. The blocks share one class and one code
    object, so dynamo compiles the layer once and reuses the graph at every depth (the weights are graph
    inputs). The compile happens in the first forward; its time (compile included) is reported once."""
    for block in model.blocks:
        block.forward = torch.compile(block.forward, fullgraph=True, dynamic=False, backend=backend)
    started = {}

    def start(module, args):
        started.setdefault("t", time.perf_counter())

    def stop(module, args, output):
        handles[0].remove()
        handles[1].remove()
        report(f"vera: torch.compile of the joint layer: first forward {time.perf_counter() - started['t']:.1f} s "
               "(compile included)")

    handles = [model.register_forward_pre_hook(start), model.register_forward_hook(stop)]


def magnitude_ratios(curve, timesteps) -> list[float]:
    """MagCache's per-step ratios |residual_i| / |residual_i-1| for this grid of timesteps, from the calibrated
    curve of log residual magnitude against the timestep (1.0 for the first step)."""
    points = np.asarray(sorted(curve), dtype=np.float64)
    ts = np.asarray([float(t) for t in timesteps], dtype=np.float64)
    log_mag = np.interp(ts, points[:, 0], points[:, 1])
    return [1.0] + [float(r) for r in np.exp(np.diff(log_mag))]
