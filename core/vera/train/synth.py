"""Procedural layered clips for training and for the demo: plate, premultiplied edit element, subject matte.

Every clip is a small scene rendered with numpy on whole (F, H, W) arrays at once:
- a moving textured background (stripes, checks, dots, gradient, noise) with a camera pan;
- a subject: a deforming blob with a soft alpha edge, its own texture and motion (the preserved subject);
- the edit, one of two tasks (vera.shot.TASKS):
  * object addition: a coloured shape (ball, box, square, triangle, ring, star) moving in a direction, with a
    soft, semi-transparent drop shadow. element = object over shadow (premultiplied RGBA). Its alpha falls to
    exactly 0 a few pixels outside the shape (smoothstep edges), so a box around alpha > 0 holds all of it;
  * background change: a new background (palette colour x pattern, same camera pan). element = everything
    but the subject's solid core: the new background, and on the subject's soft edge the subject re-mixed over
    the new background (alpha 1 there). Element over plate = new background with the original subject and no
    old background left in its edge (a layer of alpha 1 - subject alpha would keep the old background's share
    of every edge pixel: a halo).
The instruction comes from a small grammar (TEMPLATES x vocabulary lists below), exposed as data because the
demo model's tokenizer vocabulary is built from it; `parse_instruction` inverts it for evaluation.

Determinism: sample i of a run with seed S draws only from numpy's generator seeded with (S, i), so one sample
can be regenerated alone (`make_sample(i, S, ...)`) and equals the one in a `generate(..., n, S)` run.
Values are display-referred sRGB-encoded in [0, 1] (SYNTH_COLORSPACE), so compositing here equals compositing
in the model's space.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.shot import TASKS
from vera.train.data import PUBLIC_TASKS, unpremultiply, write_exr_sample, write_video

OBJECT_ADDITION, BACKGROUND_CHANGE = TASKS
SYNTH_COLORSPACE = "sRGB - Texture"  # an alias known to OCIO's built-in configs; values are sRGB-encoded
SYNTH_FPS = 24
EDGE_CORE = 0.9  # background change: the subject's alpha above which the plate shows through
FIRST_FRAME = 1001

# --- the instruction grammar (data: the demo tokenizer's vocabulary is built from these) -------------------
# Palette colours (sRGB-encoded). Well separated in hue so evaluation can name an object's colour.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "green": (0.15, 0.72, 0.22),
    "blue": (0.12, 0.26, 0.92),
    "yellow": (0.96, 0.86, 0.14),
    "purple": (0.56, 0.20, 0.78),
    "white": (0.95, 0.95, 0.95),
}
SHAPES: tuple[str, ...] = ("ball", "box", "square", "triangle", "ring", "star")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PATTERNS: tuple[str, ...] = ("stripes", "checks", "dots", "gradient", "noise")
TEMPLATES: dict[str, str] = {
    OBJECT_ADDITION: "add a {colour} {shape} moving {direction}",
    BACKGROUND_CHANGE: "change the background to {colour} {pattern}; keep the subject",
}
# The slots each task's template fills, and the vocabulary list each slot draws from.
SLOTS: dict[str, dict[str, tuple[str, ...]]] = {
    OBJECT_ADDITION: {"colour": tuple(COLOURS), "shape": SHAPES, "direction": tuple(DIRECTIONS)},
    BACKGROUND_CHANGE: {"colour": tuple(COLOURS), "pattern": PATTERNS},
}


def vocabulary() -> list[str]:
    """Every word an instruction of the grammar can contain (punctuation ';' kept as its own token), sorted."""
    words: set[str] = set()
    for task, template in TEMPLATES.items():
        words.update(_words(re.sub(r"\{\w+\}", " ", template)))
        for values in SLOTS[task].values():
            words.update(values)
    return sorted(words)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|;", text.lower())


def format_instruction(task: str, **slots: str) -> str:
    """The instruction for `task` with its slots filled, e.g. ("object_addition", colour="red", shape="ball",
    direction="left") -> "add a red ball moving left". Unknown task or slot values raise BadInput."""
    if task not in TEMPLATES:
        raise BadInput(f"unknown task {task!r}; known: {', '.join(TEMPLATES)}")
    for name, values in SLOTS[task].items():
        if slots.get(name) not in values:
            raise BadInput(f"{task}: {name} must be one of {', '.join(values)}, got {slots.get(name)!r}")
    return TEMPLATES[task].format(**slots)


def _instruction_patterns() -> dict[str, re.Pattern]:
    def alternatives(values):
        return "|".join(sorted(values, key=len, reverse=True))

    oa, bc = SLOTS[OBJECT_ADDITION], SLOTS[BACKGROUND_CHANGE]
    return {
        OBJECT_ADDITION: re.compile(
            rf"^add an? (?P<colour>{alternatives(oa['colour'])}) (?P<shape>{alternatives(oa['shape'])})"
            rf" moving (?P<direction>{alternatives(oa['direction'])})$"),
        BACKGROUND_CHANGE: re.compile(
            rf"^change the background to (?P<colour>{alternatives(bc['colour'])})"
            rf" (?P<pattern>{alternatives(bc['pattern'])})(?: ?[;,] ?keep the subject)?$"),
    }


_PATTERNS_RE = _instruction_patterns()


def parse_instruction(text: str) -> dict:
    """Invert the grammar: "add a red ball moving left" -> {"task": "object_addition", "colour": "red",
    "shape": "ball", "direction": "left"}. Case, extra spaces and a final full stop are ignored.
    Text outside the grammar raises BadInput."""
    norm = " ".join(str(text).lower().replace(";", " ; ").split()).rstrip(".!").strip()
    norm = norm.replace(" ; ", "; ")
    for task, pattern in _PATTERNS_RE.items():
        match = pattern.match(norm)
        if match:
            return {"task": task, **match.groupdict()}
    raise BadInput(f"instruction outside the synthetic grammar: {text!r}")


def nearest_colour(rgb) -> str:
    """The palette name nearest (in chroma-normalised RGB) to an sRGB colour: names an object's colour in
    evaluation. Chroma is compared after dividing by brightness so shading does not change the answer."""
    rgb = np.asarray(rgb, dtype=np.float32)
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)

    def normalise(c):
        return c / max(float(np.max(c)), 1e-6)

    distances = [float(np.sum((normalise(rgb) - normalise(p)) ** 2)) for p in palette]
    return names[int(np.argmin(distances))]


# --- the sample ---------------------------------------------------------------------------------------------
@dataclass
class SynthSample:
    """One clip, all arrays float32 over (F, H, W[, C]) in [0, 1]."""

    plate: np.ndarray       # (F,H,W,3) the source: subject over the old background
    element: np.ndarray     # (F,H,W,4) premultiplied RGBA edit layer; A is the ground-truth matte
    mask: np.ndarray        # (F,H,W) the preserved subject's alpha
    composite: np.ndarray   # (F,H,W,3) the target, rendered from the scene's own layers
    instruction: str
    task: str
    params: dict = field(default_factory=dict)  # the slots and scene parameters (JSON-serialisable)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample `index` in a run with `seed`: independent of every other sample."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]))


def make_sample(index: int, seed: int = 0, size: tuple[int, int] = (128, 96), frames: int = 9,
                tasks=TASKS, **slots: str) -> SynthSample:
    """Render sample `index` of the run with `seed`. The task alternates over `tasks` by index (balanced);
    slots (task=..., colour=..., shape=..., direction=..., pattern=...) override the random draws, e.g. for
    the demo or a fixed evaluation set."""
    width, height = _check_size(size)
    frames = int(frames)
    if frames < 1:
        raise BadInput(f"frames must be at least 1, got {frames}")
    tasks = tuple(tasks)
    for task in tasks:
        if task not in TASKS:
            raise BadInput(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    rng = sample_rng(seed, index)
    task = slots.pop("task", None) or tasks[int(index) % len(tasks)]
    if task not in TASKS:
        raise BadInput(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    # Every random draw happens in a fixed order whatever is overridden, so overriding one slot leaves the
    # rest of the scene unchanged.
    chosen = {name: values[int(rng.integers(len(values)))] for name, values in SLOTS[task].items()}
    for name, value in slots.items():
        if name not in SLOTS[task]:
            raise BadInput(f"{task} has no slot {name!r}; slots: {', '.join(SLOTS[task])}")
        chosen[name] = value
    instruction = format_instruction(task, **chosen)

    grid = _Grid(width, height, frames)
    scene = _draw_scene(rng, grid)
    if task == OBJECT_ADDITION:
        element, composite, extra = _add_object(rng, grid, scene, chosen)
    else:
        element, composite, extra = _change_background(rng, grid, scene, chosen)
    params = {"task": task, **chosen, "seed": int(seed), "index": int(index), **scene.params, **extra}
    return SynthSample(plate=scene.plate, element=element, mask=scene.subject_alpha, composite=composite,
                       instruction=instruction, task=task, params=params)


@dataclass
class DemoPlate:
    rgb: np.ndarray            # (F,H,W,3) sRGB-encoded in [0,1]
    subject_alpha: np.ndarray  # (F,H,W) the subject's matte (ground truth for what must stay untouched)
    colorspace: str = SYNTH_COLORSPACE


def make_demo_plate(width: int = 128, height: int = 96, frames: int = 17, seed: int = 0) -> DemoPlate:
    """A procedural plate (moving textured background + soft-edged subject, no edit), drawn exactly like the
    training scenes so the demo model sees in-distribution input. Used by `vera-render demo`."""
    width, height = _check_size((width, height))
    grid = _Grid(width, height, int(frames))
    scene = _draw_scene(sample_rng(seed, -1 & 0xFFFFFFFF), grid)
    return DemoPlate(rgb=scene.plate, subject_alpha=scene.subject_alpha)


def generate(out_dir, n: int, seed: int = 0, size: tuple[int, int] = (128, 96), frames: int = 9,
             tasks=TASKS, first_frame: int = FIRST_FRAME, progress=None, jobs: int = 1) -> list[Path]:
    """Write samples 0..n-1 as layered EXR sample folders `out_dir/sample_#####` (docs/training.md) plus a
    `dataset.json` describing the run. Each folder appears complete or not at all. `jobs` processes write
    them (sample i depends only on (seed, i), so the files are the same for any count). Returns the folders."""
    if int(n) < 1:
        raise BadInput(f"--n must be at least 1, got {n}")
    if int(jobs) < 1:
        raise BadInput(f"--jobs must be at least 1, got {jobs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width, height = _check_size(size)
    work = [(out_dir, index, seed, (width, height), frames, tuple(tasks), first_frame) for index in range(int(n))]
    if int(jobs) == 1:
        written = map(_write_sample, work)
    else:
        pool = ProcessPoolExecutor(int(jobs), mp_context=multiprocessing.get_context("spawn"))
        written = pool.map(_write_sample, work, chunksize=max(1, len(work) // (8 * int(jobs))))
    folders = []
    try:
        for folder in written:
            folders.append(folder)
            if progress is not None:
                progress.advance(1, folder.name)
    finally:
        if int(jobs) > 1:
            pool.shutdown(cancel_futures=True)
    atomic_write_text(out_dir / "dataset.json", json.dumps({
        "format": "vera-layered-exr", "generator": "vera.train.synth", "n": int(n), "seed": int(seed),
        "size": [width, height], "frames": int(frames), "tasks": list(tasks)}, indent=2) + "\n")
    return folders


def _write_sample(work) -> Path:
    out_dir, index, seed, size, frames, tasks, first_frame = work
    sample = make_sample(index, seed, size, frames, tasks)
    folder = out_dir / f"sample_{index:05d}"
    write_exr_sample(folder, plate=sample.plate, element=sample.element, mask=sample.mask,
                     instruction=sample.instruction, task=sample.task, fps=SYNTH_FPS,
                     first=first_frame, colorspace=SYNTH_COLORSPACE, extra={"synthetic": sample.params})
    return folder


def write_public_train(out_dir, samples: list[SynthSample]) -> Path:
    """Write `samples` in the public Vera-Layered-Video training format: `train.jsonl` (edit_instruction,
    input_video_path, edit_rgb_path, edit_alpha_path, mask_path, composite_path) and the MP4s it names under
    videos/. Returns the JSONL path."""
    out_dir = Path(out_dir)
    lines = []
    for i, sample in enumerate(samples):
        streams = {"input": sample.plate, "edit": unpremultiply(sample.element), "alpha": sample.element[..., 3],
                   "mask": sample.mask, "comp": sample.composite}
        names = {k: f"videos/{i}_{k}.mp4" for k in streams}
        for kind, pixels in streams.items():
            write_video(out_dir / names[kind], pixels)
        lines.append({"edit_instruction": sample.instruction, "input_video_path": names["input"],
                      "edit_rgb_path": names["edit"], "edit_alpha_path": names["alpha"],
                      "mask_path": names["mask"], "composite_path": names["comp"]})
    path = out_dir / "train.jsonl"
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in lines))
    return path


def generate_public_test(out_dir, n: int, seed: int = 0, size: tuple[int, int] = (128, 96), frames: int = 9,
                         tasks=TASKS, progress=None) -> Path:
    """Write samples 0..n-1 in the public Vera-Layered-Video test-split format: `test.jsonl` (video_id,
    input_path, subject_type, prompt_id, prompt, target_caption, source_caption for obj_add, edit_type,
    mask_path, alpha_path) and the MP4s it names under videos/ (the source, the preserved subject's mask, the
    reference edit alpha). Returns the JSONL path."""
    if int(n) < 1:
        raise BadInput(f"--n must be at least 1, got {n}")
    out_dir = Path(out_dir)
    edit_types = {task: edit_type for edit_type, task in PUBLIC_TASKS.items()}
    records = []
    for index in range(int(n)):
        sample = make_sample(index, seed, _check_size(size), frames, tasks)
        video_id = f"synth_{index:05d}"
        paths = {kind: f"videos/{video_id}_{kind}.mp4" for kind in ("input", "mask", "alpha")}
        for kind, pixels in zip(paths, (sample.plate, sample.mask, sample.element[..., 3])):
            write_video(out_dir / paths[kind], pixels)
        source_caption = f"a {sample.params['background_pattern']} background with a soft-edged subject"
        record = {"video_id": video_id, "input_path": paths["input"], "subject_type": "blob", "prompt_id": index,
                  "prompt": sample.instruction, "target_caption": f"{source_caption}; {sample.instruction}",
                  "edit_type": edit_types[sample.task], "mask_path": paths["mask"], "alpha_path": paths["alpha"]}
        if sample.task == OBJECT_ADDITION:
            record["source_caption"] = source_caption
        records.append(record)
        if progress is not None:
            progress.advance(1, video_id)
    path = out_dir / "test.jsonl"
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return path


def _check_size(size) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 8 or height < 8:
        raise BadInput(f"size must be at least 8x8, got {width}x{height}")
    return width, height


# --- drawing ------------------------------------------------------------------------------------------------
class _Grid:
    """Pixel-centre coordinates in frame-height units (so patterns look alike at any resolution), per frame."""

    def __init__(self, width: int, height: int, frames: int):
        self.width, self.height, self.frames = width, height, frames
        self.px = 1.0 / height  # one pixel in frame-height units
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self.u = ((xs + 0.5) * self.px)[None]  # (1,H,W)
        self.v = ((ys + 0.5) * self.px)[None]
        self.t = np.arange(frames, dtype=np.float32)[:, None, None]  # (F,1,1) frame index
        self.aspect = width / height
        # progress through the clip in [0,1] (a 1-frame clip sits at 0)
        self.s = self.t / max(frames - 1, 1)


def _smooth01(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _coverage(signed_distance_px, softness_px):
    """Alpha of a shape from its signed distance in pixels (negative inside): a smooth ramp `softness_px`
    wide across the edge, so edges are anti-aliased (about 1 px) or soft (several px)."""
    return _smooth01(0.5 - signed_distance_px / softness_px).astype(np.float32)


def _value_noise(u, v, lattice):
    """Smooth periodic value noise: the lattice's random values, bicubic-smoothstep interpolated."""
    size = lattice.shape[0]
    x0, y0 = np.floor(u), np.floor(v)
    fx, fy = _smooth01(u - x0), _smooth01(v - y0)
    i0, j0 = x0.astype(np.int64) % size, y0.astype(np.int64) % size
    i1, j1 = (i0 + 1) % size, (j0 + 1) % size
    top = lattice[j0, i0] * (1 - fx) + lattice[j0, i1] * fx
    bottom = lattice[j1, i0] * (1 - fx) + lattice[j1, i1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _fbm(rng, u, v, octaves=3):
    """Fractal noise in [0,1] from `octaves` lattices (each draw from rng, so the result is seeded)."""
    total, norm, amplitude, frequency = 0.0, 0.0, 1.0, 1.0
    for _ in range(octaves):
        lattice = rng.random((16, 16)).astype(np.float32)
        total = total + amplitude * _value_noise(u * frequency, v * frequency, lattice)
        norm += amplitude
        amplitude *= 0.5
        frequency *= 2.0
    return total / norm


def _pattern(rng, kind: str, u, v, px: float):
    """A pattern field in [0,1] (0 = first colour, 1 = second) over coordinates u, v in frame heights.
    Sharp patterns get a ~1 px anti-aliased transition."""
    period = float(rng.uniform(0.12, 0.3))
    angle = float(rng.uniform(0, np.pi))
    a = u * np.cos(angle) + v * np.sin(angle)
    b = -u * np.sin(angle) + v * np.cos(angle)
    noise_rng = np.random.default_rng(rng.integers(2**32))  # drawn always: later draws do not depend on kind
    if kind == "stripes":
        wave = np.sin(2 * np.pi * a / period)
        return np.clip(0.5 + wave * period / (2 * np.pi * px), 0, 1)
    if kind == "checks":
        wave = np.sin(2 * np.pi * a / period) * np.sin(2 * np.pi * b / period)
        return np.clip(0.5 + wave * period / (2 * np.pi * px), 0, 1)
    if kind == "dots":
        fa, fb = a / period - np.floor(a / period) - 0.5, b / period - np.floor(b / period) - 0.5
        distance = np.sqrt(fa * fa + fb * fb) * period
        return np.clip(0.5 + (0.3 * period - distance) / px, 0, 1)
    if kind == "gradient":
        return 0.5 + 0.5 * np.sin(2 * np.pi * a / (4 * period))
    if kind == "noise":
        return _smooth01((_fbm(noise_rng, u / period, v / period) - 0.25) / 0.5)
    raise BadInput(f"unknown pattern {kind!r}; known: {', '.join(PATTERNS)}")


def _random_colour(rng):
    """A random sRGB colour of moderate saturation and brightness (old backgrounds, subjects)."""
    hue = float(rng.random())
    saturation = float(rng.uniform(0.2, 0.8))
    value = float(rng.uniform(0.3, 0.9))
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return (value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0, 1)).astype(np.float32)


