"""Held-out evaluation (`vera-train eval`): does a bundle make the edits the instructions ask for?

Each held-out shot (layered EXR samples, e.g. `vera-train synth` with a seed not trained on) becomes a real
shot spec and goes through the same pipeline as a user's shot (`vera.pipeline.render_frames`, one window:
the shot's first `window` frames). Measured per shot, at the plate's resolution:

- matte IoU: generated matte > 0.5 against the ground-truth element alpha > 0.5, over all frames;
- colour (object addition): the instruction's colour (`parse_instruction`) against the palette colour nearest
  (`nearest_colour`) to the generated edit's mean straight colour inside the generated matte;
- untouched pixels: every pixel whose edit alpha is 0 must composite (vera.comp, in the plate's pixel type)
  to the plate's own value, bit for bit;
- box edge (object addition): the largest alpha on the 1-pixel border of each frame's alpha > 1/255 bounding
  box. A soft matte has fallen to ~0 there; a matte cut by a box (the placement mask) has not, and its comp
  shows the box as a faint rectangle.

Object-addition shots get the placement mask the demo model is trained with (the element's bounding box per
frame, grown by the training margin: vera.train.fit.placement_mask) as the shot's mask, unless
`placement=False`; the grammar names what to add and how it moves, not where.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from vera.colour import to_model
from vera.comp import Pair, qc_frame
from vera.errors import BadInput
from vera.model.bundle import load_bundle
from vera.pipeline import render_frames
from vera.plates import open_sequence
from vera.progress import Progress
from vera.shot import MaskSpec, ModelSpec, OutputSpec, PlateSpec, SamplerSpec, ShotSpec
from vera.train.data import (EXR_FORMAT, find_samples, read_exr_frames, read_sample_meta, sequence_pattern,
                             write_exr_frame)
from vera.train.masks import placement_mask
from vera.train.synth import nearest_colour, parse_instruction

# Bars of the demo model (issues 4 and 21); a report says whether each is met. BARS are floors, CEILINGS caps.
BARS = {"object_addition_iou": 0.8, "background_change_iou": 0.9, "colour_match": 0.8}
CEILINGS = {"object_box_edge_alpha": 0.05}
MATTE_THRESHOLD = 0.5
TOUCHED_ALPHA = 1 / 255  # alpha above this counts as part of the matte's extent (box edge)
PLACEMENT_MARGIN_MODEL_PX = 2  # vera.train.fit's default placement_margin, in model pixels


def matte_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = MATTE_THRESHOLD) -> float:
    """Intersection over union of two mattes (any shape) thresholded at `threshold`; 1 when both are empty."""
    p, t = pred > threshold, truth > threshold
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else float(np.count_nonzero(p & t) / union)


def box_edge_alpha(alpha: np.ndarray, touched: float = TOUCHED_ALPHA) -> float:
    """The largest alpha on the 1-pixel border of the bounding box of alpha > `touched`, over the frames of
    an (F, H, W) or (H, W) matte; 0 when nothing is touched."""
    worst = 0.0
    for frame in np.asarray(alpha, np.float32).reshape(-1, *np.shape(alpha)[-2:]):
        rows, cols = np.nonzero((frame > touched).any(axis=1))[0], np.nonzero((frame > touched).any(axis=0))[0]
        if rows.size == 0:
            continue
        box = frame[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        border = np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])
        worst = max(worst, float(border.max()))
    return worst


def edit_colour(layers: list[np.ndarray], colorspace: str, threshold: float = MATTE_THRESHOLD):
    """Mean straight colour (model space, [0,1]) of premultiplied RGBA frames where alpha > threshold, or None."""
    rgb_sum, alpha_sum = np.zeros(3, np.float64), 0.0
    for rgba in layers:
        inside = rgba[..., 3] > threshold
        rgb_sum += rgba[..., :3][inside].sum(axis=0)
        alpha_sum += float(rgba[..., 3][inside].sum())
    if alpha_sum <= 0:
        return None
    straight = (rgb_sum / alpha_sum).astype(np.float32)
    return to_model(straight.reshape(1, 1, 3), colorspace).reshape(3)


def untouched_exact(rgba: np.ndarray, plate_rgb: np.ndarray, pixel_type: str) -> tuple[bool, int]:
    """(all untouched pixels exact, how many changed) for one frame, with vera.comp's over and QC."""
    h, w = plate_rgb.shape[:2]
    plate = np.concatenate([plate_rgb, np.ones((h, w, 1), np.float32)], axis=-1)
    window = (0, 0, w - 1, h - 1)
    pair = Pair(frame=0, plate=plate, edit=rgba.astype(np.float32), window=window, display_window=window,
                pixel_type=pixel_type, plate_path="plate", edit_path="edit")
    qc = qc_frame(pair)
    return qc.passed, qc.changed_untouched


