"""Building a shot spec (docs/shot-spec.md, vera.shot.ShotSpec) from a Vera Edit node and its inputs.

The plate comes from the node's Source input: a Read gives its file (`nuke.filename`: variables and TCL
expanded, `%04d` padding, relative paths against the evaluated project directory), frame range and colour
space directly; a movie Read's frame offset (frame_mode "start at"/"offset") becomes the shot's
`plate.start_frame`. Anything else (including an image sequence whose frames are offset) is first written to
an EXR sequence through a temporary Write node beside the Vera node (its group, not the gizmo), so the
layers come back numbered as the comp's frames. The plate's bounding box (data window) does not matter to
the spec: the engine reads the display window and writes layers covering the plate's overscan.
"""

from __future__ import annotations

import json
import os
import re

from vera_nuke import engine, graph, prefs
from vera_nuke.util import atomic_write_text, to_nuke_path

SCHEMA_VERSION = 1
TASKS = ("object_addition", "background_change")
SPEC_NAME = "shot.json"
FLOAT_FILE_TYPES = ("exr", "hdr", "sxr")
LOG_FILE_TYPES = ("dpx", "cin")
MOVIE_EXTENSIONS = (".mov", ".mp4", ".m4v", ".mkv", ".avi", ".webm", ".mxf")  # as vera.plates reads them


class ShotError(Exception):
    """The node cannot make a shot (nothing connected, empty instruction...): one line for nuke.message."""


def _nuke():
    import nuke

    return nuke


def script_path() -> str:
    try:
        return _nuke().scriptName()
    except RuntimeError:
        return ""


def script_stem() -> str:
    name = script_path()
    return os.path.splitext(os.path.basename(name))[0] if name else "untitled"


def output_dir(node, values: dict | None = None) -> str:
    """The node's output folder, or <output root>/<script>/<node's full name> (VeraEdit1 at root and
    Group1.VeraEdit1 inside a group never share one)."""
    chosen = node["output_dir"].value().strip()
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    return os.path.join(prefs.output_root(values), script_stem(), node.fullName())


def _absolute(path: str) -> str:
    """Nuke resolves relative file paths against the project directory (else the script's folder). The
    project directory is usually an expression (`[python {nuke.script_directory()}]`): evaluated."""
    if os.path.isabs(path) or re.match(r"^[A-Za-z]:[\\/]", path):
        return to_nuke_path(path)
    root = _nuke().root()
    base = root["project_directory"].evaluate() if root.knob("project_directory") else ""
    base = base or os.path.dirname(script_path()) or os.getcwd()
    return to_nuke_path(os.path.normpath(os.path.join(base, path)))


def file_of(read) -> str:
    """A Read's file as Nuke reads it: variables and TCL expanded (nuke.filename), `%04d` padding."""
    expanded = _nuke().filename(read)
    return (expanded if expanded is not None else read["file"].value()).strip()


