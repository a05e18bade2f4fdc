"""The workers of `vera-render run SHOT.json --devices N` (started by vera.launch), or of torchrun directly
(`torchrun --nproc-per-node 8 -m vera.cli run SHOT`), and the one-process render (`run_shot`).

Each worker sees the launcher's environment: it joins the process group (NCCL on CUDA, gloo on the CPU), builds
the DeviceMesh of the Strategy and loads the model with its parallelism applied (vera.parallel). Rank 0 is the
leader: it runs the normal shot code (vera.render: manifest, VAE, text encoder, files) and, at every transformer
call, first sends the call's inputs to the other ranks, which only serve transformer calls (`_follow`) until the
leader says stop. Those control messages are fixed-schema tensors (vera.tensor_messages), never pickles. So the
files are written by rank 0 alone, and vera.render / vera.pipeline are the same code as for one device.

The Strategy comes from the planner (vera.plan.plan, when it exists and a GPU reports its memory) or, without
one, from `default_strategy`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.nn as nn

import vera.plan
from vera import render
from vera.errors import BadInput
from vera.launch import is_worker
from vera.layout import bundle_path
from vera.model.bundle import resolve_device
from vera.model.bundle_manifest import read_manifest
from vera.model.configs import VeraConfig
from vera.parallel import build_mesh
from vera.plan import MEMORY_CHOICES, Strategy
from vera.presets import StepPlan
from vera.stepcache import step_cache
from vera.tensor_messages import Message, receive, send

GIB = 2**30
PEER_LOST = ("Connection closed by peer", "Connection reset by peer")  # gloo, when another worker's process ends
PEER_LOST_GRACE_S = 10.0
# the leader's control messages (vera.tensor_messages kinds)
FORWARD, STEP_CACHE, STEP_CACHE_END, STOP = 1, 2, 3, 4


# ------------------------------------------------------------------------------------------- the strategy


def default_strategy(num_heads: int, devices: int, guidance: bool, memory: str = "resident",
                     fp8: bool = False) -> Strategy:
    """Without a planner: every device busy. The largest Ulysses degree dividing both the head count and the
    devices; the two guidance branches on two device groups when that leaves an even number of groups; the
    weights FSDP-sharded on more than one device (except with blocks streamed from CPU memory)."""
    sp = max(d for d in range(1, devices + 1) if devices % d == 0 and num_heads % d == 0)
    cfg_parallel = guidance and (devices // sp) % 2 == 0
    return Strategy(devices=devices, shard_weights=devices > 1 and memory != "layers", sequence_parallel=sp,
                    cfg_parallel=cfg_parallel, memory=memory, fp8_storage=fp8)


def choose_strategy(shot, devices: int, memory: str = "auto", fp8: bool = False) -> Strategy:
    """The Strategy for rendering `shot` (a vera.render.Shot) on `devices` devices of this machine's kind."""
    if memory not in MEMORY_CHOICES:
        raise BadInput(f"memory must be one of {', '.join(MEMORY_CHOICES)}, got {memory!r}")
    manifest = read_manifest(bundle_path(shot.spec))
    cfg = VeraConfig.from_dict(manifest["config"])
    guidance = float(shot.spec.sampler.guidance if shot.spec.sampler.guidance is not None
                     else manifest["defaults"]["guidance"]) > 1.0  # vera.sampling runs CFG only above 1
    if memory == "auto":
        planned = _planned(cfg, shot.window_frames, manifest["defaults"]["resolution"], devices, guidance)
        if planned is not None:
            return Strategy(**{**planned.to_dict(), "fp8_storage": planned.fp8_storage or fp8})
        memory = "resident"
    return default_strategy(cfg.num_heads, devices, guidance, memory, fp8)


def _planned(cfg, frames: int, resolution, devices: int, guidance: bool) -> Strategy | None:
    """The planner's choice for this GPU's memory, or None (no planner in this build, or no GPU to ask)."""
    planner = getattr(vera.plan, "plan", None)
    if planner is None or not torch.cuda.is_available():
        return None
    gpu_memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
    width, height = (int(v) for v in resolution)
    result = planner(cfg, frames, width, height, devices, gpu_memory, guidance=guidance)
    if not result.fits:
        raise BadInput(result.reason)
    return result.strategy


# ---------------------------------------------------------------------------------------------- workers


