"""One window of a shot through the model: plate frames in, full-resolution layers out.

    plate frames (vera.plates)  ->  model space: colour (vera.colour.to_model), size (vera.rebuild.Fit, aspect
    kept)  ->  pad to 4k+1 frames (repeat the last)  ->  VAE-encode the source; user mask packed to the latent
    grid  ->  sample edit / alpha / composite jointly (vera.sampling)  ->  decode the edit RGB and the matte  ->
    edit RGB back to the plate's colour space (vera.colour.from_model)  ->  full-resolution rebuild with the plate
    as the matte's guide, the matte threshold and the user mask as garbage matte (vera.rebuild.rebuild_layer).

`vera.render` calls `render_frames` once per window (with the window's seed) and does the cross-fades between
windows; this module knows nothing of windows or files written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vera import colour
from vera.errors import BadInput
from vera.model.dit import pack_mask
from vera.model.student import turbo_recipe
from vera.model.vae import decode_matte
from vera.offload import on_device
from vera.rebuild import feather_inside
from vera.sampling import sample
from vera.presets import plan_steps, read_calibration
from vera.rebuild import Fit, rebuild_layer
from vera.shot import MASK_CHANNELS, SamplerSpec, ShotSpec


class NonFiniteOutput(BadInput):
    """The model produced NaN/inf (NaN weights, a sampler blow-up). Caught by vera.render, which names the window."""


def _refuse_non_finite(tensor: torch.Tensor, what: str) -> None:
    # Checked on the latents: later steps (clamping, the matte threshold, the rebuild's support rectangle)
    # would turn NaN into plausible-looking zeros.
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise NonFiniteOutput(f"{bad} NaN/inf values in its {what}")


@dataclass
class RenderResult:
    layers: dict = field(default_factory=dict)      # frame -> (rgba (H,W,4) premultiplied, matte (H,W))
    composite: dict = field(default_factory=dict)   # frame -> (H,W,3) composite-stream QC preview, if asked
    fit: object = None                              # the vera.rebuild.Fit used (plate <-> model)


@dataclass
class SamplerSettings:
    sampler: str
    steps: int                     # the steps sampled (the speed preset's, from the recipe's)
    guidance: float
    shift: float
    negative_prompt: str
    speed: str = "quality"
    plan: object = None            # vera.presets.StepPlan: guidance schedule and step caching


def sampler_settings(bundle, spec: ShotSpec) -> SamplerSettings:
    """The spec's sampler choices, falling back to the bundle's defaults, with the speed preset applied."""
    d = bundle.defaults
    if spec.speed == "turbo":  # the student's own recipe: the shot's steps, guidance and shift do not apply
        d, spec = {**d, **turbo_recipe(bundle)}, replace(spec, sampler=SamplerSpec())
    pick = lambda value, key: d[key] if value is None else value  # noqa: E731
    calibration = read_calibration(getattr(bundle, "path", None)) or {}
    plan = plan_steps(spec.speed, int(pick(spec.sampler.steps, "steps")), spec.sampler.guidance_until,
                      calibration.get("curve", ()))
    return SamplerSettings(sampler=spec.sampler.name or d["sampler"], steps=plan.steps,
                           guidance=float(pick(spec.sampler.guidance, "guidance")),
                           shift=float(pick(spec.sampler.shift, "shift")),
                           negative_prompt=spec.negative_prompt or d.get("negative_prompt", ""),
                           speed=spec.speed, plan=plan)


def layer_attributes(bundle, spec: ShotSpec, seed: int) -> dict:
    """What the layer writer stores in each EXR header (as `vera/<key>`): how the layer was made."""
    settings = sampler_settings(bundle, spec)
    return {"prompt": spec.instruction, "negative_prompt": settings.negative_prompt, "task": spec.task,
            "seed": int(seed), "model": bundle.name, "source": spec.resolve(spec.plate.path),
            "sampler": settings.sampler, "steps": settings.steps, "guidance": settings.guidance,
            "shift": settings.shift, "model_resolution": "x".join(map(str, bundle.resolution)),
            "speed": settings.speed, "guidance_until": settings.plan.guidance_until,
            "step_cache": "magcache" if settings.plan.caching else "off", "attention": bundle.attention}


def padded_length(frames: int, temporal_stride: int = 4) -> int:
    """The smallest stride*k+1 frame count holding `frames` (Wan's causal VAE needs 4k+1)."""
    return ((max(frames, 1) - 1 + temporal_stride - 1) // temporal_stride) * temporal_stride + 1


class _ShareOfProgress:
    """Spreads `units` pieces of work over whatever total the caller's Progress counts (frames, steps...)."""

    def __init__(self, progress, units: int):
        self.progress, self.units, self.done = progress, max(units, 1), 0
        self.total = getattr(progress, "total", self.units) if progress is not None else 0

    def advance(self, n: int = 1, note: str = "") -> None:
        if self.progress is None:
            return
        before = self.done * self.total // self.units
        self.done = min(self.units, self.done + n)
        step = self.done * self.total // self.units - before
        if step:
            self.progress.advance(step, note)


def _mask_channel(spec: ShotSpec) -> int:
    try:
        return MASK_CHANNELS[spec.mask.channel]
    except KeyError:
        raise BadInput(f"{spec.mask.path}: mask channel must be one of R, G, B, A, got {spec.mask.channel!r}") \
            from None


def _stack(frames_hwc: list[np.ndarray], count: int) -> torch.Tensor:
    """(H,W,C) frames, padded to `count` by repeating the last -> (1, C, count, H, W)."""
    frames_hwc = frames_hwc + [frames_hwc[-1]] * (count - len(frames_hwc))
    return torch.from_numpy(np.stack(frames_hwc)).permute(3, 0, 1, 2)[None]


def _frames_out(video: torch.Tensor, count: int) -> list[np.ndarray]:
    """(1, C, F, H, W) in [-1, 1] -> the first `count` frames as (H, W, C) float32 in [0, 1]."""
    video = ((video[0, :, :count].float() + 1.0) * 0.5).clamp(0.0, 1.0)
    return list(video.permute(1, 2, 3, 0).cpu().numpy())


@torch.no_grad()
def render_window(bundle, spec: ShotSpec, frames: list[int], seed: int, progress=None,
                  decode_composite: bool = False) -> RenderResult:
    """Render `frames` (one window) of `spec`; see the module docstring. Layers at plate resolution."""
    if not frames:
        raise BadInput(f"{spec.name}: no frames to render")
    frames = [int(f) for f in frames]
    if frames != list(range(frames[0], frames[0] + len(frames))):
        raise BadInput(f"{spec.name}: a window's frames must be consecutive, got {frames[0]}..{frames[-1]} "
                       f"with gaps or out of order")
    settings = sampler_settings(bundle, spec)
    model_w, model_h = bundle.resolution
    vae = bundle.vae
    count = padded_length(len(frames))
    work = _ShareOfProgress(progress, settings.steps + 2)  # + reading/encoding + decoding/rebuilding

    plate = spec.open_plate(frames[0], frames[-1])
    fit = Fit.compute(plate.width, plate.height, model_w, model_h)
    plate_rgb, source = {}, []
    for frame in frames:
        plate_rgb[frame] = plate.read(frame).pixels[..., :3]
        # Resample first, then encode: cheaper (model size, not 4K) and, for linear plates, the filter
        # averages light rather than encoded values.
        source.append(colour.to_model(fit.to_model(plate_rgb[frame]), spec.plate.colorspace))

    garbage = {}
    if spec.mask is not None:
        masks = spec.open_mask(frames[0], frames[-1])
        if (masks.width, masks.height) != (plate.width, plate.height):
            raise BadInput(f"{spec.mask.path}: mask is {masks.width}x{masks.height}, "
                           f"the plate is {plate.width}x{plate.height}")
        channel = _mask_channel(spec)
        for frame in frames:
            garbage[frame] = np.clip(masks.read(frame).pixels[..., channel], 0.0, 1.0)
        mask_model = [fit.to_model(garbage[f])[..., None] for f in frames]  # the model sees the mask as drawn
        if spec.mask.feather > 0:  # the garbage matte ramps to 0 inside its edge (docs/shot-spec.md)
            garbage = {f: feather_inside(g, spec.mask.feather) for f, g in garbage.items()}
    else:
        # no mask: zero mask channels, as in training on records without a mask (docs/model.md)
        mask_model = [np.zeros((model_h, model_w, 1), np.float32)]

    device = bundle.device
    parts = bundle.memory != "resident"  # the VAE on the device only while it runs (vera.offload)
    with on_device(vae, device, parts):
        latent_source = vae.encode(_stack(source, count).to(device) * 2.0 - 1.0)
    packed = pack_mask(_stack(mask_model, count).to(device), vae.temporal_stride, vae.spatial_stride)
    condition = torch.cat([latent_source.float(), packed.float()], dim=1)

    embeddings = bundle.text.encode([spec.instruction, settings.negative_prompt])
    bundle.text.unload()  # embeddings are cached on disk; free the encoder's memory before sampling
    work.advance(1, "encoded")

    latents = sample(bundle.transformer, condition, embeddings[:1], embeddings[1:], steps=settings.steps,
                     guidance=settings.guidance, shift=settings.shift, sampler=settings.sampler, seed=seed,
                     progress=work, plan=settings.plan)
    _refuse_non_finite(latents, "sampled latents")

    with on_device(vae, device, parts):
        edit_rgb = _frames_out(vae.decode(latents[:, 0]), len(frames))
        matte = decode_matte(vae, latents[:, 1])[0, 0, :len(frames)].float().cpu().numpy()
        composite = _frames_out(vae.decode(latents[:, 2]), len(frames)) if decode_composite else None
    result = RenderResult(fit=fit)
    for i, frame in enumerate(frames):
        edit_plate_space = colour.from_model(edit_rgb[i], spec.plate.colorspace)
        rgba = rebuild_layer(edit_plate_space, matte[i], plate_rgb[frame], fit, threshold=spec.matte.threshold,
                             garbage=garbage.get(frame))
        result.layers[frame] = (rgba, rgba[..., 3].copy())
    if decode_composite:
        for i, frame in enumerate(frames):
            result.composite[frame] = fit.to_plate(colour.from_model(composite[i], spec.plate.colorspace))
    work.advance(1, "decoded")
    return result


def render_frames(bundle, spec: ShotSpec, frames: list[int], seed: int, progress=None) -> dict:
    """{frame: (rgba (H,W,4) premultiplied float32 at plate resolution, matte (H,W) float32)} for one window."""
    return render_window(bundle, spec, frames, seed, progress).layers
