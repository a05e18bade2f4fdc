"""`vera-render demo`: a procedural plate, the embedded demo model, and a contact sheet for a person to look at.

The demo is a real shot: it writes the plate as an EXR sequence and a shot spec (`shot.json`), then renders
it with `vera.render.run`, the same windows / cache / assemble path a farm task takes (so
`vera-render run DIR/shot.json` repeats it), composites with `vera.comp` and checks the untouched pixels with
its QC. Output folder:

    shot.json                 the shot spec (vera.shot.ShotSpec)
    plate/plate.####.exr      the plate (procedural, or --plate's frames copied in as half EXR)
    mask/mask.####.exr        object addition only: where the object goes (the demo model's placement hint)
    layers/edit.####.exr      the edit layer: premultiplied RGBA + matte.A (docs/output-format.md)
    comp/comp.####.exr        edit over plate
    qc.json                   vera.comp QC: untouched pixels must be bit-exact
    contact_sheet.png         plate | edit layer over a checkerboard | matte | composite, one row per sampled frame
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from vera.atomic import atomic_path, atomic_write_text
from vera.colour import to_model
from vera.comp import Inputs, comp_sequence, qc_sequence
from vera.errors import BadInput
from vera.exr import read_layer
from vera.files import refuse_overwrite
from vera.layout import load_shot
from vera.model.bundle_manifest import read_manifest
from vera.plates import open_sequence
from vera.render import run
from vera.shot import MaskSpec, OutputSpec, PlateSpec, ShotSpec, WindowSpec
from vera.train.data import unpremultiply, write_exr_frame
from vera.train.evaluate import PLACEMENT_MARGIN_MODEL_PX
from vera.train.masks import placement_mask
from vera.train.synth import SYNTH_COLORSPACE, TEMPLATES, make_demo_plate, make_sample, parse_instruction

DEFAULT_PROMPT = "add a red ball moving left"
PLATE_SIZE = (128, 96)
FIRST_FRAME = 1001
SHEET_ROWS = 3
CHECKER_PX = 8


def _grammar_help() -> str:
    return "; ".join(f"'{t}'" for t in TEMPLATES.values())


def parse_prompt(prompt: str) -> dict:
    """The instruction's task and slots; the demo model knows only the synthetic grammar (docs/demo-model.md)."""
    try:
        return parse_instruction(prompt)
    except BadInput:
        raise BadInput(f"--prompt {prompt!r}: the demo model understands only its grammar: {_grammar_help()} "
                       "(docs/demo-model.md)") from None


def write_plate(folder: Path, rgb: np.ndarray, first: int) -> str:
    """(F,H,W,3) frames -> folder/plate.####.exr (half RGB); returns the pattern."""
    for i, frame in enumerate(rgb):
        write_exr_frame(folder / f"plate.{first + i:04d}.exr", frame, "RGB")
    return str(folder / "plate.####.exr")


def placement_for(slots: dict, size: tuple[int, int], frames: int, seed: int, model_height: int) -> np.ndarray:
    """(F,H,W) placement mask for an object addition: the box a synthetic object of these slots would occupy
    (vera.train.synth draws the path), grown by the training margin, as a user would draw "put it here"."""
    sample = make_sample(0, seed, size, frames, task="object_addition", colour=slots["colour"],
                         shape=slots["shape"], direction=slots["direction"])
    margin = int(round(PLACEMENT_MARGIN_MODEL_PX * size[1] / model_height))
    return placement_mask(sample.element[..., 3], margin)


