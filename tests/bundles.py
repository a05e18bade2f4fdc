"""Test helper for end-to-end tests (any area's): a small random model bundle, an EXR plate, a shot spec.

    from bundles import random_bundle, write_plate, make_shot
    bundle_dir = random_bundle(tmp_path / "bundle")                # vera-tiny, PatchVAE(4), 64x48, window 9
    pattern = write_plate(tmp_path / "plate", 1001, 1009, 128, 72)  # plate.####.exr, RGBA half
    spec = make_shot(tmp_path, bundle_dir, pattern, 1001, 1009)    # saved as tmp_path/shot.json

The farm tests' small shot (13 frames of 24x16, windows of 9 overlapping by 2) is `write_plates` + `base_spec`
+ `write_spec`, with the session fixture `tiny_bundle` (conftest.py). `FakeRenderer` stands in for the model's
work in the runner's tests (conftest.py's `fake` fixture puts it in place; `shot` is the small shot's spec).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vera.exr import write_exr
from vera.model.bundle import create_random_bundle
from vera.shot import ModelSpec, OutputSpec, PlateSpec, SamplerSpec, ShotSpec, WindowSpec

PLATE_COLORSPACE = "ACEScg"  # scene-linear: exercises the colour round trip and superwhites


def random_bundle(folder, seed: int = 0, config: str = "vera-tiny", resolution=(64, 48), window: int = 9,
                  **kwargs) -> Path:
    """A random (seeded) bundle: fast on a CPU (2 sampler steps by default)."""
    return create_random_bundle(folder, config, seed=seed, resolution=resolution, window=window, **kwargs)


def plate_pixels(frame: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGBA plate frame: moving gradient, a bright square (superwhite), grain."""
    rng = np.random.default_rng(seed * 100_003 + frame)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin((x + 3 * frame) / 9.0)], axis=-1) * 0.8
    side = max(4, height // 4)
    x0 = (5 * frame) % max(1, width - side)
    rgb[height // 3:height // 3 + side, x0:x0 + side] = (4.0, 3.0, 2.0)
    rgb += rng.normal(0.0, 0.01, rgb.shape).astype(np.float32)
    return np.concatenate([np.clip(rgb, 0.0, None), np.ones((height, width, 1), np.float32)], axis=-1)


def write_plate(folder, first: int, last: int, width: int, height: int, seed: int = 0, name: str = "plate",
                channels: str = "RGBA") -> str:
    """Write name.####.exr frames (half) into `folder`; returns the pattern."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for frame in range(first, last + 1):
        pixels = plate_pixels(frame, width, height, seed)
        write_exr(folder / f"{name}.{frame:04d}.exr", {c: pixels[..., i] for i, c in enumerate(channels)},
                  (0, 0, width - 1, height - 1), pixel_type="half")
    return str(folder / f"{name}.####.exr")


def make_shot(folder, bundle, pattern: str, first: int, last: int, **overrides) -> ShotSpec:
    """A shot spec for the plate and bundle, saved as folder/shot.json (base_dir = folder)."""
    folder = Path(folder)
    spec = ShotSpec(name="test_shot", plate=PlateSpec(path=str(pattern), first=first, last=last,
                                                      colorspace=PLATE_COLORSPACE),
                    task="object_addition", instruction="add a red ball", negative_prompt="blurry low quality",
                    output=OutputSpec(dir=str(folder / "out")), model=ModelSpec(bundle=str(bundle), device="cpu"),
                    sampler=SamplerSpec(), window=WindowSpec(), seed=1, base_dir=str(folder))
    for key, value in overrides.items():
        setattr(spec, key, value)
    spec.save(folder / "shot.json")
    return spec


# ------------------------------------------------------------------------- the farm tests' small shot
FIRST, LAST = 1001, 1013
SMALL_WIDTH, SMALL_HEIGHT = 24, 16


def write_plates(folder, first: int = FIRST, last: int = LAST, name: str = "plate", seed: int = 0) -> str:
    """Small RGB EXR frames folder/name.####.exr; returns the pattern relative to folder."""
    write_plate(folder, first, last, SMALL_WIDTH, SMALL_HEIGHT, seed=seed, name=name, channels="RGB")
    return f"{name}.####.exr"


def base_spec(bundle="demo", **window) -> dict:
    """The small shot's spec as JSON data (relative paths: it lives beside its plates)."""
    return {
        "vera_shot": 1,
        "name": "sh010",
        "plate": {"path": "plate.####.exr", "first": FIRST, "last": LAST, "colorspace": "sRGB - Texture"},
        "task": "object_addition",
        "instruction": "add a red ball",
        "output": {"dir": "out"},
        "model": {"bundle": str(bundle), "device": "cpu"},
        "sampler": {"name": "unipc", "steps": 2},
        "seed": 7,
        "window": {"frames": 9, "overlap": 2, **window},
    }


def write_spec(folder, spec: dict, name: str = "shot.json") -> Path:
    path = Path(folder) / name
    path.write_text(json.dumps(spec, indent=1))
    return path


# ------------------------------------------------------------------------- the runner's stand-in model
def frame_layers(frame: int):
    """A premultiplied RGBA + matte that depends only on the frame (so windows agree where they overlap)."""
    rng = np.random.default_rng(frame)
    alpha = rng.random((SMALL_HEIGHT, SMALL_WIDTH), dtype=np.float32)
    alpha[alpha < 0.3] = 0.0
    rgb = rng.random((SMALL_HEIGHT, SMALL_WIDTH, 3), dtype=np.float32) * 4.0 * alpha[..., None]
    return np.dstack([rgb, alpha]), alpha


class FakeRenderer:
    """Stands in for vera.pipeline.render_frames (its signature and its {frame: (rgba, matte)} result, as
    vera.render._render_frames calls it) for the small shot; records which windows it rendered."""

    def __init__(self, per_window=False):
        self.calls = []
        self.per_window = per_window

    def __call__(self, bundle, spec, frames, seed, progress):
        self.calls.append((frames[0], frames[-1], seed))
        out = {}
        for frame in frames:
            if self.per_window:  # a flat colour per window: shows the blend weights
                value = np.float32(0.25) if frames[0] == FIRST else np.float32(0.75)
                rgba = np.full((SMALL_HEIGHT, SMALL_WIDTH, 4), value, np.float32)
                rgba[..., 3] = 1.0
                out[frame] = (rgba, rgba[..., 3].copy())
            else:
                out[frame] = frame_layers(frame)
            progress.advance(1)
        return out
