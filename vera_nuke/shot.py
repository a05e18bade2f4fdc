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


# Names that may enter a knob (vera.shot's pattern), and the characters Nuke's TCL acts on: a path holding one
# of them is refused, never put in a file knob (fromUserText and every read of the knob would evaluate it).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TCL_CHARACTERS = set("[]${}\\")


class ShotError(Exception):
    """The node cannot make a shot (nothing connected, empty instruction...): one line for nuke.message."""


def text_of(node, name: str) -> str:
    """A knob's text as typed. Nuke 12.2+ String_Knob.value() *evaluates* the text (TCL [python ...], $env());
    free text is only ever read with getText() (Foundry reference, String_Knob.value / getText)."""
    return node[name].getText()


def check_path(path: str, what: str) -> str:
    """`path` when no TCL character is in it; else ShotError naming it (it would run when Nuke reads it)."""
    bad = sorted(TCL_CHARACTERS & set(path))
    if bad:
        raise ShotError(f"{what} refused: {path!r} holds {' '.join(bad)}, which Nuke would evaluate as TCL")
    return path


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
    chosen = text_of(node, "output_dir").strip()
    if chosen:
        return check_path(os.path.abspath(os.path.expanduser(chosen)), f"{node.name()}: the output folder")
    root = prefs.output_root(values)
    if not root:  # the default: beside the script, where the farm sees it too (not the artist's home)
        if not script_path():
            raise ShotError(f"{node.name()}: save the script first, or set an output folder or root")
        root = os.path.join(os.path.dirname(os.path.abspath(script_path())), "vera_renders")
    return check_path(os.path.join(root, script_stem(), node.fullName()), f"{node.name()}: the output folder")


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
    value = str(read["colorspace"].value()).strip()  # an enumeration: nothing to evaluate
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
    instruction = text_of(node, "instruction").strip()
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
        "negative_prompt": text_of(node, "negative_prompt").strip(),
        "mask": mask,
        "model": {"bundle": text_of(node, "model_bundle").strip() or "demo", "device": node["device"].value()},
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


def check(path: str) -> str:
    """`vera-render validate` the written spec (a subprocess, up to minutes: call it on a worker thread).
    ShotError with every problem, on one line."""
    problems = engine.validate(path)
    if problems:
        raise ShotError("Vera cannot render this shot: " + "; ".join(problems))
    return path


def write(node, values: dict | None = None) -> tuple:
    """Build and write the node's shot (Nuke's main thread: it reads knobs, may render the plate)."""
    spec = build_spec(node, values)
    return write_spec(spec), spec


def prepare(node, values: dict | None = None) -> tuple:
    """Build, write and validate the node's shot (all on the calling thread). Raises ShotError or EngineError."""
    path, spec = write(node, values)
    return check(path), spec


def root_luts() -> dict | None:
    """The Root's LUT knobs (int8Lut, int16Lut, logLut, floatLut) under Nuke's own colour management, where a
    Read's colorspace is one of Nuke's LUT names; None under OCIO management (OCIO names, roles included)."""
    root = _nuke().root()
    management = root.knob("colorManagement")
    if management is not None and management.value() == "OCIO":
        return None
    return {name: str(root[name].value()) for name in ("int8Lut", "int16Lut", "logLut", "floatLut")
            if root.knob(name) is not None}


def load_spec(path: str) -> dict | None:
    """The spec at `path`; None when there is none. ShotError (one line) when it is not a readable spec."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise ShotError(f"{path}: unreadable shot spec ({type(exc).__name__})") from None
    if not isinstance(spec, dict):
        raise ShotError(f"{path}: not a shot spec")
    return spec


def checked_output(spec: dict, path: str) -> dict:
    """A spec read back from a folder (anyone who can write it wrote it), checked before any field enters a
    knob: output.dir a path without TCL characters, output.name a safe name, padding and frames numbers, the
    plate's colour space a plain name. Returns the spec; raises ShotError naming the file and the field."""
    try:
        out, plate = spec["output"], spec["plate"]
        fields = {"output.dir": out["dir"], "output.name": out.get("name", "edit"),
                  "plate.colorspace": plate["colorspace"]}
        numbers = (int(out.get("padding", 4)), int(plate["first"]), int(plate["last"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ShotError(f"{path}: refused: not a Vera shot spec (output / plate missing or malformed)") from None
    if not all(isinstance(v, str) for v in fields.values()) or not 1 <= numbers[0] <= 10:
        raise ShotError(f"{path}: refused: output / plate fields of the wrong type")
    try:
        check_path(fields["output.dir"], "output.dir")
    except ShotError as exc:
        raise ShotError(f"{path}: {exc}") from None
    for key in ("output.name", "plate.colorspace"):
        if not SAFE_NAME.match(fields[key].replace(" ", "_")) or TCL_CHARACTERS & set(fields[key]):
            raise ShotError(f"{path}: {key} refused: {fields[key]!r} is not a plain name")
    return spec