@dataclass
class _Scene:
    plate: np.ndarray
    subject_alpha: np.ndarray
    subject_rgb: np.ndarray    # (F,H,W,3) the subject's own (straight) colour, for re-mixing its edge
    pan: tuple[float, float]   # camera pan in frame heights per frame (background moves by -pan)
    params: dict


def _draw_scene(rng, grid: _Grid) -> _Scene:
    """Background with camera pan + a soft-edged textured subject over it."""
    pan = (float(rng.uniform(-0.02, 0.02)), float(rng.uniform(-0.01, 0.01)))
    kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
    u_bg, v_bg = grid.u + pan[0] * grid.t, grid.v + pan[1] * grid.t
    field_bg = _pattern(rng, kind, u_bg, v_bg, grid.px)
    colour_a, colour_b = _random_colour(rng), _random_colour(rng)
    grain = 0.9 + 0.2 * _fbm(rng, u_bg / 0.05, v_bg / 0.05, octaves=2)
    background = (colour_a * (1 - field_bg[..., None]) + colour_b * field_bg[..., None]) * grain[..., None]

    # Subject: a blob whose radius wobbles with angle and time, drifting slowly across the frame.
    centre0 = (float(rng.uniform(0.35, 0.65)) * grid.aspect, float(rng.uniform(0.4, 0.65)))
    drift = (float(rng.uniform(-0.2, 0.2)) * grid.aspect, float(rng.uniform(-0.1, 0.1)))
    radius = float(rng.uniform(0.16, 0.28))
    harmonics = [(k, float(rng.uniform(0.0, 0.12)), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(-0.3, 0.3)))
                 for k in (2, 3, 5)]
    softness_px = float(rng.uniform(1.5, 4.0))
    dx = grid.u - (centre0[0] + drift[0] * grid.s)
    dy = grid.v - (centre0[1] + drift[1] * grid.s)
    rho, theta = np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx)
    edge = radius * (1 + sum(amp * np.sin(k * theta + phase + speed * grid.t) for k, amp, phase, speed in harmonics))
    alpha = _coverage((rho - edge) / grid.px, softness_px)
    subject_colour = _random_colour(rng)
    texture = 0.75 + 0.25 * _fbm(rng, dx / 0.08, dy / 0.08, octaves=2)
    shading = 1.0 - 0.3 * np.clip(rho / np.maximum(edge, 1e-6), 0, 1) ** 2
    subject = subject_colour * (texture * shading)[..., None]
    plate = subject * alpha[..., None] + background * (1 - alpha[..., None])
    params = {"background_pattern": kind, "pan": list(pan), "subject_radius": radius,
              "subject_softness_px": softness_px}
    return _Scene(plate=np.clip(plate, 0, 1).astype(np.float32), subject_alpha=alpha,
                  subject_rgb=np.clip(subject, 0, 1).astype(np.float32), pan=pan, params=params)


