"""`vera-render calibrate`: measure a bundle's step-cache curve on shots and write it to speed.json beside its
bundle.json (vera.presets reads it; the balanced and preview speeds use it; the farm never calibrates).

A command above the renderer: it loads shots (vera.layout) and renders their first windows (vera.pipeline)
with a recorder on the joint layers.
"""

from __future__ import annotations

import numpy as np
import torch

import vera
from vera.errors import BadInput
from vera.layout import load_shot
from vera.model.bundle import load_bundle
from vera.model.bundle_manifest import bundle_folder
from vera.pipeline import render_frames, sampler_settings


class ResidualMagnitudes:
    """Records, for every model call, its timestep and the mean token norm of the joint layers' total residual
    (last block's output - first block's input, over all streams and rows): what MagCache's ratios are made of."""

    def __init__(self, model):
        self.model, self.records, self.handles = model, [], []

    def __enter__(self):
        state = {}

        def take_t(module, args):
            state["t"] = float(args[1].reshape(-1)[0])

        def take_input(module, args):
            state["x"] = args[0]

        def record(module, args, output):
            residual = (output - state["x"]).float()
            self.records.append((state["t"], float(torch.linalg.norm(residual, dim=-1).mean())))

        blocks = self.model.blocks
        self.handles = [self.model.register_forward_pre_hook(take_t), blocks[0].register_forward_pre_hook(take_input),
                        blocks[-1].register_forward_hook(record)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False


def calibrate(spec_paths, steps: int | None = None, seed: int = 0, progress=None) -> tuple[str, dict]:
    """Render the first window of each shot at the full recipe (`steps` overriding the recipe's: a fine grid
    gives a detailed curve) and measure the residual-magnitude curve. Returns (bundle folder, speed.json data).
    Every shot must use the same bundle, sampler and shift."""
    shots = [load_shot(path) for path in spec_paths]
    if not shots:
        raise BadInput("calibrate: give at least one shot spec")
    names = {"demo" if s.spec.model.bundle == "demo" else s.spec.resolve(s.spec.model.bundle) for s in shots}
    if len(names) != 1:
        raise BadInput(f"calibrate: the shots use different bundles ({', '.join(sorted(names))}); calibrate each "
                       "bundle with its own shots")
    name = names.pop()
    bundle = load_bundle(name, device=shots[0].spec.model.device)
    runs, recipe = [], None
    for shot in shots:
        spec = shot.spec
        spec.speed = "quality"
        if steps is not None:
            spec.sampler.steps = int(steps)
        settings = sampler_settings(bundle, spec)
        this = {"sampler": settings.sampler, "steps": settings.steps, "shift": settings.shift,
                "guidance": settings.guidance}
        if recipe is not None and this != recipe:
            raise BadInput(f"{shot.spec_path}: calibrate: recipe {this} differs from the first shot's {recipe}")
        recipe = this
        with ResidualMagnitudes(bundle.transformer) as magnitudes:
            render_frames(bundle, spec, shot.windows[0].frames, seed)
        runs.append(magnitudes.records)
        if progress is not None:
            progress.advance(1, f"{spec.name}")
    timesteps = [t for t, _ in runs[0]]
    data = {"curve": curve_from_steps(timesteps, [[m for _, m in run] for run in runs]),
            "calibrated": dict(recipe, shots=[s.spec.name for s in shots], seed=int(seed)),
            "vera": vera.__version__}
    return str(bundle_folder(name)), data


def curve_from_steps(timesteps, magnitudes: list[list[float]]) -> list[list[float]]:
    """Average several runs' per-step mean residual magnitudes (same grid) into [[t, log magnitude], ...].

    Each run is normalised to its first step, so clips of different content weigh the same."""
    logs = np.log(np.asarray(magnitudes, dtype=np.float64))
    mean = (logs - logs[:, :1]).mean(axis=0)
    return [[round(float(t), 4), round(float(m), 6)] for t, m in zip(timesteps, mean)]
