"""Training data: the two layered dataset formats, a torch Dataset over either, and `check-data`.

Formats (documented in docs/training.md):
- `jsonl-mp4`: the public Vera layered dataset. JSONL records whose fields name MP4s relative to the JSONL
  file (input, edit RGB, edit alpha, mask, composite), decoded with PyAV.
- `layered-exr`: a studio's export of its comps. One folder per sample with `sample.json`,
  `plate/plate.####.exr`, `element/element.####.exr` (premultiplied RGBA) and optionally
  `mask/mask.####.exr` and `comp/comp.####.exr`. Without a comp sequence the target is element over plate.

Both load into a `LayeredClip` (numpy, display-referred [0,1]); `LayeredDataset` turns clips into model
tensors (C, F, H, W) in [-1, 1] at the model resolution.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from vera.atomic import atomic_path
from vera.colour import model_range, resolve_colorspace, to_model
from vera.comp import over as comp_over
from vera.errors import BadInput, read_json_object
from vera.exr import write_exr
from vera.frames import compact_frames
from vera.plates import open_sequence
from vera.rebuild import Fit
from vera.shot import TASKS

EXR_FORMAT = "layered-exr"
JSONL_FORMAT = "jsonl-mp4"
SAMPLE_FILE = "sample.json"
SAMPLE_FORMAT_VERSION = 1
# kind -> (folder, file stem); frame numbers are zero-padded to 4 digits: plate/plate.1001.exr
SEQUENCES = {"plate": ("plate", "plate"), "element": ("element", "element"), "mask": ("mask", "mask"),
             "comp": ("comp", "comp")}
PUBLIC_TASKS = {"obj_add": "object_addition", "background_replace": "background_change"}
DEFAULT_COLORSPACE = "sRGB - Texture"  # when sample.json names none: display-referred, the model's own space
ALPHA_TOLERANCE = 2e-3  # half floats and resampling wobble this much around [0,1]
PREMULT_TOLERANCE = 1e-2


def sequence_pattern(folder, kind: str) -> Path:
    sub, stem = SEQUENCES[kind]
    return Path(folder) / sub / f"{stem}.####.exr"


def frame_path(folder, kind: str, frame: int) -> Path:
    sub, stem = SEQUENCES[kind]
    return Path(folder) / sub / f"{stem}.{frame:04d}.exr"


# --- EXR files (through vera.exr / vera.plates: the one EXR writer and plate reader) -----------------------
# channel layout per sequence: mattes are written in all four channels so every tool reads them as RGBA
SEQUENCE_CHANNELS = {"plate": "RGB", "element": "RGBA", "mask": "RGBA", "comp": "RGB"}


def write_exr_frame(path, pixels: np.ndarray, channels: str, compression: str = "zip") -> None:
    """(H,W,C) pixels (or (H,W) for a matte, copied into every channel) -> half EXR, channels named by the
    letters of `channels`, data window = display window."""
    pixels = np.asarray(pixels, np.float32)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], len(channels), axis=-1)
    h, w = pixels.shape[:2]
    write_exr(path, {name: pixels[..., i] for i, name in enumerate(channels)}, (0, 0, w - 1, h - 1),
              pixel_type="half", compression=compression)


def open_exr_sequence(pattern, first: int, last: int):
    """The sequence through vera.plates (BadInput naming the file/frames on missing, corrupt or
    mismatched frames)."""
    return open_sequence(str(pattern), first=first, last=last)


# --- colour and resizing (vera.colour, vera.rebuild) -----------------------------------------------------------
def to_model_colour(rgb: np.ndarray, colorspace: str, where="") -> np.ndarray:
    """Plate-space RGB (..., 3) -> display-referred [0,1] (the model's space); an unknown colour space is
    BadInput naming the sample."""
    try:
        return to_model(rgb, colorspace)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


def fit_to_model(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (F,H,W,C) frames into a (F,height,width,C) model frame (vera.rebuild.Fit: aspect kept, centred,
    zero padding)."""
    frames = np.asarray(frames, np.float32)
    fit = Fit.compute(frames.shape[2], frames.shape[1], width, height)
    return np.stack([fit.to_model(frame) for frame in frames])


# --- the common in-memory clip ------------------------------------------------------------------------------
@dataclass
class LayeredClip:
    """A sample's frames, display-referred float32 in [0,1]. Streams a record lacks are None."""

    path: str
    instruction: str
    task: str | None
    source: np.ndarray                      # (F,H,W,3)
    edit_rgb: np.ndarray | None = None      # (F,H,W,3) unpremultiplied
    alpha: np.ndarray | None = None         # (F,H,W)
    composite: np.ndarray | None = None     # (F,H,W,3)
    mask: np.ndarray | None = None          # (F,H,W)
    meta: dict = field(default_factory=dict)


def unpremultiply(rgba: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Premultiplied (...,4) -> straight RGB (...,3); where alpha is ~0 the colour is undefined: `fill`."""
    alpha = rgba[..., 3:4]
    visible = alpha > 1.0 / 1024
    straight = np.where(visible, rgba[..., :3] / np.where(visible, alpha, 1.0), fill)
    return np.maximum(straight, 0.0).astype(np.float32)  # the upper clamp happens in model space


def edit_in_model_space(element_rgba: np.ndarray, colorspace: str, fill: float = 0.0, where="") -> np.ndarray:
    """The element's straight colour in the model's space; `fill` (model space) where it has no alpha."""
    straight = to_model_colour(unpremultiply(element_rgba), colorspace, where)
    return np.where(element_rgba[..., 3:4] > 1.0 / 1024, straight, np.float32(fill)).astype(np.float32)


def over(element_rgba: np.ndarray, plate_rgb: np.ndarray) -> np.ndarray:
    """Premultiplied element over the (opaque) plate, A + B(1 - a), through vera.comp.over: RGB out."""
    plate_rgba = np.concatenate([plate_rgb[..., :3], np.ones_like(plate_rgb[..., :1])], axis=-1)
    return comp_over(element_rgba, plate_rgba)[..., :3]


# --- layered EXR samples ------------------------------------------------------------------------------------
def write_exr_sample(folder, plate, element, instruction: str, task: str, fps: float = 24, first: int = 1001,
                     colorspace: str = DEFAULT_COLORSPACE, mask=None, composite=None, extra: dict | None = None,
                     compression: str = "zip") -> Path:
    """Write one layered EXR sample folder: plate (F,H,W,3), element (F,H,W,4) premultiplied, optional mask
    (F,H,W) and composite (F,H,W,3). The folder is built under a hidden temporary name and renamed into place,
    so readers see a whole sample or none (a previous sample of the same name is replaced)."""
    folder = Path(folder)
    plate, element = np.asarray(plate), np.asarray(element)
    frames = plate.shape[0]
    meta = {"format": EXR_FORMAT, "version": SAMPLE_FORMAT_VERSION, "instruction": instruction, "task": task,
            "fps": fps, "first": int(first), "last": int(first) + frames - 1, "colorspace": colorspace,
            "width": int(plate.shape[2]), "height": int(plate.shape[1]),
            "has_mask": mask is not None, "has_composite": composite is not None, **(extra or {})}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        streams = {"plate": plate, "element": element}
        if mask is not None:
            streams["mask"] = np.asarray(mask)
        if composite is not None:
            streams["comp"] = np.asarray(composite)
        for kind, pixels in streams.items():
            (tmp / SEQUENCES[kind][0]).mkdir()
            for i in range(frames):
                write_exr_frame(frame_path(tmp, kind, int(first) + i), pixels[i], SEQUENCE_CHANNELS[kind],
                                compression)
        (tmp / SAMPLE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_sample_meta(folder) -> dict:
    path = Path(folder) / SAMPLE_FILE
    if not path.exists():
        raise BadInput(f"{path}: missing")
    meta = read_json_object(path, "sample description")
    for key in ("first", "last"):
        if not isinstance(meta.get(key), int):
            raise BadInput(f"{path}: '{key}' must be an integer frame number")
    if meta["last"] < meta["first"]:
        raise BadInput(f"{path}: frame range {meta['first']}-{meta['last']} is empty")
    return meta


def has_sequence(folder, kind: str, meta: dict) -> bool:
    """Mask and comp are optional: present when sample.json says so or their folder exists."""
    if kind in ("plate", "element"):
        return True
    flag = {"mask": "has_mask", "comp": "has_composite"}[kind]
    return bool(meta.get(flag)) or (Path(folder) / SEQUENCES[kind][0]).is_dir()


def read_exr_frames(folder, kind: str, frames: list[int]) -> tuple[np.ndarray, bool]:
    """(F,H,W,4) float32 pixels of `kind` for the given frame numbers (alpha 1 where a file has none), and
    whether the files have an alpha channel."""
    sequence = open_exr_sequence(sequence_pattern(folder, kind), min(frames), max(frames))
    images = [sequence.read(f) for f in frames]
    return np.stack([np.asarray(im.pixels, np.float32) for im in images]), all(im.has_alpha for im in images)


def read_exr_sample(folder, start: int = 0, count: int | None = None, edit_fill: float = 0.0) -> LayeredClip:
    """Frames [start, start+count) of a layered EXR sample (indices from its first frame), model space."""
    folder = Path(folder)
    meta = read_sample_meta(folder)
    instruction = str(meta.get("instruction") or "").strip()
    if not instruction:
        raise BadInput(f"{folder / SAMPLE_FILE}: empty instruction")
    total = meta["last"] - meta["first"] + 1
    count = total - start if count is None else count
    frames = [meta["first"] + i for i in range(start, min(start + count, total))]
    if not frames:
        raise BadInput(f"{folder}: no frames from index {start} ({total} frames)")
    colorspace = str(meta.get("colorspace", DEFAULT_COLORSPACE))
    plate = read_exr_frames(folder, "plate", frames)[0][..., :3]
    element, element_has_alpha = read_exr_frames(folder, "element", frames)
    if not element_has_alpha:
        raise BadInput(f"{sequence_pattern(folder, 'element')}: no alpha channel (the element must be RGBA)")
    if has_sequence(folder, "comp", meta):
        composite = read_exr_frames(folder, "comp", frames)[0][..., :3]
    else:
        composite = over(element, plate)
    mask = None
    if has_sequence(folder, "mask", meta):
        pixels, mask_has_alpha = read_exr_frames(folder, "mask", frames)
        # a matte file's alpha, or its red channel when it has no alpha
        mask = pixels[..., 3] if mask_has_alpha else pixels[..., 0]
    where = str(folder)
    return LayeredClip(
        path=where, instruction=instruction, task=meta.get("task"),
        source=to_model_colour(plate, colorspace, where),
        edit_rgb=edit_in_model_space(element, colorspace, edit_fill, where),
        alpha=np.clip(element[..., 3], 0.0, 1.0), composite=to_model_colour(composite, colorspace, where),
        mask=None if mask is None else np.clip(mask, 0.0, 1.0), meta=meta)


# --- the public JSONL + MP4 format --------------------------------------------------------------------------
TRAIN_VIDEO_FIELDS = {"source": ("input_video_path",), "edit_rgb": ("edit_rgb_path",),
                      "alpha": ("edit_alpha_path",), "mask": ("mask_path",),
                      "composite": ("composite_path", "target_composite_path")}
TEST_VIDEO_FIELDS = {"source": ("input_path",), "mask": ("mask_path",), "alpha": ("alpha_path",)}


@dataclass
class JsonlRecord:
    jsonl: Path
    line: int
    fields: dict

    @property
    def path(self) -> str:
        return f"{self.jsonl}:{self.line}"

    @property
    def is_test(self) -> bool:
        return "input_video_path" not in self.fields and "input_path" in self.fields

    @property
    def instruction(self) -> str:
        key = "prompt" if self.is_test else "edit_instruction"
        return str(self.fields.get(key) or "").strip()

    @property
    def task(self) -> str | None:
        """edit_type when the record has one; else from the wording (only 'background' edits are background
        changes in the public set)."""
        edit_type = self.fields.get("edit_type")
        if edit_type:
            return PUBLIC_TASKS.get(edit_type, edit_type)
        return "background_change" if "background" in self.instruction.lower() else "object_addition"

    def video_paths(self) -> dict[str, Path]:
        """stream -> absolute path of each video the record names (relative to the JSONL file's folder)."""
        found = {}
        for stream, keys in (TEST_VIDEO_FIELDS if self.is_test else TRAIN_VIDEO_FIELDS).items():
            for key in keys:
                if self.fields.get(key):
                    found[stream] = (self.jsonl.parent / str(self.fields[key])).resolve()
                    break
        return found

    def required_streams(self) -> tuple[str, ...]:
        return ("source",) if self.is_test else ("source", "edit_rgb", "alpha", "composite")


def read_jsonl(path) -> tuple[list[JsonlRecord], list[tuple[str, str]]]:
    """Records of a JSONL file, and (where, problem) for lines that are not JSON objects."""
    path = Path(path)
    records, problems = [], []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: unreadable ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((f"{path}:{number}", f"not JSON ({exc.msg})"))
            continue
        if not isinstance(fields, dict):
            problems.append((f"{path}:{number}", "not a JSON object"))
            continue
        records.append(JsonlRecord(path, number, fields))
    return records, problems


def probe_video(path) -> dict:
    """Frame count and size of a video, decoding its first frame to prove it is readable."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise BadInput(f"{path}: unreadable MP4 (no frames)")
            return {"frames": int(stream.frames), "width": first.width, "height": first.height}
    except BadInput:
        raise
    except (av.FFmpegError, OSError, IndexError, StopIteration, ValueError) as exc:
        raise BadInput(f"{path}: unreadable MP4 ({type(exc).__name__}: {exc})") from None


def read_video(path, start: int = 0, count: int | None = None, gray: bool = False) -> np.ndarray:
    """Decode frames [start, start+count) with PyAV: (F,H,W,3) float32 in [0,1], or (F,H,W) when `gray`
    (mattes stored as grey video: the mean of the decoded RGB)."""
    out = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index < start:
                    continue
                if count is not None and len(out) >= count:
                    break
                rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
                out.append(rgb.mean(axis=-1) if gray else rgb)
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise BadInput(f"{path}: unreadable MP4 ({type(exc).__name__}: {exc})") from None
    if not out:
        raise BadInput(f"{path}: no frames from index {start}")
    return np.stack(out)


def write_video(path, frames01) -> None:
    """Write (F,H,W,3) or (F,H,W) frames in [0,1] as an H.264 MP4 (the public format's container) with PyAV:
    4:4:4 chroma and crf 0, so 8-bit values survive the round trip nearly exactly. Atomic."""
    frames = np.clip(np.round(np.asarray(frames01) * 255), 0, 255).astype(np.uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_jsonl_sample(record: JsonlRecord, start: int = 0, count: int | None = None) -> LayeredClip:
    instruction = record.instruction
    if not instruction:
        raise BadInput(f"{record.path}: empty instruction")
    paths = record.video_paths()
    for stream in record.required_streams():
        if stream not in paths:
            raise BadInput(f"{record.path}: no {stream} video field ({' or '.join(TRAIN_VIDEO_FIELDS[stream])})")
    streams = {stream: read_video(p, start, count, gray=stream in ("alpha", "mask")) for stream, p in paths.items()}
    frames = min(len(v) for v in streams.values())  # codecs may add/drop a trailing frame; keep the common run
    streams = {k: v[:frames] for k, v in streams.items()}
    return LayeredClip(path=record.path, instruction=instruction, task=record.task, meta=dict(record.fields),
                       **streams)


# --- finding samples ----------------------------------------------------------------------------------------
@dataclass
class SampleRef:
    format: str
    path: str
    folder: Path | None = None
    record: JsonlRecord | None = None

    def load(self, start: int = 0, count: int | None = None, edit_fill: float = 0.0) -> LayeredClip:
        if self.format == EXR_FORMAT:
            return read_exr_sample(self.folder, start, count, edit_fill)
        return read_jsonl_sample(self.record, start, count)

    def frame_count(self) -> int:
        if self.format == EXR_FORMAT:
            meta = read_sample_meta(self.folder)
            return meta["last"] - meta["first"] + 1
        counts = [probe_video(p)["frames"] for p in self.record.video_paths().values()]
        return min(counts) if counts and min(counts) > 0 else 0

    def instruction(self) -> str:
        """The sample's prompt, read without decoding any frame (sample.json or the JSONL record)."""
        if self.format == EXR_FORMAT:
            return str(read_sample_meta(self.folder).get("instruction") or "").strip()
        return self.record.instruction

    def shape(self) -> tuple[int, int, int]:
        """(frames, width, height) of the sample's source, from sample.json and the plate's header, or the
        input MP4's header and first frame: what training buckets are chosen by."""
        if self.format == EXR_FORMAT:
            meta = read_sample_meta(self.folder)
            plate = open_exr_sequence(sequence_pattern(self.folder, "plate"), meta["first"], meta["last"])
            return meta["last"] - meta["first"] + 1, plate.width, plate.height
        source = self.record.video_paths().get("source")
        if source is None:
            raise BadInput(f"{self.path}: no input video field")
        info = probe_video(source)
        return info["frames"], info["width"], info["height"]


def _is_exr_candidate(folder: Path) -> bool:
    return (folder / SAMPLE_FILE).exists() or any((folder / sub).is_dir() for sub, _ in SEQUENCES.values())


def find_samples(root) -> tuple[str, list[SampleRef], list[tuple[str, str]]]:
    """(format, samples, problems found while listing). Detects the format: a .jsonl file or a folder of
    .jsonl files is the public format; a folder with sample.json, or of such folders, is layered EXR."""
    root = Path(root)
    if not root.exists():
        raise BadInput(f"{root}: no such file or folder")
    jsonl_files = [root] if root.is_file() and root.suffix == ".jsonl" else (
        sorted(root.glob("*.jsonl")) if root.is_dir() else [])
    if jsonl_files:
        samples, problems = [], []
        for path in jsonl_files:
            records, bad_lines = read_jsonl(path)
            samples += [SampleRef(JSONL_FORMAT, r.path, record=r) for r in records]
            problems += bad_lines
        return JSONL_FORMAT, samples, problems
    if root.is_dir() and _is_exr_candidate(root) and (root / SAMPLE_FILE).exists():
        return EXR_FORMAT, [SampleRef(EXR_FORMAT, str(root), folder=root)], []
    if root.is_dir():
        folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                   and _is_exr_candidate(p)]
        if folders:
            return EXR_FORMAT, [SampleRef(EXR_FORMAT, str(p), folder=p) for p in folders], []
    raise BadInput(f"{root}: no dataset found (expected *.jsonl, a sample folder with {SAMPLE_FILE}, "
                   "or a folder of sample folders)")


# --- the torch Dataset ----------------------------------------------------------------------------------
class LayeredDataset(_TorchDataset):
    """Clips of `frames` (4k+1) frames at the model resolution `size` = (width, height), from either format.

    Each item is a dict: `source`, `edit` (unpremultiplied edit RGB), `composite`: (3, F, H, W) float32 in
    [-1, 1]; `alpha`, `mask`: (1, F, H, W) in [0, 1] (mattes as one-channel video, as vera.model takes them);
    `instruction`, `task`, `path`; `has_edit`, `has_mask`, `has_composite` (streams a record lacks are zeros). Clips start at frame 0, or at a random frame
    (torch's generator, seeded per DataLoader worker) with `random_clip`. Shorter samples repeat their last
    frame, as the pipeline pads a short window. Aspect is kept: frames are scaled to fit and padded."""

    def __init__(self, root, frames: int = 9, size: tuple[int, int] = (128, 96), random_clip: bool = False,
                 edit_fill: float = 0.0):
        if frames < 1 or (frames - 1) % 4:
            raise BadInput(f"clip frames must be 4k+1, got {frames}")
        self.root = Path(root)
        self.format, self.samples, problems = find_samples(root)
        if problems:
            where, what = problems[0]
            raise BadInput(f"{where}: {what} (run `vera-train check-data {root}`)")
        self.frames, self.size = int(frames), (int(size[0]), int(size[1]))
        self.random_clip, self.edit_fill = random_clip, edit_fill

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.item(index)

    def item(self, index: int, frames: int | None = None, size: tuple[int, int] | None = None) -> dict:
        """Sample `index` as `frames` frames at `size` (default: the dataset's): a training bucket's shape."""
        frames = self.frames if frames is None else int(frames)
        ref = self.samples[index]
        start = 0
        if self.random_clip:
            available = ref.frame_count()
            if available > frames:
                start = int(torch.randint(0, available - frames + 1, ()).item())
        clip = ref.load(start, frames, self.edit_fill)
        width, height = self.size if size is None else size
        count = clip.source.shape[0]
        frames_h, frames_w = clip.source.shape[1:3]

        def frames_of(array, channels):
            if array is None:
                return np.zeros((count, frames_h, frames_w, channels), np.float32), False
            return (array[..., None] if array.ndim == 3 else array), True

        streams = {"source": frames_of(clip.source, 3), "edit": frames_of(clip.edit_rgb, 3),
                   "alpha": frames_of(clip.alpha, 1), "composite": frames_of(clip.composite, 3),
                   "mask": frames_of(clip.mask, 1)}
        for name, (array, _) in streams.items():
            if array.shape[:3] != (count, frames_h, frames_w):
                raise BadInput(f"{clip.path}: {name} is {array.shape[2]}x{array.shape[1]} x {array.shape[0]} "
                               f"frames, source is {frames_w}x{frames_h} x {count}")
        # one resize for all streams together (they share the frame), then pad short clips to length
        stacked = fit_to_model(np.concatenate([a for a, _ in streams.values()], axis=-1), width, height)
        if stacked.shape[0] < frames:
            stacked = np.concatenate([stacked, np.repeat(stacked[-1:], frames - stacked.shape[0], 0)])
        channels_first = np.ascontiguousarray(stacked.transpose(3, 0, 1, 2))  # (C, F, H, W)
        item, channel = {}, 0
        for name, (array, _) in streams.items():
            part = channels_first[channel:channel + array.shape[-1]]
            channel += array.shape[-1]
            if name in ("alpha", "mask"):
                item[name] = torch.from_numpy(np.clip(part, 0.0, 1.0))
            else:
                item[name] = torch.from_numpy(np.clip(model_range(part), -1.0, 1.0))
        item.update(instruction=clip.instruction, task=clip.task or "", path=clip.path,
                    has_edit=streams["edit"][1], has_mask=streams["mask"][1],
                    has_composite=streams["composite"][1])
        return item


def open_dataset(root, width: int = 128, height: int = 96, frames: int = 9, **options) -> LayeredDataset:
    """A LayeredDataset at the model size width x height (options: random_clip, edit_fill)."""
    return LayeredDataset(root, frames=frames, size=(width, height), **options)


# --- check-data -----------------------------------------------------------------------------------------
def check_dataset(root, full: bool = False) -> dict:
    """Validate every sample; {"dataset", "format", "samples", "bad": [{"path", "problems": [...]}]}.
    Nothing stops at the first problem: every bad sample is listed with all its reasons."""
    fmt, samples, listing_problems = find_samples(root)
    bad: dict[str, list[str]] = {}
    for where, what in listing_problems:
        bad.setdefault(where, []).append(what)
    for ref in samples:
        problems = check_exr_sample(ref.folder) if fmt == EXR_FORMAT else check_jsonl_record(ref.record, full)
        if problems:
            bad.setdefault(ref.path, []).extend(problems)
    return {"dataset": str(root), "format": fmt, "samples": len(samples) + len(listing_problems),
            "bad": [{"path": path, "problems": problems} for path, problems in bad.items()]}


def check_exr_sample(folder) -> list[str]:
    folder = Path(folder)
    try:
        meta = read_sample_meta(folder)
    except BadInput as exc:
        return [str(exc)]
    problems = []
    if not str(meta.get("instruction") or "").strip():
        problems.append("empty instruction")
    if meta.get("task") not in TASKS:
        problems.append(f"task {meta.get('task')!r} is not one of {', '.join(TASKS)}")
    colorspace = meta.get("colorspace", DEFAULT_COLORSPACE)
    if not isinstance(colorspace, str):
        problems.append("colorspace must be a string (an OCIO colour space name)")
    else:
        try:
            resolve_colorspace(colorspace)
        except BadInput as exc:
            problems.append(str(exc))
    first, last = meta["first"], meta["last"]
    kinds = [k for k in SEQUENCES if has_sequence(folder, k, meta)]
    sizes = {}
    for kind in kinds:
        try:
            sequence = open_exr_sequence(sequence_pattern(folder, kind), first, last)
        except BadInput as exc:
            problems.append(f"{kind}: {exc}")
            continue
        sizes[kind] = (sequence.width, sequence.height)
        if kind in ("element", "mask"):
            problems += _check_matte_frames(kind, sequence)
        else:
            problems += _check_frames_readable(kind, sequence)
    plate_size = sizes.get("plate")
    for kind, size in sizes.items():
        if plate_size and size != plate_size:
            problems.append(f"{kind}: size mismatch, {size[0]}x{size[1]} but the plate is "
                            f"{plate_size[0]}x{plate_size[1]}")
    return problems


def _check_frames_readable(kind: str, sequence) -> list[str]:
    problems = []
    for frame in sequence.frames:
        try:
            sequence.read(frame)
        except BadInput as exc:
            problems.append(f"{kind}: {exc}")
    return problems


def _check_matte_frames(kind: str, sequence) -> list[str]:
    """Element: RGBA with alpha in [0,1] and premultiplied RGB (RGB <= alpha where alpha < 1).
    Mask: values in [0,1]. Frames with the same fault are reported together."""
    faults: dict[str, list[int]] = {}
    extremes: dict[str, list[float]] = {}
    problems = []
    for frame in sequence.frames:
        try:
            image = sequence.read(frame)
        except BadInput as exc:
            problems.append(f"{kind}: {exc}")
            continue
        pixels = image.pixels
        matte = pixels[..., 3] if image.has_alpha else pixels[..., 0]
        if kind == "element" and not image.has_alpha:
            faults.setdefault("no alpha channel (the element must be premultiplied RGBA)", []).append(frame)
            continue
        low, high = float(matte.min()), float(matte.max())
        if low < -ALPHA_TOLERANCE or high > 1 + ALPHA_TOLERANCE:
            key = f"{'alpha' if kind == 'element' else 'matte'} out of range [0,1]"
            faults.setdefault(key, []).append(frame)
            span = extremes.setdefault(key, [low, high])
            span[0], span[1] = min(span[0], low), max(span[1], high)
        if kind == "element":
            # Premultiplied colour never exceeds alpha where the element is see-through (opaque pixels may
            # hold HDR values above 1).
            see_through = matte < 1 - ALPHA_TOLERANCE
            excess = (pixels[..., :3] - matte[..., None])[see_through]
            if excess.size and float(excess.max()) > PREMULT_TOLERANCE:
                faults.setdefault("RGB exceeds alpha where alpha < 1 (unpremultiplied element?)", []).append(frame)
    for fault, frames in faults.items():
        detail = ""
        if fault in extremes:
            detail = f" (min {extremes[fault][0]:.3g}, max {extremes[fault][1]:.3g})"
        problems.append(f"{kind}: {fault} in frames {compact_frames(frames)}{detail}")
    return problems


def check_jsonl_record(record: JsonlRecord, full: bool = False) -> list[str]:
    problems = []
    if not record.instruction:
        problems.append(f"empty instruction ({'prompt' if record.is_test else 'edit_instruction'})")
    paths = record.video_paths()
    for stream in record.required_streams():
        if stream not in paths:
            keys = (TEST_VIDEO_FIELDS if record.is_test else TRAIN_VIDEO_FIELDS)[stream]
            problems.append(f"no {' or '.join(keys)} field")
    shapes = {}
    for stream, path in paths.items():
        if not path.exists():
            problems.append(f"{stream}: missing file {path}")
            continue
        try:
            if full:
                frames = read_video(path, gray=stream in ("alpha", "mask"))
                shapes[stream] = (frames.shape[2], frames.shape[1], frames.shape[0])
            else:
                info = probe_video(path)
                shapes[stream] = (info["width"], info["height"], info["frames"])
        except BadInput as exc:
            problems.append(f"{stream}: {exc}")
    reference = shapes.get("source")
    for stream, (w, h, n) in shapes.items():
        if reference is None or stream == "source":
            continue
        if (w, h) != reference[:2]:
            problems.append(f"{stream}: size mismatch, {w}x{h} but the input is {reference[0]}x{reference[1]}")
        if n and reference[2] and n != reference[2]:
            problems.append(f"{stream}: {n} frames but the input has {reference[2]}")
    return problems