class _Leader(nn.Module):
    """Rank 0's transformer: sends every call's inputs to the other ranks, then takes part in the call. A
    sampling run's step cache (vera.stepcache) is started and ended on every rank alike, so that all ranks skip the
    same joint layers (MagCache decides from the calibration and the step alone, never from the data)."""

    def __init__(self, model: nn.Module, control):
        super().__init__()
        self.model, self.control, self.cfg = model, control, model.cfg

    @property
    def network(self) -> nn.Module:  # the VeraMoT inside (vera.stepcache hooks its joint layers)
        return self.model

    @property
    def blocks(self):
        return self.model.blocks

    def forward(self, x, t, context, isolate_streams: bool = False):
        send(Message(FORWARD, isolate_streams, [x.cpu(), t.cpu(), context.cpu()]), self.control)
        return self.model(x, t, context, isolate_streams)

    def step_cache_started(self, plan, timesteps) -> None:  # called by vera.stepcache.StepCache
        send(Message(STEP_CACHE, 0, [_plan_tensor(plan), _curve_tensor(plan), timesteps.cpu()]), self.control)

    def step_cache_ended(self) -> None:
        send(Message(STEP_CACHE_END), self.control)


def _plan_tensor(plan: StepPlan) -> torch.Tensor:
    """A StepPlan's numbers (float64 holds its ints and floats exactly); the curve travels beside it."""
    return torch.tensor([plan.steps, plan.guidance_until, plan.cache_threshold, plan.cache_max_skip,
                         plan.cache_retention], dtype=torch.float64)


def _curve_tensor(plan: StepPlan) -> torch.Tensor:
    return torch.tensor(plan.curve, dtype=torch.float64).reshape(-1, 2)


def _plan_from(numbers: torch.Tensor, curve: torch.Tensor) -> StepPlan:
    steps, until, threshold, max_skip, retention = numbers.tolist()
    return StepPlan(steps=int(steps), guidance_until=until, cache_threshold=threshold, cache_max_skip=int(max_skip),
                    cache_retention=retention, curve=tuple(tuple(point) for point in curve.tolist()))


def _follow(load, control, device) -> None:
    """Ranks > 0: load the model at the first call, run every call the leader sends, until it says stop."""
    model = cache = None
    while True:
        message = receive((FORWARD, STEP_CACHE, STEP_CACHE_END, STOP), control)
        if message.kind == STOP:
            return
        model = model or load().transformer
        if message.kind == STEP_CACHE:
            numbers, curve, timesteps = message.tensors
            cache = step_cache(model, _plan_from(numbers, curve), timesteps).__enter__()
        elif message.kind == STEP_CACHE_END:
            cache, _ = None, cache.__exit__(None, None, None)
        else:
            x, t, context = message.tensors
            if cache is not None:
                cache.before_step(x.shape[0])
            with torch.no_grad():
                model(x.to(device), t.to(device), context.to(device), bool(message.flag))


def run_shot(shot, window=None, force: bool = False, progress: str = "auto", memory: str = "auto",
             fp8: bool = False, compile: bool = False):
    """`vera-render run` in this process: alone, or as one worker of a --devices run. Returns vera.render.run's
    result (None on the ranks that only serve the leader). `compile` (torch.compile of the joint layer) applies
    to a single process only."""
    if not is_worker():
        strategy = choose_strategy(shot, 1, memory, fp8)
        return render.run(shot, window, force, progress,
                          load_bundle=lambda: render._load_bundle(shot.spec, strategy, compile=compile))

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device, _ = resolve_device(shot.spec.model.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        control = dist.new_group(backend="gloo")  # control messages on the CPU, whatever the compute backend
        strategy = choose_strategy(shot, world, memory, fp8)
        mesh = _mesh(strategy, device)
        if rank == 0:
            print(f"vera-render: {world} workers on {device.type}: {strategy}", file=sys.stderr)

        def load(strategy=strategy):
            return render._load_bundle(shot.spec, strategy, mesh)

        if rank != 0:  # never runs the VAE: keep it in CPU memory ("parts") rather than on the GPU
            follower = replace(strategy, memory="parts") if strategy.memory == "resident" else strategy
            _follow(lambda: load(follower), control, device)
            return None

        def load_leader():
            bundle = load()
            bundle.transformer = _Leader(bundle.transformer, control)
            return bundle

        result = render.run(shot, window, force, progress, load_bundle=load_leader)
        send(Message(STOP), control)  # on failure the launcher stops them
        return result
    except RuntimeError as exc:
        if any(sign in str(exc) for sign in PEER_LOST):
            # Another worker died (its error is the task's): wait for the launcher to stop this one, so that
            # the failure it reports is the cause, not this consequence.
            time.sleep(PEER_LOST_GRACE_S)
        raise
    finally:
        dist.destroy_process_group()


def _mesh(strategy: Strategy, device: torch.device):
    return build_mesh(strategy, device.type)