def _shot_for(folder: Path, meta: dict, frames: list[int], bundle, work: Path, mask_pattern,
              feather: float = 0.0):
    return ShotSpec(name=folder.name, task=meta["task"], instruction=meta["instruction"],
                    plate=PlateSpec(path=str(sequence_pattern(folder, "plate")), first=frames[0], last=frames[-1],
                                    colorspace=str(meta.get("colorspace", "sRGB - Texture"))),
                    output=OutputSpec(dir=str(work / "out")), model=ModelSpec(bundle=str(bundle.path)),
                    sampler=SamplerSpec(name=bundle.defaults["sampler"]),
                    mask=MaskSpec(path=str(mask_pattern), feather=feather) if mask_pattern else None)


def write_placement_masks(folder: Path, frames: list[int], alpha: np.ndarray, bundle) -> Path:
    """The placement boxes the demo model is trained with (vera.train.fit.placement_mask around the element's
    alpha (F,H,W), the training margin scaled from model to plate pixels) as `folder/mask.####.exr`, the shot's
    mask; returns that pattern."""
    scale = alpha.shape[1] / bundle.resolution[1]
    boxes = placement_mask(alpha, int(round(PLACEMENT_MARGIN_MODEL_PX * scale)))
    for frame, box in zip(frames, boxes):
        write_exr_frame(folder / f"mask.{frame:04d}.exr", box, "RGBA")
    return folder / "mask.####.exr"


def evaluate_shot(bundle, folder: Path, seed: int = 0, steps: int | None = None, placement: bool = True,
                  speed: str = "quality", guidance: float | None = None, keep_layers: bool = False) -> dict:
    """Render one held-out sample folder through the pipeline and measure it (see the module docstring).
    `speed`: the vera.presets preset (default quality: the model's full recipe); `keep_layers` adds the rendered
    {frame: (rgba, matte)} as result["layers"] (not JSON: for benchmarks comparing presets)."""
    meta = read_sample_meta(folder)
    window = int(bundle.defaults["window"])
    frames = list(range(meta["first"], min(meta["last"], meta["first"] + window - 1) + 1))
    truth = read_exr_frames(folder, "element", frames)[0][..., 3]
    task = meta.get("task")
    with tempfile.TemporaryDirectory(prefix="vera-eval-") as tmp:
        work = Path(tmp)
        mask_pattern = None
        if placement and task == "object_addition":
            mask_pattern = write_placement_masks(work / "mask", frames, truth, bundle)
        # as vera-render demo: the garbage matte falls off over the box's margin (vera.demo.placement_margin_px)
        feather = PLACEMENT_MARGIN_MODEL_PX * truth.shape[1] / bundle.resolution[1] if mask_pattern else 0.0
        spec = _shot_for(folder, meta, frames, bundle, work, mask_pattern, feather)
        if steps is not None:
            spec.sampler.steps = int(steps)
        if guidance is not None:
            spec.sampler.guidance = float(guidance)
        spec.speed = speed
        layers = render_frames(bundle, spec, frames, seed)
    plate = open_sequence(str(sequence_pattern(folder, "plate")), frames[0], frames[-1])
    result = {"path": str(folder), "task": task, "instruction": meta["instruction"], "frames": len(frames),
              "iou": matte_iou(np.stack([layers[f][1] for f in frames]), truth)}
    exact, changed = True, 0
    for frame in frames:
        image = plate.read(frame)
        ok, count = untouched_exact(layers[frame][0], image.pixels[..., :3], image.pixel_type)
        exact, changed = exact and ok, changed + count
    result["untouched_exact"], result["changed_untouched_pixels"] = exact, changed
    if task == "object_addition":
        wanted = parse_instruction(meta["instruction"])["colour"]
        mean = edit_colour([layers[f][0] for f in frames], spec.plate.colorspace)
        result["colour_wanted"] = wanted
        result["colour_made"] = None if mean is None else nearest_colour(mean)
        result["colour_rgb"] = None if mean is None else [round(float(c), 4) for c in mean]
        result["colour_match"] = result["colour_made"] == wanted
        result["shape"] = parse_instruction(meta["instruction"])["shape"]
        result["box_edge_alpha"] = round(box_edge_alpha(np.stack([layers[f][1] for f in frames])), 4)
    if keep_layers:
        result["layers"] = layers
    return result


