"""Edit over plate, and the proof that untouched pixels stayed the plate's.

`over`: A + B(1 - a) in float32 (A = the premultiplied edit layer, B = the plate), the Merge-over of Nuke and
`oiiotool --over`. The result covers the union of both data windows (as oiiotool's does) and is written in
the plate's pixel type, so wherever the edit's alpha is 0 the written value is the plate's value, bit for bit.

QC reports, per frame, the fraction of pixels the edit touches (alpha > 0) and the largest difference between
composite and plate where alpha is 0, which must be exactly 0. A failed QC exits with vera.errors.EXIT_QC_FAILED (4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vera import exr as exr_io
from vera import plates
from vera.errors import BadInput, frame_error
from vera.files import refuse_overwrite



def over(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A over B for premultiplied (..., 4) arrays, in float32: A + B(1 - A.alpha), all four channels."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    out = a + b * (np.float32(1.0) - a[..., 3:4])
    # Where the edit is all zero the result is B itself, bit for bit: in IEEE arithmetic 0 + -0.0 is +0.0,
    # which would turn the plate's signed zeros into something the plate does not hold.
    untouched = ~a.any(axis=-1)
    out[untouched] = b[untouched]
    return out


def bits_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(h, w) True where any channel of two float32 (h, w, C) images differs in its bits (-0.0 vs +0.0 too)."""
    a = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    b = np.ascontiguousarray(b, dtype=np.float32).view(np.uint32)
    return (a != b).any(axis=-1)


def _pattern_path(pattern: str, frame: int, frames: list[int]) -> str:
    seq = plates._parse_pattern(pattern)
    if seq.padding():
        return seq.frame(frame)
    if len(frames) > 1:
        raise BadInput(f"{pattern}: the output needs a frame number pattern (e.g. comp.####.exr) for "
                       f"{len(frames)} frames")
    return pattern


@dataclass
class Pair:
    """One frame of plate and edit, both over `window` (the union of their data windows)."""

    frame: int
    plate: np.ndarray          # (h, w, 4) float32
    edit: np.ndarray           # (h, w, 4) float32, premultiplied
    window: tuple
    display_window: tuple
    pixel_type: str
    plate_path: str
    edit_path: str
    layer: str = "rgba"        # the plate's layer and view the edit goes over
    view: str | None = None


class Inputs:
    """The plate and edit sequences of a comp or QC run, checked against each other."""

    def __init__(self, plate: str, edit: str, first: int | None = None, last: int | None = None,
                 layer: str = "rgba", nonfinite: str = "error", start_frame: int = 1, view: str | None = None):
        self.plate = plates.open_sequence(plate, first, last, layer=layer, nonfinite=nonfinite,
                                          start_frame=start_frame, view=view)
        frames = self.plate.frames
        self.edit = plates.open_sequence(edit, frames[0], frames[-1], nonfinite=nonfinite)
        self.frames = frames

    def files(self) -> list[tuple[str, int]]:
        """(path, frame) of every plate and edit file read (a movie once per frame: same path)."""
        return [(seq.path(f), f) for seq in (self.plate, self.edit) for f in self.frames]

    def pair(self, frame: int) -> Pair:
        plate = self.plate.read(frame, region="data")
        edit_path = self.edit.path(frame)
        if not edit_path.lower().endswith(".exr"):
            raise frame_error(edit_path, "the edit layer must be an EXR (edit.####.exr)", frame)
        edit = self.edit.read(frame, region="data")
        if tuple(edit.display_window) != tuple(plate.display_window):
            raise frame_error(edit_path, f"display window {edit.display_window} differs from the plate's "
                                         f"{plate.display_window} ({plate.path})", frame)
        if not edit.has_alpha:
            raise frame_error(edit_path, "the edit layer has no alpha (A) channel", frame)
        window = exr_io.window_union(plate.data_window, edit.data_window)
        return Pair(frame=frame,
                    plate=exr_io.crop_to_window(plate.pixels, plate.data_window, window),
                    edit=exr_io.crop_to_window(edit.pixels, edit.data_window, window),
                    window=window, display_window=plate.display_window, pixel_type=plate.pixel_type,
                    plate_path=plate.path, edit_path=edit_path, layer=self.plate.layer, view=self.plate.view)


def stored(pixels: np.ndarray, pixel_type: str) -> np.ndarray:
    """The values a file of `pixel_type` holds for `pixels` (float32 back)."""
    if pixel_type == "half":
        return np.clip(pixels, -exr_io.HALF_MAX, exr_io.HALF_MAX).astype(np.float16).astype(np.float32)
    return pixels.astype(np.float32)


def comp_frame(pair: Pair, out_path: str, compression: str = "zip") -> None:
    """Edit over plate into `out_path`. An EXR plate is kept whole, as a Merge passes its B input through: the
    composite replaces the plate layer's R,G,B,A, every other channel, part, view and attribute is copied.
    Other plates (DPX, PNG, movies...) give R,G,B,A only."""
    result = over(pair.edit, pair.plate)
    attributes = exr_io.vera_attributes({"plate": pair.plate_path, "edit": pair.edit_path})
    if pair.plate_path.lower().endswith(".exr"):
        exr_io.write_replacing_layer(out_path, pair.plate_path, pair.layer, pair.view, result, pair.window,
                                     pair.pixel_type, attributes, compression, pair.frame)
        return
    channels = {c: result[..., i] for i, c in enumerate("RGBA")}
    exr_io.write_exr(out_path, channels, pair.display_window, pair.window, pair.pixel_type, attributes,
                     compression)