def _shape_distance(shape: str, x, y, size: float):
    """Signed distance (frame heights, negative inside) to a shape of radius `size` centred at the origin;
    y points down in the image."""
    if shape == "ball":
        return np.sqrt(x * x + y * y) - size
    if shape in ("box", "square"):  # a box is a square: two words, one shape
        half = size * 0.85
        qx, qy = np.abs(x) - half, np.abs(y) - half
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":  # equilateral, pointing up (exact distance, after Inigo Quilez)
        r, k = size * 1.1, np.sqrt(3.0)
        px, py = np.abs(x) - r, -y + r / k
        flip = px + k * py > 0
        px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
        px = px - np.clip(px, -2 * r, 0)
        return -np.sqrt(px * px + py * py) * np.sign(py)
    if shape == "ring":  # a band of width 0.5 size around a hole of radius 0.5 size: the hole stays visible
        return np.abs(np.sqrt(x * x + y * y) - size * 0.75) - size * 0.25
    if shape == "star":  # five points: the radius swings between 1.15 and 0.5 size with the angle
        theta = np.arctan2(-y, x) - np.pi / 2
        wave = np.abs(((theta * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at a point, 0 between points
        rho = np.sqrt(x * x + y * y)
        return (rho - size * (0.5 + 0.65 * wave)) * 0.8  # not an exact distance; 0.8 keeps the edge ~1 px
    raise BadInput(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _add_object(rng, grid: _Grid, scene: _Scene, slots: dict):
    size = float(rng.uniform(0.11, 0.17))  # 5-8 model pixels: a ring's hole and a star's points stay visible
    travel = float(rng.uniform(0.3, 0.5))
    across = float(rng.uniform(0.3, 0.7))
    direction = DIRECTIONS[slots["direction"]]
    # Start on the side opposite the motion so the object crosses the frame and stays in it.
    extent = (grid.aspect, 1.0)
    start = []
    for axis in (0, 1):
        if direction[axis] == 0:
            start.append(across * extent[axis])
        else:
            begin = (0.5 - direction[axis] * travel / 2) * extent[axis]
            start.append(begin)
    travel_xy = (direction[0] * travel * extent[0], direction[1] * travel * extent[1])
    cx = start[0] + travel_xy[0] * grid.s
    cy = start[1] + travel_xy[1] * grid.s
    x, y = grid.u - cx, grid.v - cy
    object_alpha = _coverage(_shape_distance(slots["shape"], x, y, size) / grid.px, float(rng.uniform(0.8, 1.5)))
    if slots["shape"] == "ball":
        shading = 1.0 - 0.3 * np.clip(np.sqrt((x + 0.3 * size) ** 2 + (y + 0.3 * size) ** 2) / (1.6 * size), 0, 1)
    else:
        shading = 0.9 + 0.1 * np.clip(-y / size, -1, 1)
    object_rgb = np.asarray(COLOURS[slots["colour"]], np.float32) * shading[..., None]

    # Drop shadow: the same silhouette, offset down-right, blurred by a wide edge ramp, semi-transparent.
    offset = (0.3 * size, 0.4 * size)
    opacity = float(rng.uniform(0.35, 0.6))
    shadow_alpha = opacity * _coverage(
        _shape_distance(slots["shape"], x - offset[0], y - offset[1], size) / grid.px, 0.5 * size / grid.px)

    a_obj, a_sh = object_alpha[..., None], shadow_alpha[..., None]
    # element = object over shadow (the shadow's premultiplied colour is black)
    element_alpha = object_alpha + shadow_alpha * (1 - object_alpha)
    element = np.concatenate([object_rgb * a_obj, element_alpha[..., None]], axis=-1).astype(np.float32)
    # The target, composited layer by layer in scene order: shadow darkens the plate, the object covers it.
    shadowed = scene.plate * (1 - a_sh)
    composite = (object_rgb * a_obj + shadowed * (1 - a_obj)).astype(np.float32)
    extra = {"object_size": size, "object_start": [float(start[0]), float(start[1])],
             "object_travel": [float(travel_xy[0]), float(travel_xy[1])], "shadow_opacity": opacity}
    return element, composite, extra


def _change_background(rng, grid: _Grid, scene: _Scene, slots: dict):
    # The new background follows the same camera pan as the plate's.
    u_bg, v_bg = grid.u + scene.pan[0] * grid.t, grid.v + scene.pan[1] * grid.t
    pattern_field = _pattern(rng, slots["pattern"], u_bg, v_bg, grid.px)[..., None]
    main = np.asarray(COLOURS[slots["colour"]], np.float32)
    shade = main * float(rng.uniform(0.3, 0.5))  # the same hue, darker: the named colour dominates
    new_background = main * (1 - pattern_field) + shade * pattern_field
    keep = scene.subject_alpha[..., None]
    # The target: the subject mixed over the new background by its matte (no old background anywhere).
    target = scene.subject_rgb * keep + new_background * (1 - keep)
    # Only the subject's solid core (alpha near 1) may show the plate; elsewhere the layer covers it (alpha 1)
    # and carries the target itself. In between, the layer adds what the partly shown plate lacks.
    core = _smooth01((keep - EDGE_CORE) / (1 - EDGE_CORE))
    alpha = 1 - core
    premultiplied = np.clip(target - core * scene.plate, 0, alpha)
    element = np.concatenate([premultiplied, alpha], axis=-1).astype(np.float32)
    composite = (premultiplied + core * scene.plate).astype(np.float32)  # element over plate
    return element, composite, {}
