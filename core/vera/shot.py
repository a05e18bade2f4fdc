"""The shot spec: one JSON file describing one shot's edit (schema in docs/shot-spec.md).

This module holds the data shape, its (de)serialisation and `validate()`, which reports every problem of a
spec at once (so an artist fixes a spec in one go, not one error per farm submission). Relative paths are
resolved against the spec file's folder, so a shot folder can move between machines.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tempfile
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from vera.atomic import atomic_write_text
from vera.colour import resolve_colorspace
from vera.errors import BadInput
from vera.jsonio import parse, read_json
from vera.limits import instruction_problem
from vera.exr import COMPRESSIONS
from vera.files import overwrite_problem, regular_file
from vera.model.attention_names import CHOICES as ATTENTION_CHOICES
from vera.model.bundle_check import bundle_problems
from vera.model.bundle_manifest import DEMO_PATH, read_manifest
from vera.outputs import output_files
from vera.plates import MAX_SEQUENCE_FRAMES, open_sequence
from vera.presets import PRESETS, SAMPLERS
from vera.windows import plan_windows

SCHEMA_VERSION = 1
TASKS = ("object_addition", "background_change")
# The mask's channels by name: index into the (H, W, 4) RGBA a plate reader returns.
MASK_CHANNELS = {"R": 0, "G": 1, "B": 2, "A": 3, "red": 0, "green": 1, "blue": 2, "alpha": 3}


@dataclass
class PlateSpec:
    path: str                      # fileseq pattern: plate.####.exr, plate.%04d.exr, plate.1001-1100#.exr, or a movie
    first: int
    last: int
    colorspace: str                # OCIO colour space name of the plate (e.g. "ACEScg", "sRGB - Texture")
    layer: str = "rgba"            # EXR layer to read
    start_frame: int = 1           # a movie's first frame number (a movie's frames are start_frame..); not for sequences
    view: str | None = None        # the view of a multi-view (stereo) EXR plate; None: the file's default view


@dataclass
class MaskSpec:
    path: str                      # garbage matte sequence: edits may only appear where it is > 0
    channel: str = "A"
    start_frame: int = 1           # as plate.start_frame, for a mask movie
    feather: float = 0.0           # plate pixels: the garbage matte falls smoothly to 0 over this width inside its
                                   # edge (vera.rebuild.feather_inside), so an edit's matte cannot end on it abruptly


@dataclass
class ModelSpec:
    bundle: str = "demo"           # "demo" (embedded) or a model bundle folder (docs/model.md)
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    attention: str = "auto"        # the joint attention's kernel: auto | native | flash | ... (vera.model.attention_names)


@dataclass
class SamplerSpec:
    name: str | None = None        # unipc | euler; None: the bundle's default
    steps: int | None = None       # None: the bundle's default
    guidance: float | None = None
    shift: float | None = None
    guidance_until: float | None = None  # fraction of steps with the negative branch; None: the speed preset's


@dataclass
class WindowSpec:
    frames: int | None = None      # None: the bundle's window; must be 4k+1
    overlap: int = 8


@dataclass
class OutputSpec:
    dir: str                       # where edit.####.exr, manifest.json and the window cache go
    name: str = "edit"             # file name stem: <name>.####.exr
    compression: str = "zip"
    padding: int = 4


@dataclass
class MatteSpec:
    threshold: float = 1.0 / 255.0  # alpha below this becomes exactly 0 (untouched pixels stay the plate's)


@dataclass
class ShotSpec:
    name: str
    plate: PlateSpec
    task: str
    instruction: str
    output: OutputSpec
    negative_prompt: str = ""
    mask: MaskSpec | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    seed: int = 0
    speed: str = "balanced"        # quality | balanced | preview | turbo (vera.presets)
    window: WindowSpec = field(default_factory=WindowSpec)
    matte: MatteSpec = field(default_factory=MatteSpec)
    vera_shot: int = SCHEMA_VERSION
    base_dir: str = field(default=".", repr=False, compare=False)  # not serialised: where relative paths start

    def resolve(self, path: str) -> str:
        """An absolute path for a path written in the spec (relative ones start at the spec's folder)."""
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (Path(self.base_dir) / p))

    def open_plate(self, first: int | None = None, last: int | None = None):
        """The plate as a vera.plates.PlateSequence (its layer, a movie's start frame), frames first..last."""
        return open_sequence(self.resolve(self.plate.path), first, last, layer=self.plate.layer,
                             start_frame=self.plate.start_frame, view=self.plate.view)

    def open_mask(self, first: int | None = None, last: int | None = None):
        """The garbage matte as a PlateSequence (a movie's start frame applied), or None without a mask."""
        if self.mask is None:
            return None
        return open_sequence(self.resolve(self.mask.path), first, last, start_frame=self.mask.start_frame,
                             require_alpha=MASK_CHANNELS.get(self.mask.channel) == 3)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("base_dir")
        return d

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict, base_dir: str = ".") -> "ShotSpec":
        d = dict(d)
        sub = {"plate": PlateSpec, "mask": MaskSpec, "model": ModelSpec, "sampler": SamplerSpec,
               "window": WindowSpec, "output": OutputSpec, "matte": MatteSpec}
        for key, typ in sub.items():
            if isinstance(d.get(key), dict):
                d[key] = typ(**d[key])
        return cls(**d, base_dir=base_dir)

    @classmethod
    def load(cls, path: str | Path) -> "ShotSpec":
        path = Path(path)
        return cls.from_dict(read_json(path, "shot spec"), base_dir=str(path.resolve().parent))