def summarise(shots: list[dict]) -> dict:
    summary: dict = {"shots": len(shots)}
    for task in ("object_addition", "background_change"):
        ious = [s["iou"] for s in shots if s["task"] == task]
        if ious:
            summary[f"{task}_shots"] = len(ious)
            summary[f"{task}_iou"] = round(float(np.mean(ious)), 4)
    shapes = sorted({s["shape"] for s in shots if "shape" in s})
    if shapes:
        summary["object_addition_iou_by_shape"] = {
            shape: round(float(np.mean([s["iou"] for s in shots if s.get("shape") == shape])), 4) for shape in shapes}
        summary["object_box_edge_alpha"] = max(s["box_edge_alpha"] for s in shots if "box_edge_alpha" in s)
    colours = [s["colour_match"] for s in shots if "colour_match" in s]
    if colours:
        summary["colour_match"] = round(sum(colours) / len(colours), 4)
    summary["untouched_exact_shots"] = sum(s["untouched_exact"] for s in shots)
    summary["untouched_exact_all"] = all(s["untouched_exact"] for s in shots)
    summary["bars"] = {name: {"bar": bar, "value": summary.get(name), "met": summary.get(name) is not None
                              and summary[name] >= bar} for name, bar in BARS.items()}
    summary["bars"].update({name: {"bar": f"<= {cap}", "value": summary.get(name), "met": summary.get(name) is not None
                                   and summary[name] <= cap} for name, cap in CEILINGS.items()})
    summary["bars"]["untouched_exact"] = {"bar": "every shot", "value": summary["untouched_exact_all"],
                                          "met": summary["untouched_exact_all"]}
    return summary


def evaluate(bundle: str = "demo", data: str | Path = "", limit: int | None = None, seed: int = 0,
             steps: int | None = None, placement: bool = True, progress: str = "auto",
             speed: str = "quality") -> dict:
    """The report {"bundle", "data", "seed", "shots": [...], "summary": {...}} for held-out shots in `data`."""
    fmt, samples, problems = find_samples(data)
    if fmt != EXR_FORMAT:
        raise BadInput(f"{data}: evaluation needs layered EXR shots (vera-train synth), found {fmt}")
    if problems:
        raise BadInput(f"{problems[0][0]}: {problems[0][1]}")
    samples = samples[:limit] if limit else samples
    if not samples:
        raise BadInput(f"{data}: no samples to evaluate")
    loaded = load_bundle(bundle, device="auto", student=speed == "turbo")
    started = time.monotonic()
    shots = []
    with Progress(len(samples), "eval", progress) as bar:
        for ref in samples:
            shots.append(evaluate_shot(loaded, Path(ref.folder), seed=seed, steps=steps, placement=placement,
                                       speed=speed))
            bar.advance(1, f"{Path(ref.folder).name} iou {shots[-1]['iou']:.2f}")
    return {"bundle": str(loaded.path), "data": str(data), "seed": seed, "placement": placement, "speed": speed,
            "steps": steps or loaded.defaults["steps"], "wall_s": round(time.monotonic() - started, 1),
            "summary": summarise(shots), "shots": shots}


def format_report(report: dict) -> str:
    s = report["summary"]
    lines = [f"{report['bundle']} on {report['data']}: {s['shots']} shots, {report['wall_s']} s"]
    for name, bar in s["bars"].items():
        lines.append(f"  {name:22s} {bar['value']!s:>8}  (bar {bar['bar']}) {'ok' if bar['met'] else 'NOT MET'}")
    return "\n".join(lines)
