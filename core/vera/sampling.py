"""Flow-matching sampling of the three streams (edit, alpha, composite), jointly.

The model predicts the flow velocity v = noise - data at timestep t = 1000 * sigma. The sigma grids are
Wan2.1's own (`unshifted_sigmas`): an evenly spaced grid, shifted towards high noise once by `shift`
(sigma' = shift*sigma / (1 + (shift-1)*sigma)). The solvers are diffusers' `UniPCMultistepScheduler`
(flow_prediction, flow sigmas: the algorithm of Wan2.1's `FlowUniPCMultistepScheduler`) and
`FlowMatchEulerDiscreteScheduler`, both given that grid through `set_timesteps(sigmas=...)`; their default
grids differ from Wan's at the low-noise end.

Every step, the conditioning (source-video latents + packed user mask) is concatenated on the channel axis to
each stream's noisy latent. Classifier-free guidance runs the prompt and the negative prompt as ONE batch of 2B
(one forward per step) and mixes v = v_neg + guidance * (v_pos - v_neg). Noise comes from a seeded CPU
`torch.Generator`, so a seed gives the same start on every device and the CPU result is deterministic.

A `vera.presets.StepPlan` (from the shot's speed preset) may drop the negative branch for the late steps (the
guidance schedule) and lets diffusers' MagCache skip the joint layers on steps it predicts; the loop itself
only asks the plan which steps are guided and wraps the model calls in `vera.stepcache.step_cache`.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from vera.errors import BadInput
from vera.presets import SAMPLERS
from vera.stepcache import step_cache

NUM_TRAIN_TIMESTEPS = 1000
# Where each grid starts before the shift. Wan's UniPC starts at its largest training sigma, 1 - 1/1000, as the
# float32 its scheduler stores (the float32 rounding decides a few integer timesteps); Euler starts at 1 as Wan's
# `get_sampling_sigmas` does.
_GRID_START = {"unipc": float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS)), "euler": 1.0}


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise BadInput(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")


def unshifted_sigmas(sampler: str, steps: int) -> np.ndarray:
    """Wan2.1's evenly spaced grid, before the shift: `steps` values from the grid's start down, 0 excluded."""
    _check_sampler(sampler)
    return np.linspace(_GRID_START[sampler], 0.0, int(steps) + 1)[:-1]


def make_scheduler(sampler: str, shift: float, steps: int, device=None):
    """The diffusers scheduler for `sampler`, its timesteps set to Wan2.1's grid for `steps` and `shift`.

    Each scheduler gets the unshifted grid and applies the shift itself, once. UniPC's timesteps are then
    integers (1000 sigma, truncated, as in Wan); Euler's are 1000 sigma.
    """
    _check_sampler(sampler)
    if sampler == "unipc":
        scheduler = UniPCMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                            prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=float(shift))
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=float(shift))
    scheduler.set_timesteps(sigmas=unshifted_sigmas(sampler, steps), device=device)
    return scheduler


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise from a CPU generator: identical for a seed on every machine and device."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def model_input(latents: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """(B, S, z, f, h, w) noisy latents ++ (B, c, f, h, w) conditioning, repeated for each of the S streams."""
    streams = latents.shape[1]
    return torch.cat([latents, condition.unsqueeze(1).expand(-1, streams, -1, -1, -1, -1)], dim=2)


@torch.no_grad()
def sample(model, condition: torch.Tensor, context: torch.Tensor, negative_context: torch.Tensor | None = None,
           *, steps: int, guidance: float, shift: float, sampler: str = "unipc", seed: int = 0,
           progress=None, plan=None) -> torch.Tensor:
    """Sample the three streams' latents, (B, 3, z_dim, f, h, w) float32.

    model: a VeraMoT (x (B, 3, in_dim, f, h, w), t (B,), context (B, L, D)) -> velocity (B, 3, z_dim, f, h, w).
    condition: (B, in_dim - z_dim, f, h, w) source latents ++ packed mask.
    context / negative_context: (B, L, D) prompt embeddings; guidance <= 1 or no negative context -> no CFG.
    progress: anything with `advance(n, note)` (vera.progress.Progress); advanced once per step.
    plan: a vera.presets.StepPlan (guidance schedule, step caching); None runs every step in full.
    """
    if int(steps) < 1:
        raise BadInput(f"sampler steps must be at least 1, got {steps}")
    cfg = model.cfg
    # Sample where the conditioning is: the model's weights may sit in CPU memory between layers (vera.offload).
    # Inputs stay float32: the model casts each Linear's input to its compute dtype (vera.model.dit).
    device, dtype = condition.device, torch.float32
    batch, _, frames, height, width = condition.shape
    streams = len(cfg.streams)
    latents = initial_noise((batch, streams, cfg.z_dim, frames, height, width), seed).to(device)
    condition = condition.to(device, torch.float32)

    use_cfg = negative_context is not None and float(guidance) > 1.0
    context = context.to(device, dtype)
    if use_cfg:
        # the two branches as one batch: [prompt, negative prompt]
        context = torch.cat([context, negative_context.to(device, dtype)])
        condition = torch.cat([condition, condition])

    scheduler = make_scheduler(sampler, shift, int(steps), device=device)
    with step_cache(model, plan, scheduler.timesteps) as cache:  # counts layer evaluations; caches per plan
        for index, t in enumerate(scheduler.timesteps):
            guided = use_cfg and cache.plan.guided(index, int(steps))
            x = torch.cat([latents, latents]) if guided else latents
            rows = x.shape[0]  # without the negative branch: the prompt rows only
            cache.before_step(rows)
            timestep = t.to(torch.float32).expand(rows)
            velocity = model(model_input(x, condition[:rows]).to(dtype), timestep, context[:rows]).float()
            if guided:
                v_pos, v_neg = velocity.chunk(2)
                velocity = v_neg + float(guidance) * (v_pos - v_neg)
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
            if progress is not None:
                progress.advance(1, f"step {index + 1}/{steps}")
    return latents