def comp_sequence(inputs: Inputs, out: str, compression: str = "zip", progress=None) -> list[str]:
    """Write edit-over-plate for every frame of `inputs`; returns the written paths."""
    exr_io.compression_code(compression)  # a bad option fails before any work
    paths = {frame: _pattern_path(out, frame, inputs.frames) for frame in inputs.frames}
    refuse_overwrite(inputs.files(), paths.values())
    written = []
    for frame in inputs.frames:
        path = paths[frame]
        comp_frame(inputs.pair(frame), path, compression)
        written.append(path)
        if progress is not None:
            progress.advance(1, f"frame {frame}")
    return written


@dataclass
class FrameQC:
    frame: int
    plate: str
    edit: str
    touched: float                # fraction of display-window pixels with alpha > 0
    max_untouched_diff: float     # largest |composite - plate| where alpha == 0 (all channels); must be 0
    changed_untouched: int        # pixels with alpha == 0 whose composite differs from the plate in its bits
    negative_alpha: int = 0       # pixels with alpha < 0: no valid layer has them (A + B(1-a) adds plate)
    comp: str | None = None
    comp_max_untouched_diff: float | None = None  # the same, for an existing composite file (--comp)
    comp_changed_untouched: int | None = None
    settings: str | None = None   # the edit frame's vera/settings (the render's settings fingerprint)

    @property
    def passed(self) -> bool:
        # Bits, not values: a -0.0 that became +0.0 is a changed pixel (its difference is 0).
        return (self.changed_untouched == 0 and self.negative_alpha == 0
                and self.comp_changed_untouched in (None, 0))


def qc_frame(pair: Pair, comp_path: str | None = None) -> FrameQC:
    alpha = pair.edit[..., 3]
    untouched = alpha == 0
    composite = stored(over(pair.edit, pair.plate), pair.pixel_type)
    diff = np.abs(composite - pair.plate).max(axis=2)
    diff_untouched = np.where(untouched, diff, 0.0)
    changed = untouched & bits_differ(composite, pair.plate)
    display_alpha = exr_io.crop_to_window(alpha, pair.window, pair.display_window)
    result = FrameQC(frame=pair.frame, plate=pair.plate_path, edit=pair.edit_path,
                     touched=float(np.count_nonzero(display_alpha > 0) / display_alpha.size),
                     max_untouched_diff=float(diff_untouched.max()),
                     changed_untouched=int(np.count_nonzero(changed)),
                     negative_alpha=int(np.count_nonzero(alpha < 0)))
    if comp_path is not None:
        layer = exr_io.read_layer(comp_path, pair.layer, pair.frame, pair.view)  # where comp_frame writes it
        if tuple(layer.display_window) != tuple(pair.display_window):  # not a comp of this plate: bad input
            raise frame_error(comp_path, f"display window {layer.display_window} differs from the plate's "
                                         f"{pair.display_window} ({pair.plate_path})", pair.frame)
        comp = exr_io.crop_to_window(layer.pixels, layer.data_window, pair.window)
        comp_diff = np.abs(comp - pair.plate).max(axis=2)
        result.comp = comp_path
        result.comp_max_untouched_diff = float(np.where(untouched, comp_diff, 0.0).max())
        result.comp_changed_untouched = int(np.count_nonzero(untouched & bits_differ(comp, pair.plate)))
    return result


def _made_with(edit_path: str, frame: int) -> str | None:
    """The settings fingerprint a vera render wrote into the edit frame's header (None if there is none)."""
    if not edit_path.lower().endswith(".exr"):
        return None
    return exr_io.read_header(edit_path, frame)["attributes"].get(exr_io.ATTRIBUTE_PREFIX + "settings")


def qc_sequence(inputs: Inputs, comp: str | None = None, progress=None) -> dict:
    """The QC report (a JSON-ready dict): per-frame results and a summary with `passed`."""
    if comp is not None:
        plates.open_sequence(comp, inputs.frames[0], inputs.frames[-1])  # all composite frames present
    frames = []
    for frame in inputs.frames:
        comp_path = _pattern_path(comp, frame, inputs.frames) if comp else None
        result = qc_frame(inputs.pair(frame), comp_path)
        result.settings = _made_with(inputs.edit.path(frame), frame)
        frames.append(result)
        if progress is not None:
            progress.advance(1, f"frame {frame}")
    # One sequence, one render: frames left by a render with other settings (a shorter --force) are flagged.
    by_settings: dict = {}
    for f in frames:
        by_settings.setdefault(f.settings or "unknown", []).append(f.frame)
    mixed = len(by_settings) > 1
    failed = [f.frame for f in frames if not f.passed]
    touched = [f.touched for f in frames]
    summary = {
        "frames": len(frames),
        "frame_range": plates.compact_frames(inputs.frames),
        "touched_mean": float(np.mean(touched)),
        "touched_max": float(np.max(touched)),
        "max_untouched_diff": max(f.max_untouched_diff for f in frames),
        "changed_untouched": sum(f.changed_untouched for f in frames),
        "negative_alpha": sum(f.negative_alpha for f in frames),
        "failed_frames": plates.compact_frames(failed) if failed else "",
        "mixed_settings": mixed,
        "settings": {key[:16]: plates.compact_frames(group) for key, group in by_settings.items()},
        "passed": not failed and not mixed,
    }
    if comp is not None:
        summary["comp_max_untouched_diff"] = max(f.comp_max_untouched_diff for f in frames)
        summary["comp_changed_untouched"] = sum(f.comp_changed_untouched for f in frames)
    return {"plate": inputs.plate.pattern, "edit": inputs.edit.pattern, "comp": comp, "frames": [asdict(f) | {"passed": f.passed} for f in frames],
            "summary": summary}