def is_movie(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in MOVIE_EXTENSIONS


def frame_offset(read):
    """Frames a Read shifts its file by (output frame = file frame + offset), from frame_mode/frame; None
    when the frame knob holds an expression this code does not interpret."""
    mode = str(read["frame_mode"].value()) if read.knob("frame_mode") is not None else ""
    text = str(read["frame"].value()).strip() if read.knob("frame") is not None else ""
    if not text:
        return 0
    if not re.fullmatch(r"-?\d+", text):
        return None
    if mode == "start at":
        return int(text) - int(read["first"].value())
    if mode == "offset":
        return int(text)
    return None  # "expression" with a value: a frame expression


def working_space() -> str:
    root = _nuke().root()
    knob = root.knob("workingSpaceLUT")
    return knob.value() if knob is not None and knob.value() else "scene_linear"


def read_colorspace(read) -> str:
    """The OCIO colour space of a Read's pixels: `raw` when Raw Data is on; `default (X)` -> X."""
    if read.knob("raw") is not None and read["raw"].value():
        return "raw"
    value = str(read["colorspace"].value()).strip()
    m = re.match(r"^default\s*\((.*)\)$", value)
    if m:
        return m.group(1)
    if value in ("", "default"):
        ext = os.path.splitext(file_of(read))[1].lstrip(".").lower()
        if ext in FLOAT_FILE_TYPES:
            return working_space()
        return "compositing_log" if ext in LOG_FILE_TYPES else "color_picking"  # OCIO roles
    return value


def read_is_direct(read) -> bool:
    """Whether the engine can read this Read's files with the comp's frame numbers: an image sequence
    without a frame offset, or a movie with a numeric one (it becomes plate.start_frame)."""
    offset = frame_offset(read)
    return offset == 0 or (offset is not None and is_movie(file_of(read)))


def plate_from_read(read, first: int | None = None, last: int | None = None) -> dict:
    """The spec's plate for a Read (first/last in the comp's frames). A movie's frames are numbered from
    the Read's origfirst (its first frame as Nuke read it) plus the Read's frame offset."""
    pattern = file_of(read)
    if not pattern:
        raise ShotError(f"{read.name()}: the Read has no file")
    offset = frame_offset(read) or 0
    read_first, read_last = int(read["first"].value()) + offset, int(read["last"].value()) + offset
    first = read_first if first is None else first
    last = read_last if last is None else last
    if first < read_first or last > read_last:
        raise ShotError(f"frames {first}-{last} are outside {read.name()}'s range {read_first}-{read_last}")
    start_frame = int(read["origfirst"].value()) + offset if is_movie(pattern) else 1
    return {"path": _absolute(pattern), "first": first, "last": last,
            "colorspace": read_colorspace(read), "layer": "rgba", "start_frame": start_frame}


def write_through(upstream, path: str, first: int, last: int, channels: str = "rgba") -> str:
    """Render `upstream` to an EXR sequence (raw: pixels stay in the working space) and remove the Write.
    The Write is made in `upstream`'s group (a button runs inside the gizmo, where it could not connect)."""
    nuke = _nuke()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with graph.parent_group(upstream):
        write = nuke.nodes.Write(file=to_nuke_path(path), channels=channels, raw=True, create_directories=True)
    write["file_type"].setValue("exr")  # the exr knobs (datatype...) exist only once the type is chosen
    write["datatype"].setValue("16 bit half")
    try:
        graph.connect(write, 0, upstream)
        nuke.execute(write, first, last)
    except graph.ConnectError as exc:
        raise ShotError(str(exc)) from None
    finally:
        nuke.delete(write)
    return to_nuke_path(path)


def _range(node, upstream) -> tuple:
    if node["limit_range"].value():
        first, last = int(node["first_frame"].value()), int(node["last_frame"].value())
        if last < first:
            raise ShotError(f"{node.name()}: last frame {last} is before first frame {first}")
        return first, last
    if upstream.Class() == "Read":
        offset = frame_offset(upstream) or 0
        return int(upstream["first"].value()) + offset, int(upstream["last"].value()) + offset
    return int(upstream.firstFrame()), int(upstream.lastFrame())


def _positive_or_none(value):
    return value if value and value > 0 else None


def build_spec(node, values: dict | None = None) -> dict:
    """The shot spec dict (exactly the keys of vera.shot.ShotSpec) for a Vera Edit node.

    May write the plate (and mask) through a Write node when they are not Reads.
    """
    values = values or prefs.load()
    source = node.input(0)
    if source is None:
        raise ShotError(f"{node.name()}: connect a plate to the Source input")
    instruction = node["instruction"].value().strip()
    if not instruction:
        raise ShotError(f"{node.name()}: type an instruction")
    task = node["task"].value()
    if task not in TASKS:
        raise ShotError(f"{node.name()}: task must be one of {', '.join(TASKS)}")
    out_dir = output_dir(node, values)
    first, last = _range(node, source)
    if source.Class() == "Read" and read_is_direct(source):
        plate = plate_from_read(source, first, last)
    else:
        path = write_through(source, os.path.join(out_dir, "plate", "plate.%04d.exr"), first, last)
        plate = {"path": path, "first": first, "last": last, "colorspace": working_space(), "layer": "rgba",
                 "start_frame": 1}
    mask = None
    mask_node = node.input(1) if node.maximumInputs() > 1 else None
    if mask_node is not None:
        if mask_node.Class() == "Read" and read_is_direct(mask_node):
            read_mask = plate_from_read(mask_node, first, last)
            mask = {"path": read_mask["path"], "channel": "A", "start_frame": read_mask["start_frame"]}
        else:
            path = write_through(mask_node, os.path.join(out_dir, "mask", "mask.%04d.exr"), first, last, "alpha")
            mask = {"path": path, "channel": "A", "start_frame": 1}
    return {
        "vera_shot": SCHEMA_VERSION,
        "name": f"{script_stem()}_{node.fullName()}",
        "plate": plate,
        "task": task,
        "instruction": instruction,
        "negative_prompt": node["negative_prompt"].value().strip(),
        "mask": mask,
        "model": {"bundle": node["model_bundle"].value().strip() or "demo", "device": node["device"].value()},
        "sampler": {"name": None, "steps": _positive_or_none(int(node["steps"].value())),
                    "guidance": _positive_or_none(float(node["guidance"].value())), "shift": None},
        "seed": int(node["seed"].value()),
        "speed": node["speed"].value(),
        "window": {"frames": _positive_or_none(int(node["window_frames"].value())),
                   "overlap": int(node["window_overlap"].value())},
        "output": {"dir": to_nuke_path(out_dir), "name": "edit", "compression": "zip", "padding": 4},
        "matte": {"threshold": 1.0 / 255.0},
    }


def write_spec(spec: dict) -> str:
    """Write the spec as <output dir>/shot.json; returns its path."""
    path = os.path.join(spec["output"]["dir"], SPEC_NAME)
    atomic_write_text(path, json.dumps(spec, indent=2) + "\n")
    return path


def prepare(node, values: dict | None = None) -> tuple:
    """Build, write and validate the node's shot. Raises ShotError (with every problem) or EngineError."""
    spec = build_spec(node, values)
    path = write_spec(spec)
    problems = engine.validate(path)
    if problems:
        raise ShotError("Vera cannot render this shot:\n" + "\n".join(f"- {p}" for p in problems))
    return path, spec


def load_spec(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