def build_shot(out: Path, prompt: str, plate_pattern: str, first: int, last: int, colorspace: str, seed: int,
               mask_pattern: str | None, window: int):
    def rel(path):
        path = Path(path)
        return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)

    parsed = parse_prompt(prompt)
    return ShotSpec(name="demo", plate=PlateSpec(path=rel(plate_pattern), first=first, last=last,
                                                 colorspace=colorspace),
                    task=parsed["task"], instruction=prompt, output=OutputSpec(dir="layers", name="edit"),
                    mask=MaskSpec(path=rel(mask_pattern)) if mask_pattern else None, seed=int(seed),
                    # overlap 1 for the 5-frame demo window: 2 would make 9 frames need a window thrice
                    window=WindowSpec(frames=window, overlap=max(1, min(8, (window - 1) // 4))), base_dir=str(out))


def _checkerboard(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    cells = ((ys // CHECKER_PX + xs // CHECKER_PX) % 2).astype(np.float32)
    return (0.35 + 0.3 * cells)[..., None].repeat(3, axis=2)


def sheet_row(plate_rgb, edit_rgba, matte, comp_rgb, colorspace: str) -> np.ndarray:
    """One contact-sheet row, display-referred [0,1]: plate | edit over checkerboard | matte | composite."""
    h, w = plate_rgb.shape[:2]
    alpha = np.clip(edit_rgba[..., 3:4], 0, 1)
    edit_display = to_model(unpremultiply(edit_rgba), colorspace)
    over_checker = edit_display * alpha + _checkerboard(h, w) * (1 - alpha)
    gap = np.ones((h, 2, 3), np.float32)
    tiles = [to_model(plate_rgb, colorspace), over_checker, np.repeat(np.clip(matte, 0, 1)[..., None], 3, 2),
             to_model(comp_rgb, colorspace)]
    row = []
    for tile in tiles:
        row += [np.clip(tile, 0, 1).astype(np.float32), gap]
    return np.concatenate(row[:-1], axis=1)


def write_png(path: Path, image: np.ndarray) -> None:
    """(H,W,3) float [0,1] -> 8-bit PNG through OpenImageIO, atomically."""
    buf = oiio.ImageBuf(np.ascontiguousarray(image, dtype=np.float32))
    with atomic_path(path) as tmp:
        if not buf.write(tmp, "uint8", "png"):
            raise OSError(f"{path}: cannot write PNG ({buf.geterror()})")


def contact_sheet(out: Path, spec, frames: list[int], rows: int = SHEET_ROWS) -> list[int]:
    """DIR/contact_sheet.png from the written plate, layers and comp; returns the frames shown."""
    picks = sorted({frames[round(i * (len(frames) - 1) / max(rows - 1, 1))] for i in range(min(rows, len(frames)))})
    plate = spec.open_plate(frames[0], frames[-1])
    comp = open_sequence(str(out / "comp" / "comp.####.exr"), frames[0], frames[-1])
    band = []
    for frame in picks:
        edit_path = out / spec.output.dir / f"{spec.output.name}.{frame:04d}.exr"
        edit = read_layer(str(edit_path), "rgba").pixels  # its A is the matte (matte.A holds the same values)
        band.append(sheet_row(plate.read(frame).pixels[..., :3], edit, edit[..., 3], comp.read(frame).pixels[..., :3],
                              spec.plate.colorspace))
        band.append(np.ones((2, band[-1].shape[1], 3), np.float32))
    write_png(out / "contact_sheet.png", np.concatenate(band[:-1], axis=0))
    return picks


def run_demo(out: str | Path = "vera-demo", prompt: str = DEFAULT_PROMPT, plate: str | None = None,
             colorspace: str | None = None, seed: int = 0, frames: int | None = None, bundle: str = "demo",
             progress: str = "auto", speed: str | None = None, compile: bool = False) -> dict:
    """Make (or take) a plate, render the demo shot through vera.render, comp, QC and draw the contact sheet."""
    started = time.monotonic()
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: --out names an existing file; give a folder for the demo")
    if frames is not None and int(frames) < 1:
        raise BadInput(f"--frames must be at least 1, got {frames}")
    parsed = parse_prompt(prompt)
    defaults = read_manifest(bundle)["defaults"]
    window = int(defaults["window"])
    model_height = int(defaults["resolution"][1])

    if plate is None:
        count = window if frames is None else int(frames)
        demo = make_demo_plate(*PLATE_SIZE, frames=count, seed=seed)
        plate_pattern = write_plate(out / "plate", demo.rgb, FIRST_FRAME)
        first, last, colorspace = FIRST_FRAME, FIRST_FRAME + count - 1, colorspace or demo.colorspace
        size = PLATE_SIZE
    else:
        # the plate is copied in (as half EXR, frame numbers kept) so the demo folder is a self-contained shot

        sequence = open_sequence(plate)
        refuse_overwrite([(sequence.path(f), f) for f in sequence.frames], [], [out])  # the demo fills `out`
        first, last = sequence.frames[0], sequence.frames[-1]
        if frames is not None:
            last = min(last, first + int(frames) - 1)
        rgb = np.stack([sequence.read(f).pixels[..., :3] for f in range(first, last + 1)])
        plate_pattern = write_plate(out / "plate", rgb, first)
        size = (sequence.width, sequence.height)
        colorspace = colorspace or SYNTH_COLORSPACE

    mask_pattern = None
    if parsed["task"] == "object_addition":
        boxes = placement_for(parsed, size, last - first + 1, seed, model_height)
        for i, box in enumerate(boxes):
            write_exr_frame(out / "mask" / f"mask.{first + i:04d}.exr", box, "RGBA")
        mask_pattern = str(out / "mask" / "mask.####.exr")

    spec = build_shot(out, prompt, plate_pattern, first, last, colorspace, seed, mask_pattern, window)
    spec.model.bundle = bundle
    # the spec's sampler name would override the bundle's own choice (SamplerSpec defaults to unipc)
    spec.sampler.name = str(defaults["sampler"])
    if speed:
        spec.speed = speed
    spec.save(out / "shot.json")
    shot = load_shot(out / "shot.json")
    run(shot, force=True, progress=progress, compile=compile)

    edit_pattern = str(out / spec.output.dir / f"{spec.output.name}.####.exr")
    comp_pattern = str(out / "comp" / "comp.####.exr")
    inputs = Inputs(spec.resolve(spec.plate.path), edit_pattern, first, last, spec.plate.layer,
                    start_frame=spec.plate.start_frame)
    comp_sequence(inputs, comp_pattern)
    qc = qc_sequence(inputs, comp=comp_pattern)
    atomic_write_text(out / "qc.json", json.dumps(qc, indent=2) + "\n")
    shown = contact_sheet(out, spec, list(range(first, last + 1)))
    return {"out": str(out), "prompt": prompt, "task": parsed["task"], "frames": last - first + 1,
            "sheet_frames": shown, "qc_passed": bool(qc["summary"]["passed"]),
            "seconds": round(time.monotonic() - started, 1)}