# ---------------------------------------------------------------------------------------------------------
# Validation: every problem at once, each naming the key it is about.

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # shot and file names: safe in paths and job names
_VIEW_NAME = re.compile(r"^[^.\s]+$")  # OpenEXR multi-view names: no periods, no spaces
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _type_name(value) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_type(value, hint) -> str | None:
    """None when `value` fits the annotation `hint`, else what was expected ('an integer or null')."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for opt in options:
        if opt is type(None) and value is None:
            return None
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if opt is str and isinstance(value, str):
            return None
        if is_dataclass(opt) and isinstance(value, dict):
            return None
    words = {int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return " or ".join(words.get(o, "an object") for o in options)


def _unknown_key(where: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
    return f"{where}{key}: unknown key{hint}"


def _check_section(data: dict, cls, where: str, problems: list[str]) -> dict:
    """Unknown keys, missing required keys and types of one section; returns the keys whose type is right."""
    hints = typing.get_type_hints(cls)
    spec_fields = [f for f in fields(cls) if f.name != "base_dir"]
    known = [f.name for f in spec_fields]
    for key in data:
        if key not in known:
            problems.append(_unknown_key(where, key, known))
    good = {}
    for f in spec_fields:
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(f"{where}{f.name}: missing (required)")
            continue
        expected = _check_type(data[f.name], hints[f.name])
        if expected:
            problems.append(f"{where}{f.name}: expected {expected}, got {_type_name(data[f.name])} "
                            f"{json.dumps(data[f.name])[:40]}")
        else:
            good[f.name] = data[f.name]
    return good


def _one_of(where: str, value: str, allowed, problems: list[str]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        problems.append(f"{where}: unknown value '{value}' ({hint}one of: {', '.join(allowed)})")


def _check_sequence(where: str, pattern: str, first: int, last: int, layer: str, base: Path,
                    problems: list[str], start_frame: int = 1, view: str | None = None,
                    require_alpha: bool = False):
    """Every frame of the range present and readable as a header (vera.plates reports all missing frames);
    returns the opened vera.plates.PlateSequence, or None after adding the problem."""
    path = Path(pattern).expanduser()
    try:
        return open_sequence(str(path if path.is_absolute() else base / path), first, last, layer=layer,
                             start_frame=start_frame, view=view, require_alpha=require_alpha)
    except BadInput as exc:
        problems.append(f"{where}: {exc}")
        return None


def _unencodable_strings(value, where: str = ""):
    """Keys whose text cannot be written as UTF-8 (a lone surrogate from a JSON "\\udXXX" escape)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            yield f"{where or 'text'}: not valid Unicode text (a lone surrogate {value[exc.start]!r} at " \
                  f"character {exc.start}); it cannot be written to file headers"
    elif isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            inner = f"{where}.{key}" if where else str(key)
            yield from _unencodable_strings(key, inner) if isinstance(key, str) else ()
            yield from _unencodable_strings(item, inner)


def _check_finite(where: str, value, problems: list[str]) -> bool:
    """False (and a problem) for NaN or Infinity, which JSON readers accept but no sampler can use."""
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{where}: {value} is not a finite number")
        return False
    return True


def fitted_overlap(overlap: int, frames: int) -> int:
    """The overlap used with the bundle's own window (window.frames null): at most what fits that window, so
    the default 8 (meant for 49- or 81-frame windows) also works with a small model's window."""
    return max(0, min(overlap, (frames + 1) // 2 - 1))


def _default_window(bundle_manifest: dict | None) -> int | None:
    try:
        return int(bundle_manifest["defaults"]["window"])
    except (TypeError, KeyError, ValueError):
        return None


def _check_output_dir(out_dir: Path, problems: list[str]) -> bool:
    """The output folder is a folder, or can be made: its nearest existing ancestor is a writable folder."""
    if out_dir.exists() and not out_dir.is_dir():
        problems.append(f"output.dir: {out_dir} exists and is not a folder")
        return False
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problems.append(f"output.dir: {out_dir} cannot be created: {existing} is a file, not a folder")
        return False
    if existing != out_dir and not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"output.dir: {out_dir} cannot be created: {existing} is not writable")
        return False
    try:  # what the filesystem says, not the mode bits: /proc and /sys refuse files whatever the mode
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        problems.append(f"output.dir: {out_dir} cannot be created: {existing} refuses new files ({exc.strerror})")
        return False
    return True


def validate(path_or_dict, base_dir: str | Path | None = None) -> list[str]:
    """Every problem of a shot spec (a path to its JSON file, or the parsed dict), as one-line messages.

    An empty list means the spec is valid. Each message starts with the file (when given a path) and the key.
    """
    if isinstance(path_or_dict, dict):
        data, label = path_or_dict, "shot spec"
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        spec_path = Path(path_or_dict)
        label = str(spec_path)
        try:
            regular_file(spec_path)
        except BadInput as exc:
            return [str(exc)]
        try:
            text = spec_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            return [f"{label}: not a text file"]
        try:
            data = parse(text, label, "shot spec")
        except BadInput as exc:
            return [str(exc)]
        base = Path(base_dir) if base_dir is not None else spec_path.resolve().parent
    if not isinstance(data, dict):
        return [f"{label}: expected a JSON object at the top, got {_type_name(data)}"]

    problems: list[str] = list(_unencodable_strings(data))
    top = _check_section(data, ShotSpec, "", problems)
    sections = {}
    for key, cls in (("plate", PlateSpec), ("mask", MaskSpec), ("model", ModelSpec), ("sampler", SamplerSpec),
                     ("window", WindowSpec), ("output", OutputSpec), ("matte", MatteSpec)):
        if isinstance(top.get(key), dict):
            sections[key] = _check_section(top[key], cls, f"{key}.", problems)

    if "vera_shot" in top and top["vera_shot"] != SCHEMA_VERSION:
        problems.append(f"vera_shot: schema version {top['vera_shot']} is not supported "
                        f"(this vera reads version {SCHEMA_VERSION})")
    if "name" in top and not _SAFE_NAME.match(top["name"]):
        problems.append(f"name: '{top['name']}' must be letters, digits, '.', '_' or '-' (it names files and jobs)")
    if "task" in top:
        _one_of("task", top["task"], TASKS, problems)
    if "instruction" in top and not top["instruction"].strip():
        problems.append("instruction: empty (describe the edit, e.g. 'add a red kite in the sky')")
    problems += [p for key in ("instruction", "negative_prompt")
                 if isinstance(top.get(key), str) and (p := instruction_problem(key, top[key]))]
    if "seed" in top and not 0 <= top["seed"] < 2**63:
        problems.append(f"seed: {top['seed']} is outside 0 .. 2**63-1")

    plate = sections.get("plate", {})
    first, last = plate.get("first"), plate.get("last")
    range_ok = first is not None and last is not None
    if range_ok and last < first:
        problems.append(f"plate.first/last: empty frame range {first}-{last} (last is before first)")
        range_ok = False
    if range_ok and first < 0:
        problems.append(f"plate.first: negative frame number {first}")
        range_ok = False

    if range_ok and last - first + 1 > MAX_SEQUENCE_FRAMES:
        problems.append(f"plate.first/last: {last - first + 1} frames ({first}-{last}) is more than the "
                        f"{MAX_SEQUENCE_FRAMES} a shot may have (a typo in the range?)")
        range_ok = False
    if "colorspace" in plate and not plate["colorspace"].strip():
        problems.append("plate.colorspace: empty (name the plate's OCIO colour space, e.g. 'ACEScg')")
    elif "colorspace" in plate:
        try:
            resolve_colorspace(plate["colorspace"])
        except BadInput as exc:
            problems.append(f"plate.colorspace: {exc}")
    view = plate.get("view")
    if view is not None and not _VIEW_NAME.match(view):
        problems.append(f"plate.view: '{view}' is not a view name (no spaces or periods; e.g. 'left', 'right')")
        view = None
    plate_seq = mask_seq = None
    if "path" in plate and range_ok:
        plate_seq = _check_sequence("plate.path", plate["path"], first, last, plate.get("layer", "rgba"), base,
                                    problems, plate.get("start_frame", 1), view)
    mask = sections.get("mask", {})
    channel = mask.get("channel", MaskSpec.channel)
    if "channel" in mask:
        _one_of("mask.channel", channel, MASK_CHANNELS, problems)
    if isinstance(mask.get("feather"), (int, float)) and not 0 <= mask["feather"] <= 1000:
        problems.append(f"mask.feather: {mask['feather']} must be 0 .. 1000 plate pixels")
    if "path" in mask and range_ok:
        mask_seq = _check_sequence("mask.path", mask["path"], first, last, "rgba", base, problems,
                                   mask.get("start_frame", 1), require_alpha=MASK_CHANNELS.get(channel) == 3)
    if plate_seq is not None and mask_seq is not None and \
            (mask_seq.width, mask_seq.height) != (plate_seq.width, plate_seq.height):
        problems.append(f"mask.path: the mask is {mask_seq.width}x{mask_seq.height}, the plate "
                        f"{plate_seq.width}x{plate_seq.height} (a garbage matte must match the plate's size)")

    model = sections.get("model", {})
    bundle_manifest = None  # its defaults.window is the window when the spec gives none
    if "bundle" in model and model["bundle"] != "demo":
        bundle = Path(model["bundle"]).expanduser()
        bundle = bundle if bundle.is_absolute() else base / bundle
        if not bundle.is_dir():
            problems.append(f"model.bundle: folder not found: {bundle} (use \"demo\" or a model bundle folder)")
        else:
            try:
                bundle_manifest = read_manifest(bundle)
            except BadInput as exc:
                problems.append(f"model.bundle: {exc}")
    elif model.get("bundle", "demo") == "demo":
        bundle = DEMO_PATH
        try:
            bundle_manifest = read_manifest("demo")
        except BadInput as exc:  # an install without the demo model
            problems.append(f"model.bundle: {exc}")
    if bundle_manifest is not None:  # every file it names, as load_bundle will read them (headers only)
        problems += [f"model.bundle: {problem}" for problem in bundle_problems(bundle, bundle_manifest)]
    if "device" in model and not _DEVICE.match(model["device"]):
        problems.append(f"model.device: '{model['device']}' is not one of auto, cpu, cuda, cuda:N, mps")
    elif model.get("device", "auto") not in ("auto", "cpu"):  # a GPU the spec names must be on this machine
        from vera.model.bundle import resolve_device

        try:
            resolve_device(model["device"])
        except BadInput as exc:
            problems.append(f"model.device: {exc}")

    if "attention" in model:
        _one_of("model.attention", model["attention"], ATTENTION_CHOICES, problems)

    sampler = sections.get("sampler", {})
    if sampler.get("name") is not None:
        _one_of("sampler.name", sampler["name"], SAMPLERS, problems)
    if sampler.get("steps") is not None and sampler["steps"] < 1:
        problems.append(f"sampler.steps: {sampler['steps']} must be at least 1")
    if sampler.get("guidance") is not None and _check_finite("sampler.guidance", sampler["guidance"], problems) \
            and sampler["guidance"] < 0:
        problems.append(f"sampler.guidance: {sampler['guidance']} must not be negative")
    if sampler.get("shift") is not None and _check_finite("sampler.shift", sampler["shift"], problems) \
            and sampler["shift"] <= 0:
        problems.append(f"sampler.shift: {sampler['shift']} must be positive")
    if sampler.get("guidance_until") is not None and not 0 < sampler["guidance_until"] <= 1:
        problems.append(f"sampler.guidance_until: {sampler['guidance_until']} must be in (0, 1] "
                        "(the fraction of steps that run the negative prompt)")
    if "speed" in top:
        _one_of("speed", top["speed"], PRESETS, problems)

    window = sections.get("window", {})
    frames, overlap = window.get("frames"), window.get("overlap", WindowSpec.overlap)
    given = data.get("window")
    if given is None or isinstance(given, dict) and given.get("frames") is None:
        frames = _default_window(bundle_manifest)  # `run` will use the bundle's window: plan with it too
        if frames is not None and isinstance(overlap, int) and overlap >= 0:
            overlap = fitted_overlap(overlap, frames)
    if frames is not None and (frames < 1 or (frames - 1) % 4):
        below = max(1, frames - (frames - 1) % 4) if frames >= 1 else 1
        problems.append(f"window.frames: {frames} is not 4k+1 (the model's frame count); try {below} or {below + 4}")
        frames = None
    if isinstance(overlap, int) and overlap < 0:
        problems.append(f"window.overlap: {overlap} must not be negative")
    elif frames is not None and isinstance(overlap, int):
        if overlap >= (frames + 1) // 2:
            problems.append(f"window.overlap: {overlap} is too large for a {frames}-frame window "
                            f"(at most {(frames + 1) // 2 - 1}: a frame may be covered by two windows, not three)")
        elif range_ok:
            try:
                plan_windows(first, last, frames, overlap)
            except BadInput as exc:
                problems.append(f"window: {exc}")

    output = sections.get("output", {})
    if "dir" in output and not output["dir"].strip():
        problems.append("output.dir: empty (the folder for frames, manifest and cache)")
    if "name" in output and not _SAFE_NAME.match(output["name"]):
        problems.append(f"output.name: '{output['name']}' must be letters, digits, '.', '_' or '-'")
    if "compression" in output:
        _one_of("output.compression", output["compression"], list(COMPRESSIONS), problems)
    if "padding" in output and not 1 <= output["padding"] <= 10:
        problems.append(f"output.padding: {output['padding']} must be between 1 and 10 digits")
    if output.get("dir", "").strip():
        out_dir = Path(output["dir"]).expanduser()
        out_dir = out_dir if out_dir.is_absolute() else base / out_dir
        if _check_output_dir(out_dir, problems) and plate_seq is not None and 1 <= output.get("padding", 4) <= 10:
            problem = _overwrite_problem(out_dir, output, plate_seq, mask_seq,
                                         None if isinstance(path_or_dict, dict) else spec_path)
            if problem:
                problems.append(f"output: {problem}")

    matte = sections.get("matte", {})
    if "threshold" in matte and _check_finite("matte.threshold", matte["threshold"], problems) \
            and not 0 <= matte["threshold"] < 1:
        problems.append(f"matte.threshold: {matte['threshold']} must be in [0, 1)")

    prefix = "" if isinstance(path_or_dict, dict) else f"{label}: "
    return [prefix + p for p in problems]


def _overwrite_problem(out_dir: Path, output: dict, plate_seq, mask_seq, spec_path) -> str | None:
    """Whether the render's outputs (vera.outputs.output_files) would land on the plate, the mask or the spec."""
    inputs = [(seq.path(frame), frame) for seq in (plate_seq, mask_seq) if seq is not None for frame in seq.frames]
    if spec_path is not None:
        inputs.append((str(spec_path), None))
    files, folders = output_files(out_dir, output.get("name", OutputSpec.name),
                                  output.get("padding", OutputSpec.padding), plate_seq.frames)
    return overwrite_problem(inputs, files, folders)


def load_valid(path: str | Path) -> ShotSpec:
    """Load a spec that passed `validate`; otherwise raise BadInput listing every problem (one per line)."""
    problems = validate(path)
    if len(problems) == 1:  # one problem, one line
        raise BadInput(f"{path}: invalid shot spec: {problems[0]}")
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise BadInput(f"{path}: invalid shot spec ({count}):\n  " + "\n  ".join(problems))
    return ShotSpec.load(path)
