"""A stand-in for Foundry Nuke's `nuke` Python module, for testing `vera_nuke` without Nuke.

It behaves like Nuke's documented Python API (learn.foundry.com, Nuke Python developer guide and API reference,
13.0-16.0) for the parts Vera uses, and records what happened so tests can assert on it. Each behaviour that
matters names its source in a comment next to it. In short:

- Groups: Root and every Group (a gizmo is one, with its Input/Output nodes) hold nodes; the *current group*
  (`thisGroup`, `Group.begin/end`, `with group:`) is where `nodes.X`, `createNode`, `allNodes` and `toNode` act.
  A PyScript button runs with its gizmo as the current group and `thisNode()` set. Names are unique per
  group; `fullName()` is `Group1.Read1`. `setInput` returns False (never raises) across groups or for an
  input the node lacks.
- `executeInMainThread` queues; tests run the queue with `pump_main_thread()` (Nuke's event loop).
  `executeInMainThreadWithResult` from the main thread raises (Nuke would hang).
- `pluginAddPath` prepends, strips trailing slashes, runs the folder's init.py inside an init.py (`run_init`
  runs one as start-up does); `menu()` raises RuntimeError without a GUI (`env["gui"]`).
- Files: `File_Knob.value()` is printf (`%04d`); `evaluate(frame)` and `nuke.filename(node[, REPLACE])` expand
  `$env()`/TCL (`[python ...]`, `[value ...]`, `[getenv ...]`, `[file dirname ...]`); Root `project_directory` is
  the `[python {nuke.script_directory()}]` expression. `fromUserText("path first-last")` makes a Read read its
  file's header (format, data window metadata, channels); `setValue` does not.
- A Write's exr knobs (`datatype`...) exist only while `file_type` is exr. Channel knobs accept only known layers
  (`tcl("add_layer {...}")` registers one; a Read registers the layers its file holds).
- Images: `read_exr_as_nuke` reads an EXR as Nuke's reader does (edge pixels repeat past a data window equal
  to the display window); `execute(write, first, last)` renders a Write whose tree is Reads, Merge2 over and
  pass-through nodes (disabled, Dot, NoOp, a Grade at its defaults) to EXR, and only records anything else.
- `ProgressTask`, `message` (recorded in `messages`), menus, `getPaneFor`, `scriptName`, `layers`.

Where it is simplified (say so in a test before relying on more):
- Unknown knob names passed to `nodes.X(...)` / `createNode(..., knobs)` raise NameError, as `node[name]` does.
- Each built-in class knows only the knobs listed in `NODE_CLASSES` (the knobs of Nuke's reference guide
  that Vera touches, plus the knobs every node has). Array knobs (Grade `white`...) hold one value.
- `format()` comes from the `format` knob; `bbox()` (the node's box in the DAG) is xpos/ypos/size.
- `reset()` clears all state between tests; `ProgressTask.cancel()` is the test's way to press Cancel.
"""

from __future__ import annotations

import json
import os
import re
import contextlib
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

# Knob flags (values as in Nuke's nuke module; only identity matters here).
INVISIBLE = 0x400
HIDDEN = 0x0000000000040000
DISABLED = 0x80
STARTLINE = 0x1000
NO_ANIMATION = 0x100
READ_ONLY = 0x10000000

FAKE = "tests/fake_nuke"  # not in Nuke: lets a self-test say it runs under this stand-in
NUKE_VERSION_MAJOR = 15
NUKE_VERSION_MINOR = 1
NUKE_VERSION_STRING = "15.1v3"
env = {"gui": True, "NukeVersionMajor": 15}


# ---------------------------------------------------------------------------------------------- knobs
class Knob:
    """Base knob: a name, a label, a value and flags."""

    default = ""

    def __init__(self, name, label=None, value=None):
        self._name = name
        self._label = name if label is None else label
        self._value = self.default if value is None else self._coerce(value)
        self._flags = 0
        self._node = None
        self._tooltip = ""

    def _coerce(self, value):
        return value

    def Class(self):
        return type(self).__name__

    def name(self):
        return self._name

    def label(self):
        return self._label

    def setLabel(self, label):
        self._label = label

    def node(self):
        return self._node

    def value(self):
        return self._value

    def getValue(self):
        return self._value

    def setValue(self, value):
        self._value = self._coerce(value)
        if self._node is not None:
            self._node._knob_changed(self)
        return True

    def setFlag(self, flag):
        self._flags |= flag

    def clearFlag(self, flag):
        self._flags &= ~flag

    def getFlag(self, flag):
        return bool(self._flags & flag)

    def setVisible(self, visible):
        (self.clearFlag if visible else self.setFlag)(INVISIBLE)

    def visible(self):
        return not self.getFlag(INVISIBLE)

    def setEnabled(self, enabled):
        (self.clearFlag if enabled else self.setFlag)(DISABLED)

    def enabled(self):
        return not self.getFlag(DISABLED)

    def setTooltip(self, text):
        self._tooltip = text

    def tooltip(self):
        return self._tooltip

    def toScript(self):
        return str(self._value)

    def fromScript(self, text):
        self.setValue(text)

    def __repr__(self):
        return f"<{self.Class()} {self._name}={self._value!r}>"


class String_Knob(Knob):
    def _coerce(self, value):
        return str(value)

    def value(self):
        # Foundry Python reference, String_Knob.value (Nuke 12.2+): "Get the evaluated value of this knob as a
        # string - also see getText()". [TCL], $env() and \ escapes are evaluated every time it is read.
        return _tcl_expand(self._value, self._node)

    def getValue(self):
        return self.value()

    def evaluate(self):
        return _tcl_expand(self._value, self._node)

    def getText(self):
        # Foundry String_Knob.getText: the text as typed, never evaluated
        return self._value

    def setText(self, text):
        self.setValue(text)

    def toScript(self):
        return self._value


class PythonKnob(Knob):
    """knobChanged / onCreate...: Python source kept as text (never TCL-evaluated)."""

    def _coerce(self, value):
        return str(value)


class EvalString_Knob(String_Knob):
    pass


class Multiline_Eval_String_Knob(EvalString_Knob):
    pass


def _to_printf(pattern):
    """`plate.####.exr` -> `plate.%04d.exr` (each # is one digit in Nuke)."""
    return re.sub(r"#+", lambda m: f"%0{len(m.group(0))}d", pattern)


def _frame_into(text, frame):
    return re.sub(r"%0?(\d*)d", lambda m: f"{frame:0{int(m.group(1) or 1)}d}", text)


class File_Knob(EvalString_Knob):
    def _coerce(self, value):
        # Nuke Python dev guide, "File knobs": value() gives the sequence in printf notation (%04d),
        # whatever was typed (####).
        return _to_printf(str(value))

    def value(self):
        # File_Knob.value: the file text as set (printf padding); evaluate() / nuke.filename expand it
        return self._value

    def evaluate(self, frame=None):
        """Nuke expands TCL/variables and puts the frame (default: the current frame) into the pattern."""
        return _frame_into(_tcl_expand(self._value, self._node), root().frame() if frame is None else frame)

    def fromUserText(self, text):
        # Foundry "Read" guide / nukescripts' drop handler: fromUserText("path first-last") sets the file and
        # range and makes the Read read the file's header (its format); setValue only sets the text.
        m = re.match(r"^(.*?)(?:\s+(-?\d+)-(-?\d+))?\s*$", text)
        # what the artist types is evaluated at once (the panel's file browser does the same): its TCL runs
        _tcl_expand(m.group(1), self._node)
        self.setValue(m.group(1))
        node = self._node
        if node is not None and node.Class() == "Read":
            if m.group(2) is not None:
                first, last = int(m.group(2)), int(m.group(3))
                for name, value in (("first", first), ("last", last), ("origfirst", first), ("origlast", last)):
                    node[name].setValue(value)
            _read_header_into(node)


class Text_Knob(Knob):
    pass


class Int_Knob(Knob):
    default = 0

    def _coerce(self, value):
        if isinstance(value, str) and value.lower().startswith("0x"):
            return int(value, 16)  # tile colours are written in hex
        return int(float(value))


class Double_Knob(Knob):
    default = 0.0

    def _coerce(self, value):
        if isinstance(value, (list, tuple)):
            value = value[0]
        return float(value)


class Color_Knob(Double_Knob):
    pass


class AColor_Knob(Double_Knob):
    pass


class Boolean_Knob(Knob):
    default = False

    def _coerce(self, value):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)


class Enumeration_Knob(Knob):
    def __init__(self, name, label=None, values=None):
        # Nuke's enumeration items may carry a menu hint after a tab ("mov\t\t\tffmpeg"): the value is the name
        self._values = [str(v).split("\t")[0] for v in (values or [])]
        super().__init__(name, label, None)
        self._value = self._values[0] if self._values else ""

    def _coerce(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.values()[int(value)]
        value = str(value)
        if self._name == "colorspace" and _ocio_colorspaces and (
                value in _ocio_colorspaces or re.sub(r"^default \((.*)\)$", r"\1", value) in _ocio_colorspaces):
            return value  # OCIO colour management: the config's names, and "default (<name>)"
        if self._values and value not in self._values:
            # Nuke 17.0v3 (scan: nuke.Knob.values()): only the listed items; anything else is refused
            raise ValueError(f"{self._name}: {value!r} is not one of {self._values}")
        return value

    def values(self):
        if self._name == "colorspace" and _ocio_colorspaces:
            return ["default"] + list(_ocio_colorspaces)
        return list(self._values)

    def setValues(self, values):
        self._values = list(values)

    def numValues(self):
        return len(self._values)


class Channel_Knob(String_Knob):
    def _coerce(self, value):
        # Foundry "Creating Channels and Layers": a channel knob names a known layer or layer.channel; custom
        # layers exist once registered (add_layer in a .nk, which Nuke writes before the nodes using them).
        value = str(value)
        if value not in ("none", "", "all") and not _layer_known(value):
            raise ValueError(f"{self._name}: unknown layer or channel {value!r} (register it with add_layer)")
        return value

    def value(self):
        return self._value


class ChannelMask_Knob(Channel_Knob):
    pass


class Tab_Knob(Knob):
    pass


class Link_Knob(Knob):
    pass


class Obsolete_Knob(Knob):
    pass


class PyScript_Knob(Knob):
    """A button. `execute()` runs its command with thisNode() set to the owner, like a click in Nuke."""

    def __init__(self, name, label=None, command=""):
        super().__init__(name, label, command)

    def command(self):
        return self._value

    def setCommand(self, command):
        self._value = command

    def execute(self):
        # A button runs with thisNode() = its node and, for a gizmo/group, that group as the current group
        # (Foundry nuke.thisGroup; the tk-nuke-writenode PR 35 / Cryptomatte PR 127 bugs came from this).
        node = self._node
        group = node if isinstance(node, Group) else (node._parent if node is not None else _root)
        _this_stack.append(node)
        _context.append(group)
        try:
            exec(self._value, {"nuke": sys.modules[__name__], "__name__": "__main__"})
        finally:
            _context.pop()
            _this_stack.pop()


class Script_Knob(PyScript_Knob):
    """A TCL button (Read `reload`: "knob version [expr [value version]+1]"): execute() evaluates its TCL."""

    def execute(self):
        return _tcl_command(self._value, self._node, None)


class PyCustom_Knob(Knob):
    def __init__(self, name, label="", command=""):
        super().__init__(name, label, command)


class Format:
    def __init__(self, width, height, name="", pixel_aspect=1.0, x=0, y=0, r=None, t=None):
        self._w, self._h, self._name, self._pa = int(width), int(height), name, float(pixel_aspect)
        self._box = (x, y, width if r is None else r, height if t is None else t)

    def width(self):
        return self._w

    def height(self):
        return self._h

    def name(self):
        return self._name

    def pixelAspect(self):
        return self._pa

    def x(self):
        return self._box[0]

    def y(self):
        return self._box[1]

    def r(self):
        return self._box[2]

    def t(self):
        return self._box[3]

    def __repr__(self):
        return f"<Format {self._name or ''} {self._w}x{self._h}>"


FORMATS = {"HD_1080": Format(1920, 1080, "HD_1080"), "HD_720": Format(1280, 720, "HD_720"),
           "square_256": Format(256, 256, "square_256"), "PC_Video": Format(640, 480, "PC_Video")}


def addFormat(text):
    """`addFormat("W H NAME")`, as in Nuke."""
    parts = text.split()
    fmt = Format(int(parts[0]), int(parts[1]), parts[-1] if len(parts) > 2 else "")
    if fmt.name():
        FORMATS[fmt.name()] = fmt
    return fmt


class Format_Knob(Knob):
    def _coerce(self, value):
        if isinstance(value, Format):
            return value
        if str(value) in FORMATS:
            return FORMATS[str(value)]
        parts = str(value).split()
        if len(parts) >= 7 and all(re.fullmatch(r"-?[\d.]+", p) for p in parts[:7]):
            # a script's format: width height x y r t pixel-aspect [name]
            w, h, x, y, r, t = (int(float(p)) for p in parts[:6])
            return Format(w, h, parts[7] if len(parts) > 7 else "", float(parts[6]), x, y, r, t)
        return addFormat(str(value))

    def toScript(self):
        f = self._value
        return f"{f.width()} {f.height()} 0 0 {f.width()} {f.height()} {f.pixelAspect():g} {f.name()}".strip()


class Array_Knob(Double_Knob):
    """Array_Knob (mix, Write first/last...): one value here (the fake never animates or splits channels)."""


class ShuffleLinks_Knob(Knob):
    """Shuffle2 `mappings`. In Python a list of (in-slot, from-channel, to-channel) (Foundry Shuffle2 / the scan's
    default: [[0, 'rgba.red', 'rgba.red'], ...]); in a script a count then, per link, `from-channel slot index
    to-channel slot index` (scan raw_script "4 rgba.red 0 0 rgba.red 0 0 ..."), the slot being in1/in2 (out1/out2)
    and the index the channel's place in that layer. Both forms are checked against the node's in/out layers."""

    def _coerce(self, value):
        if isinstance(value, str):
            value = self._from_script(value)
        links = [(int(i), str(a), str(b)) for i, a, b in value]
        node = getattr(self, "_node", None)
        if node is not None:
            for i, src, dst in links:
                # the first number is the in-slot the source layer is chosen in (in1: 0, in2: 1)
                if i != self._slot(src, ("in1", "in2")) or self._slot(dst, ("out1", "out2")) is None:
                    raise ValueError(f"{node.name()}.mappings: ({i}, {src}, {dst}) does not match its in/out "
                                     f"layers (in1 {node['in1'].value()}, in2 {node['in2'].value()})")
        return links

    def _slot(self, channel, knobs):
        layer = channel.split(".")[0]
        for slot, name in enumerate(knobs):
            if self._node[name].value() == layer:
                return slot
        return None

    def _from_script(self, text):
        words = _tcl_words(text)
        count, fields = int(words[0]), words[1:]
        if len(fields) != 6 * count:
            raise ValueError(f"mappings: {count} links need {6 * count} fields, got {len(fields)}")
        links = []
        for k in range(count):
            src, src_slot, src_index, dst, dst_slot, dst_index = fields[6 * k:6 * k + 6]
            for channel, slot, index, knobs in ((src, src_slot, src_index, ("in1", "in2")),
                                                (dst, dst_slot, dst_index, ("out1", "out2"))):
                if getattr(self, "_node", None) is not None and (self._slot(channel, knobs) != int(slot) or
                                               _channel_index(channel) != int(index)):
                    raise ValueError(f"mappings: {channel} is not slot {slot} index {index}")
            links.append((int(src_slot), src, dst))
        return links

    def toScript(self):
        parts = [str(len(self._value))]
        for _i, src, dst in self._value:
            parts += [src, str(self._slot(src, ("in1", "in2"))), str(_channel_index(src)),
                      dst, str(self._slot(dst, ("out1", "out2"))), str(_channel_index(dst))]
        return " ".join(parts)


def _channel_index(channel):
    layer = channel.split(".")[0]
    return _layers.get(layer, []).index(channel) if channel in _layers.get(layer, []) else -1


# ---------------------------------------------------------------------------------------------- classes
# Knob facts (class, knob names, knob types, defaults, enumeration values, input counts) come from a machine
# scan of Nuke 17.0v3: nuke_scan.json beside this file names the repository and commit (scan_extract.py
# regenerates it). A knob a class does not have raises NameError; an enumeration value it does not offer
# raises ValueError.
_SCAN = json.loads((Path(__file__).resolve().parent / "nuke_scan.json").read_text(encoding="utf-8"))
SCAN_SOURCE = _SCAN["source"]
_SCAN_TYPES = {
    "String_Knob": String_Knob, "EvalString_Knob": EvalString_Knob, "File_Knob": File_Knob,
    "Multiline_Eval_String_Knob": Multiline_Eval_String_Knob, "Int_Knob": Int_Knob, "Double_Knob": Double_Knob,
    "Array_Knob": Array_Knob, "WH_Knob": Array_Knob, "AColor_Knob": AColor_Knob, "Color_Knob": Color_Knob,
    "ColorChip_Knob": Int_Knob, "Boolean_Knob": Boolean_Knob, "Disable_Knob": Boolean_Knob,
    "Enumeration_Knob": Enumeration_Knob, "Channel_Knob": Channel_Knob, "ChannelMask_Knob": ChannelMask_Knob,
    "Format_Knob": Format_Knob, "Script_Knob": Script_Knob, "PyScript_Knob": PyScript_Knob,
    "PythonKnob": PythonKnob, "Obsolete_Knob": Obsolete_Knob, "Tab_Knob": Tab_Knob, "Text_Knob": Text_Knob,
    "Link_Knob": Link_Knob, "ShuffleLinks": ShuffleLinks_Knob,
}
_SCAN_DEFAULTS = {"xpos": 0, "format": "HD_1080", "proxy_format": "HD_1080"}  # unset / object reprs in the scan


def _scan_class(cls):
    """(maximum inputs, [(knob name, knob class, default)]) of a scanned class; enumerations: (values, default)."""
    facts = _SCAN["classes"][cls]
    specs = []
    for name, (type_name, default, values) in facts["knobs"].items():
        knob_cls = _SCAN_TYPES.get(type_name, Knob)
        default = _SCAN_DEFAULTS.get(name, default)
        if knob_cls is Enumeration_Knob:
            default = (values or [default], str(default).split("\t")[0])
        elif knob_cls in (Int_Knob, Boolean_Knob) and isinstance(default, float):
            default = int(default)
        elif knob_cls is ShuffleLinks_Knob:
            default = [tuple(link) for link in default]
        elif knob_cls in (PyScript_Knob, PythonKnob, Obsolete_Knob, Knob) and default is None:
            default = ""
        specs.append((name, knob_cls, default))
    return facts["inputs"][1], specs


# Knobs of classes the scan lacks (Root, BackdropNode): Foundry Nuke reference guide, "Project Settings" (Root)
# and "Backdrop" node pages, plus the Node tab every node has.
COMMON_KNOBS = [
    ("name", String_Knob, ""), ("label", Multiline_Eval_String_Knob, ""), ("xpos", Int_Knob, 0),
    ("ypos", Int_Knob, 0), ("selected", Boolean_Knob, False), ("disable", Boolean_Knob, False),
    ("tile_color", Int_Knob, 0), ("note_font_size", Int_Knob, 11), ("note_font", Knob, "Verdana"),
    ("hide_input", Boolean_Knob, False), ("help", EvalString_Knob, ""),
]

NODE_CLASSES = {cls: _scan_class(cls) for cls in _SCAN["classes"]}
NODE_CLASSES.update({
    "BackdropNode": (0, COMMON_KNOBS + [("bdwidth", Int_Knob, 200), ("bdheight", Int_Knob, 200),
                                        ("z_order", Int_Knob, 0),
                                        ("appearance", Enumeration_Knob, (["Fill", "Border"], "Fill")),
                                        ("border_width", Double_Knob, 1.0)]),
    # Root LUT defaults under Nuke's default colour management (Project Settings > Color: 8/16-bit files sRGB,
    # log files Cineon, float files linear)
    "Root": (0, COMMON_KNOBS + [
        ("first_frame", Int_Knob, 1), ("last_frame", Int_Knob, 100), ("frame", Int_Knob, 1),
        ("format", Format_Knob, "HD_1080"), ("colorManagement", Enumeration_Knob, (["Nuke", "OCIO"], "Nuke")),
        ("workingSpaceLUT", String_Knob, "linear"), ("monitorLut", String_Knob, "sRGB"),
        ("int8Lut", String_Knob, "sRGB"), ("int16Lut", String_Knob, "sRGB"), ("logLut", String_Knob, "Cineon"),
        ("floatLut", String_Knob, "linear"),
        # Nuke's default project directory is this expression (Project Settings, Root node)
        ("project_directory", String_Knob, "[python {nuke.script_directory()}]")]),
})
# Where Nuke writes a Grade/Merge's knobs the scan lists under "internal" ones, they are still knobs.

# Write knobs that exist only while file_type is exr: the scan (a fresh Write, file_type " ") lacks them, so
# from Foundry's Write node reference ("exr" file type controls). Nuke adds them when the type is chosen, so
# `datatype` set before `file_type` fails (tk-nuke-writenode PR 35 sets file_type first).
WRITE_EXR_KNOBS = [("datatype", Enumeration_Knob, (["16 bit half", "32 bit float"], "16 bit half")),
                   ("compression", Enumeration_Knob, (["none", "Zip (1 scanline)", "Zip (16 scanlines)",
                                                       "PIZ Wavelet (32 scanlines)", "RLE", "B44", "B44A",
                                                       "DWAA", "DWAB"], "Zip (1 scanline)")),
                   ("metadata", Enumeration_Knob, (["default metadata", "no metadata", "all metadata"],
                                                   "default metadata"))]
BUILTIN_LAYERS = {"rgba": ["rgba.red", "rgba.green", "rgba.blue", "rgba.alpha"],
                  "rgb": ["rgba.red", "rgba.green", "rgba.blue"], "alpha": ["rgba.alpha"],
                  "depth": ["depth.Z"], "forward": ["forward.u", "forward.v"],
                  "backward": ["backward.u", "backward.v"], "mask": ["mask.a"]}
# Nuke's menus call the backdrop class "Backdrop"; its node class is BackdropNode.
CLASS_ALIASES = {"Backdrop": "BackdropNode", "Merge": "Merge2"}

_USER_KNOB_TYPES = {  # addUserKnob type ids (Nuke's KnobType constants)
    1: String_Knob, 2: File_Knob, 3: Int_Knob, 4: Enumeration_Knob, 6: Boolean_Knob, 7: Double_Knob,
    20: Tab_Knob, 22: PyScript_Knob, 26: Text_Knob, 41: Link_Knob, 43: Multiline_Eval_String_Knob,
}
_FLAG_NAMES = {"INVISIBLE": INVISIBLE, "HIDDEN": HIDDEN, "DISABLED": DISABLED, "STARTLINE": STARTLINE,
               "NO_ANIMATION": NO_ANIMATION, "READ_ONLY": READ_ONLY}


class Node:
    def __init__(self, cls, max_inputs, knob_specs):
        self._class = cls
        self._max_inputs = max_inputs
        self._inputs = [None] * max_inputs
        self._knobs = {}
        self._metadata = {}
        self._channels = []  # what a Read's file holds (Nuke channel names), filled from the header
        self._deleted = False
        self._parent = None  # the Group (or Root) holding the node
        for name, knob_cls, default in knob_specs:
            self.addKnob(_make_knob(name, knob_cls, default))

    # identity
    def Class(self):
        return self._class

    def name(self):
        return self._knobs["name"].value()

    def setName(self, name, uncollide=True):
        if uncollide and self._parent is not None and self._parent._child(name) not in (None, self):
            name = _unique_name(re.sub(r"\d+$", "", name), self._parent)
        self._knobs["name"].setValue(name)

    def fullName(self):
        # Foundry Node.fullName: "the full name of the node including the group(s) it lives in" (Group1.Read1)
        parent = self._parent
        if parent is None or parent is _root:
            return self.name()
        return f"{parent.fullName()}.{self.name()}"

    def __repr__(self):
        return f"<{self._class} {self.fullName()}>"

    # knobs
    def knob(self, name):
        if isinstance(name, int):
            return list(self._knobs.values())[name]
        return self._knobs.get(name)

    def __getitem__(self, name):
        if name not in self._knobs:
            raise NameError(f"knob {name} does not exist")
        return self._knobs[name]

    def knobs(self):
        return dict(self._knobs)

    def allKnobs(self):
        return list(self._knobs.values())

    def numKnobs(self):
        return len(self._knobs)

    def addKnob(self, knob):
        knob._node = self
        self._knobs[knob.name()] = knob

    def removeKnob(self, knob):
        if self._knobs.get(knob.name()) is not knob:
            raise ValueError(f"knob {knob.name()} is not on {self.name()}")
        del self._knobs[knob.name()]

    def _knob_changed(self, knob):
        if self._class == "Write" and knob.name() == "file_type":
            exr = knob.value() == "exr"
            for name, knob_cls, default in WRITE_EXR_KNOBS:
                if exr and name not in self._knobs:
                    self.addKnob(_make_knob(name, knob_cls, default))
                elif not exr and name in self._knobs:
                    del self._knobs[name]

    # graph
    def maximumInputs(self):
        return self._max_inputs

    def minimumInputs(self):
        return 0

    def inputs(self):
        connected = [i for i, n in enumerate(self._inputs) if n is not None]
        return connected[-1] + 1 if connected else 0

    def input(self, i):
        return self._inputs[i] if 0 <= i < self._max_inputs else None

    def setInput(self, i, node):
        # Foundry Node.setInput: "True if successful, False otherwise" (an input the node does not have, or
        # a node in another group: Nuke never connects across groups, and it does not raise).
        if not 0 <= i < self._max_inputs:
            return False
        if node is not None and node._parent is not self._parent:
            return False
        self._inputs[i] = node
        return True

    def connectInput(self, i, node):
        return self.setInput(i, node)

    def dependent(self, what=None, forceEvaluate=True):
        siblings = self._parent._children if self._parent is not None else []
        return [n for n in siblings if self in n._inputs]

    def canSetInput(self, i, node):
        return 0 <= i < self._max_inputs and (node is None or node._parent is self._parent)

    # position
    def xpos(self):
        return int(self._knobs["xpos"].value())

    def ypos(self):
        return int(self._knobs["ypos"].value())

    def setXpos(self, x):
        self._knobs["xpos"].setValue(x)

    def setYpos(self, y):
        self._knobs["ypos"].setValue(y)

    def setXYpos(self, x, y):
        self.setXpos(x)
        self.setYpos(y)

    def screenWidth(self):
        return 80

    def screenHeight(self):
        return 18

    def bbox(self):
        return [self.xpos(), self.ypos(), self.screenWidth(), self.screenHeight()]

    # image
    def format(self):
        if "format" in self._knobs:
            return self._knobs["format"].value()
        upstream = self.input(0)
        return upstream.format() if upstream is not None else root().format()

    def width(self):
        return self.format().width()

    def height(self):
        return self.format().height()

    def metadata(self, key=None, time=None, view=None):
        if key is None:
            return dict(self._metadata) if self._metadata or self.input(0) is None else self.input(0).metadata()
        return self.metadata().get(key)

    def channels(self):
        """The channels flowing out of the node: a Read's from its file header, else its input's."""
        if self._class == "Read":
            return list(self._channels)
        return self.input(0).channels() if self.input(0) is not None else []

    def firstFrame(self):
        """The frame range flows down the tree: a Read's own range, else its input's, else the root's."""
        if "first" in self._knobs and self._class == "Read":
            return self._knobs["first"].value()
        return self.input(0).firstFrame() if self.input(0) is not None else root().firstFrame()

    def lastFrame(self):
        if "last" in self._knobs and self._class == "Read":
            return self._knobs["last"].value()
        return self.input(0).lastFrame() if self.input(0) is not None else root().lastFrame()

    # selection
    def isSelected(self):
        return self._knobs["selected"].value()

    def setSelected(self, selected):
        self._knobs["selected"].setValue(selected)

    def showControlPanel(self, forceFloat=False):
        pass

    def hideControlPanel(self):
        pass


class Group(Node):
    """A Group (gizmos are Groups too): holds nodes; begin()/end() or `with group:` make it the current group
    (Foundry "Groups" / nuke.Group docs), where nuke.nodes.X, createNode, allNodes and toNode act."""

    def __init__(self, cls, max_inputs, knob_specs):
        super().__init__(cls, max_inputs, knob_specs)
        self._children = []

    def _child(self, name):
        return next((n for n in self._children if n.name() == name), None)

    def nodes(self):
        return list(self._children)

    def node(self, name):
        return self._child(name)

    def maximumInputs(self):
        # a group has one input per Input node inside it (Input `number`)
        numbers = [n["number"].value() for n in self._children if n.Class() == "Input"]
        return max(numbers) + 1 if numbers else self._max_inputs

    def input(self, i):
        return self._inputs[i] if 0 <= i < len(self._inputs) else None

    def setInput(self, i, node):
        if len(self._inputs) < self.maximumInputs():
            self._inputs += [None] * (self.maximumInputs() - len(self._inputs))
        self._max_inputs = self.maximumInputs()
        return super().setInput(i, node)

    def begin(self):
        _context.append(self)
        return self

    def end(self):
        if _context and _context[-1] is self:
            _context.pop()
        return None

    def __enter__(self):
        return self.begin()

    def __exit__(self, *exc):
        self.end()
        return False


class Root(Group):
    def __init__(self):
        super().__init__("Root", 0, NODE_CLASSES["Root"][1])
        self._knobs["name"].setValue("")

    def fullName(self):
        return "root"

    def firstFrame(self):
        return self["first_frame"].value()

    def lastFrame(self):
        return self["last_frame"].value()

    def frame(self):
        return self["frame"].value()


def _make_knob(name, knob_cls, default):
    if knob_cls is Enumeration_Knob:
        values, chosen = default
        knob = knob_cls(name, name, values)
        knob._value = chosen
        return knob
    return knob_cls(name, name, default)


# ---------------------------------------------------------------------------------------------- state
_root = None
_this_stack: list = []
_context: list = []  # current-group stack (Group.begin / `with group:` / a button's group)
_counters: dict = {}
_layers: dict = {}
plugin_paths: list = []
messages: list = []
executed: list = []
progress_tasks: list = []
main_thread_calls: list = []
_main_queue: list = []
_in_init = [0]  # depth of init.py files being run (pluginAddPath runs a folder's init.py only then)
_menus: dict = {}
_lock = threading.RLock()
REPLACE = 1  # nuke.filename(node, nuke.REPLACE): the frame number put in


def reset():
    """Forget every node, message, menu and record (call between tests)."""
    global _root
    with _lock:
        _this_stack.clear()
        _context.clear()
        tcl_log.clear()
        _ocio_colorspaces.clear()
        _counters.clear()
        _layers.clear()
        _layers.update({k: list(v) for k, v in BUILTIN_LAYERS.items()})
        messages.clear()
        executed.clear()
        progress_tasks.clear()
        main_thread_calls.clear()
        _main_queue.clear()
        _menus.clear()
        del plugin_paths[:]
        env["gui"] = True
        _root = Root()


def _unique_name(base, group):
    """Names are unique within their group (Group1.Read1 and Read1 can both exist)."""
    n = _counters.get((id(group), base), 0)
    while True:
        n += 1
        name = f"{base}{n}"
        if group._child(name) is None:
            _counters[(id(group), base)] = n
            return name


def _gizmo_path(cls):
    for folder in plugin_paths:  # the first folder on the plug-in path wins (Foundry "plug-in path")
        path = os.path.join(folder, f"{cls}.gizmo")
        if os.path.isfile(path):
            return path
    return None


def parse_gizmo(text):
    """(number of Input nodes, [(knob class, name, label, flags, extra)]) and knob values of a gizmo file.

    Only the gizmo header is read (up to the first internal node), as Nuke reads user knobs; `addUserKnob`
    lines are `{TYPE NAME [l LABEL] [T COMMAND] [M {ENUM VALUES}] [+FLAG|-FLAG]...}`.
    """
    inputs = len(re.findall(r"^\s*Input\s*\{", text, re.M))
    knobs, values = [], {}
    body = text.split("\n", 1)[1] if text.lstrip().startswith("Gizmo") else text
    for line in body.splitlines():
        stripped = line.strip()
        if re.match(r"^[A-Z]\w*\s*\{", stripped) and not stripped.startswith("Gizmo"):
            break  # first internal node: the header ends
        m = re.match(r"^addUserKnob\s*\{(.*)\}\s*$", stripped)
        if m:
            words = _tcl_words(m.group(1))
            type_id, name = int(words[0]), (words[1] if len(words) > 1 else "")
            label, command, enum, flags, i = None, "", [], [], 2
            while i < len(words):
                w = words[i]
                if w == "l":
                    label, i = words[i + 1], i + 2
                elif w == "t":
                    i += 2
                elif w == "T":
                    command, i = words[i + 1], i + 2
                elif w == "M":
                    enum, i = _tcl_words(words[i + 1]), i + 2
                elif w[:1] in "+-" and w[1:] in _FLAG_NAMES:
                    flags.append(w)
                    i += 1
                else:
                    i += 1
            knobs.append((type_id, name, label, command, enum, flags))
            continue
        m = re.match(r"^(\w+)\s+(.*)$", stripped)
        if m and m.group(1) not in ("inputs", "addUserKnob"):
            values[m.group(1)] = _tcl_words(m.group(2))[0] if m.group(2) else ""
    return inputs, knobs, values


def _tcl_words(text):
    """Split TCL words: {braced} (nested), "quoted" (with escapes) or bare."""
    words, i, n = [], 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            words.append(text[i + 1:j - 1])
            i = j
        elif text[i] == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    buf.append({"n": "\n", "t": "\t"}.get(text[j + 1], text[j + 1]))
                    j += 2
                else:
                    buf.append(text[j])
                    j += 1
            words.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            words.append(text[i:j])
            i = j
    return words


def _internal_nodes(text):
    """(class, name, number) of the nodes inside a gizmo (after its header): its Input and Output nodes."""
    found = []
    for m in re.finditer(r"^\s*(Input|Output)\s*\{(.*?)^\s*\}", text, re.M | re.S):
        body = m.group(2)
        name = re.search(r"^\s*name\s+(\S+)", body, re.M)
        number = re.search(r"^\s*number\s+(\d+)", body, re.M)
        found.append((m.group(1), name.group(1) if name else m.group(1), int(number.group(1)) if number else 0))
    return found


def _make_node(cls, group=None):
    """A new node of `cls` in `group` (default: the current group), named uniquely there."""
    group = thisGroup() if group is None else group
    cls = CLASS_ALIASES.get(cls, cls)
    if cls == "Group":
        node = Group(cls, 0, NODE_CLASSES["Group"][1])
    elif cls in NODE_CLASSES:
        max_inputs, specs = NODE_CLASSES[cls]
        node = Node(cls, max_inputs, specs)
    else:
        path = _gizmo_path(cls)
        if path is None:
            raise RuntimeError(f"{cls}: unknown command")  # Nuke's message for an unknown node class
        with open(path, encoding="utf-8") as f:
            text = f.read()
        n_inputs, user_knobs, values = parse_gizmo(text)
        node = Group(cls, n_inputs, NODE_CLASSES["Group"][1])  # a gizmo is a Group whose nodes come from the file
        for type_id, name, label, command, enum, flags in user_knobs:
            knob_cls = _USER_KNOB_TYPES.get(type_id)
            if knob_cls is None:
                raise ValueError(f"{path}: unknown knob type {type_id} for {name}")
            if knob_cls is Enumeration_Knob:
                knob = Enumeration_Knob(name, label, enum)
            elif knob_cls is PyScript_Knob:
                knob = PyScript_Knob(name, label, command)
            else:
                knob = knob_cls(name, label)
            for flag in flags:
                (knob.setFlag if flag[0] == "+" else knob.clearFlag)(_FLAG_NAMES[flag[1:]])
            node.addKnob(knob)
        for name, value in values.items():
            if name in node._knobs:
                node._knobs[name].setValue(value)
        for inner_cls, inner_name, number in _internal_nodes(text.split("\n", 1)[1]):
            inner = _make_node(inner_cls, node)
            inner.setName(inner_name)
            if inner_cls == "Input":
                inner["number"].setValue(number)
    # a new node's name: the scan's default name less its number (Merge2 -> Merge1, Shuffle2 -> Shuffle1)
    base = re.sub(r"\d+$", "", _SCAN["classes"].get(cls, {}).get("knobs", {}).get("name", [0, cls])[1] or cls)
    with _lock:
        node._parent = group
        node._knobs["name"].setValue(_unique_name(base, group))
        group._children.append(node)
    return node


def _apply_knobs(node, knobs):
    for name, value in knobs.items():
        if name == "inputs" and isinstance(value, (list, tuple)):
            for i, upstream in enumerate(value):
                node.setInput(i, upstream)
            continue
        if name not in node._knobs:
            raise NameError(f"knob {name} does not exist")
        if name == "name":
            node.setName(value)
        else:
            node._knobs[name].setValue(value)


def createNode(node, args="", inpanel=True):
    """Create a node as the GUI does, in the current group: connected to (and replacing) the selection."""
    new = _make_node(node)
    pairs = shlex.split(args) if args else []
    _apply_knobs(new, dict(zip(pairs[0::2], pairs[1::2])))
    _run_on_create(new)
    selected = selectedNodes()
    if selected and new.maximumInputs() > 0:
        new.setInput(0, selected[0])
    for n in thisGroup()._children:
        n.setSelected(n is new)
    return new


class _NodeFactory:
    def __getattr__(self, cls):
        def create(**knobs):
            new = _make_node(cls)  # Foundry nuke.nodes: "creates a node in the current group"
            _apply_knobs(new, knobs)
            _run_on_create(new)
            return new

        return create


nodes = _NodeFactory()


def thisGroup():
    # Foundry nuke.thisGroup: the current group; a gizmo's/group's button runs with that group current
    return _context[-1] if _context else _root


def toNode(name):
    """Foundry nuke.toNode: a node by name in the current group; dotted names go into groups, and a name
    starting with `root.` is absolute."""
    if name == "root":
        return _root
    parts = name.split(".")
    group = thisGroup()
    if parts[0] == "root":
        group, parts = _root, parts[1:]
    node = None
    for i, part in enumerate(parts):
        node = group._child(part) if isinstance(group, Group) else None
        if node is None:
            return None
        group = node
    return node


def allNodes(filter=None, group=None, recurseGroups=False):
    # Foundry nuke.allNodes: "If the group is omitted the current group (the one in the current context)
    # is used"; recurseGroups also lists the nodes inside groups.
    group = thisGroup() if group is None else group
    found = []
    for n in group._children:
        if filter is None or n.Class() == CLASS_ALIASES.get(filter, filter):
            found.append(n)
        if recurseGroups and isinstance(n, Group):
            found += allNodes(filter, n, True)
    return found


def selectedNodes(filter=None):
    return [n for n in allNodes(filter) if n.isSelected()]


def selectedNode():
    chosen = selectedNodes()
    if not chosen:
        raise ValueError("no node selected")
    return chosen[-1]


def delete(node):
    with _lock:
        parent = node._parent
        parent._children.remove(node)
        for n in parent._children:
            n._inputs = [None if i is node else i for i in n._inputs]
        node._deleted = True


def thisNode():
    return _this_stack[-1] if _this_stack else _root


def root():
    return _root


def scriptName():
    name = _root["name"].value()
    if not name:
        raise RuntimeError("no script name")
    return name


def script_directory():
    # shipped nuke/__init__.py: the folder of the script ("" when unsaved); used by project_directory
    name = _root["name"].value()
    return os.path.dirname(name) if name else ""


def pluginAddPath(args, addToSysPath=True):
    """Foundry nuke.pluginAddPath: adds the paths to the *beginning* of the plug-in path (moved there when
    already present), trailing slashes stripped; "if this command is executed inside an init.py then the
    init.py in the path will be executed"; also added to sys.path when addToSysPath."""
    for path in ([args] if isinstance(args, str) else list(args)):
        path = path.rstrip("/\\") or path
        if path in plugin_paths:
            plugin_paths.remove(path)
        plugin_paths.insert(0, path)
        if addToSysPath and path not in sys.path:
            sys.path.insert(0, path)
        init = os.path.join(path, "init.py")
        if _in_init[0] and os.path.isfile(init):
            run_init(init)


def pluginAppendPath(args, addToSysPath=True):
    """Foundry nuke.pluginAppendPath: like pluginAddPath but adds the paths to the *end* of the plug-in path,
    so folders added earlier (the studio's) win for a gizmo of the same name."""
    for path in ([args] if isinstance(args, str) else list(args)):
        path = path.rstrip("/\\") or path
        if path not in plugin_paths:
            plugin_paths.append(path)
        if addToSysPath and path not in sys.path:
            sys.path.append(path)
        init = os.path.join(path, "init.py")
        if _in_init[0] and os.path.isfile(init):
            run_init(init)


def run_init(path):
    """Test helper: run an init.py as Nuke does at start-up (pluginAddPath inside it runs nested init.py)."""
    import runpy

    _in_init[0] += 1
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        _in_init[0] -= 1


def pluginPath():
    return list(plugin_paths)


def message(text):
    messages.append(str(text))


def tprint(*args):
    print(*args)


# --------------------------------------------------------------------------------------------- TCL
class TclError(RuntimeError):
    """A TCL evaluation error (Nuke reports these as RuntimeError with TCL's message)."""


tcl_log: list = []  # every TCL command evaluated (name, full text): tests assert free text ran nothing
_BACKSLASH = {"n": "\n", "t": "\t", "r": "\r"}


def _tcl_expand(text, node=None, variables=None):
    """Evaluate a knob's text as Nuke does (Foundry "Expressions" / "TCL" guides; Tcl's subst rules): backslash
    escapes, `$env(NAME)` and `$var`, and `[command ...]` substitution. Commands known here: python (runs
    the Python), value, getenv, file dirname|tail, expr (arithmetic), frame, exec (recorded, not run); any
    other is an error, as in Nuke ("invalid command name")."""
    text, out, i, n = str(text), [], 0, len(str(text))
    while i < n:
        c = text[i]
        if c == "\\":
            out.append(_BACKSLASH.get(text[i + 1], text[i + 1]) if i + 1 < n else "\\")
            i += 2
        elif c == "$":
            m = re.match(r"\$(?:env\((\w+)\)|\{(\w+)\}|(\w+))", text[i:])
            if m is None:
                out.append("$")
                i += 1
                continue
            if m.group(1):
                if m.group(1) not in os.environ:
                    raise TclError(f'can\'t read "env({m.group(1)})": no such variable')
                out.append(os.environ[m.group(1)])
            else:
                var = m.group(2) or m.group(3)
                if var not in (variables or {}):
                    raise TclError(f'can\'t read "{var}": no such variable')
                out.append(str(variables[var]))
            i += m.end()
        elif c == "[":
            j = _close_bracket(text, i)
            out.append(_tcl_command(text[i + 1:j], node, variables))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _close_bracket(text, i):
    """Index of the `]` closing the `[` at i (nested brackets, braces and backslashes respected)."""
    depth, braces, j = 0, 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            braces += 1
        elif c == "}" and braces:
            braces -= 1
        elif c == "[" and not braces:
            depth += 1
        elif c == "]" and not braces:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise TclError("missing close-bracket")


def _tcl_split(script, node=None, variables=None):
    """A command's words with Tcl's rules: {braced} literal, "quoted" and bare words substituted."""
    words, i, n = [], 0, len(script)
    while i < n:
        if script[i].isspace():
            i += 1
            continue
        if script[i] == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                if script[j] == "\\":
                    j += 2
                    continue
                depth += {"{": 1, "}": -1}.get(script[j], 0)
                j += 1
            if depth:
                raise TclError("missing close-brace")
            words.append(script[i + 1:j - 1])
            i = j
            continue
        quoted = script[i] == '"'
        j = i + 1 if quoted else i
        while j < n and (script[j] != '"' if quoted else not script[j].isspace()):
            if script[j] == "\\":
                j += 2
            elif script[j] == "[":
                j = _close_bracket(script, j) + 1
            else:
                j += 1
        if quoted and j >= n:
            raise TclError('missing "')
        words.append(_tcl_expand(script[i + 1:j] if quoted else script[i:j], node, variables))
        i = j + 1 if quoted else j
    return words


def _tcl_command(script, node, variables):
    words = _tcl_split(script, node, variables)
    if not words:
        return ""
    command, rest = words[0], words[1:]
    tcl_log.append((command, script))
    if command == "python":
        code = " ".join(w for w in rest if w != "-exec")
        namespace = {"nuke": sys.modules[__name__]}
        if "-exec" in rest:
            exec(code, namespace)
            return str(namespace.get("ret", ""))
        return str(eval(code, namespace))
    if command == "getenv":
        return os.environ.get(rest[0], "")
    if command == "value":
        owner, _, knob = rest[0].rpartition(".")
        target = (toNode(owner) if owner else node) or _root
        return str(target[knob].value())
    if command == "file" and rest[:1] in (["dirname"], ["tail"]):
        return (os.path.dirname if rest[0] == "dirname" else os.path.basename)(rest[1])
    if command == "frame":
        return str(root().frame())
    if command == "knob" and rest:  # knob NAME [VALUE] on this node
        if len(rest) > 1:
            node[rest[0]].setValue(rest[1])
        return str(node[rest[0]].value())
    if command == "expr" and re.fullmatch(r"[\d\s.+\-*/()]+", " ".join(rest)):
        return str(eval(" ".join(rest), {"__builtins__": {}}))
    if command == "exec":
        return ""  # Tcl's exec runs a program; recorded in tcl_log, never run by the fake
    raise TclError(f'invalid command name "{command}"')


_ocio_colorspaces: list = []  # set by use_ocio_config (empty: Nuke's default colour management)


def use_ocio_config(colorspaces):
    """Test helper: Root colorManagement OCIO with a config naming `colorspaces` (Foundry "OCIO colour
    management": Read/Write colorspace then lists the config's colour spaces, not the scan's Nuke LUTs)."""
    _root["colorManagement"].setValue("OCIO")
    _ocio_colorspaces[:] = list(colorspaces)


def draw(node):
    """Test helper: the label text the node graph draws for `node`. Nuke evaluates a label (a
    Multiline_Eval_String_Knob) every time the DAG draws it (Foundry "Labels": [value ...] etc. update live)."""
    return node["label"].value()


def draw_all(group=None):
    """Test helper: what drawing every node of the script evaluates (all labels, inside groups too)."""
    return {n.fullName(): draw(n) for n in allNodes(group=group or _root, recurseGroups=True)}


def nodeCopy(s):
    """Foundry nuke.nodeCopy(s): the selected nodes of the current group as .nk text in file `s`: each node's
    class, then every knob whose value differs from a fresh node's (user knobs with their addUserKnob line)."""
    lines = []
    for node in selectedNodes():
        fresh = _make_node(node.Class(), _Scratch())
        lines.append(f"{node.Class()} {{")
        lines.append(" inputs 0")  # copied alone: its inputs are not in the copy
        for knob in node.allKnobs():
            if knob.name() in ("selected",):
                continue
            if knob.name() not in fresh._knobs:
                lines.append(f" addUserKnob {{{_user_type_id(knob)} {knob.name()}}}")
            elif fresh._knobs[knob.name()].toScript() == knob.toScript():
                continue
            lines.append(f" {knob.name()} {_script_word(knob.toScript())}")
        lines.append("}")
    with open(s, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


class _Scratch(Group):
    """A throw-away group for nodeCopy's fresh nodes (never part of the script)."""

    def __init__(self):
        super().__init__("Group", 0, NODE_CLASSES["Group"][1])


def _user_type_id(knob):
    return next(t for t, cls in _USER_KNOB_TYPES.items() if cls is type(knob))


def _script_word(text):
    if text and re.fullmatch(r"[\w./#%:+\-@]+", text):
        return text
    return '"' + re.sub(r'([\\"\[\]$])', r"\\\1", text).replace("\n", "\\n") + '"'


def _run_on_create(node):
    # Foundry "Callbacks": a node's onCreate knob runs whenever the node is created: made, loaded or pasted
    knob = node.knob("onCreate")
    if knob is not None and knob.value():
        _this_stack.append(node)
        try:
            exec(knob.value(), {"nuke": sys.modules[__name__], "__name__": "__main__"})
        finally:
            _this_stack.pop()


def nodePaste(s):
    """Foundry nuke.nodePaste(s): paste the nodes of a .nk file (`s`: its path) into the current group. The
    text is read as Nuke reads a script: Tcl words (quoted and bare ones substituted, so `[...]` runs now),
    a stack where each node pops its inputs (input 0 = the top) and pushes itself, `push $cut_paste_input`
    = the node selected when pasting, `add_layer`, `addUserKnob`. Returns the last node made."""
    with open(s, encoding="utf-8") as f:
        lines = f.read().splitlines()
    selected = selectedNodes()
    variables, stack_vars = {}, {}
    stack, made, i = [], [], 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#") or line.startswith("version "):
            continue
        if line == "set cut_paste_input [stack 0]":
            stack_vars["cut_paste_input"] = selected[-1] if selected else None
            continue
        m = re.match(r"^push \$(\w+)$", line)
        if m:
            stack.append(stack_vars[m.group(1)])
            continue
        if line == "push 0":
            stack.append(None)
            continue
        if line.startswith("add_layer"):
            tcl(*_tcl_split(line))
            continue
        m = re.match(r"^(\w+) \{$", line)
        if not m:
            raise TclError(f"cannot paste: {line[:60]!r}")
        node, n_inputs = _make_node(m.group(1)), None
        while i < len(lines) and lines[i].strip() != "}":
            words = _tcl_split(lines[i].strip(), node, variables)
            i += 1
            if words[0] == "inputs":
                n_inputs = int(words[1])
            elif words[0] == "addUserKnob":
                spec = _tcl_words(words[1])
                knob = _USER_KNOB_TYPES[int(spec[0])](spec[1] if len(spec) > 1 else "")
                for flag in spec[2:]:
                    if flag[:1] in "+-" and flag[1:] in _FLAG_NAMES:
                        (knob.setFlag if flag[0] == "+" else knob.clearFlag)(_FLAG_NAMES[flag[1:]])
                node.addKnob(knob)
            elif words[0] == "name":
                node.setName(words[1])
            else:
                node[words[0]].fromScript(words[1] if len(words) > 1 else "")
        i += 1
        _run_on_create(node)
        if n_inputs is None:
            n_inputs = 1 if node.maximumInputs() > 0 else 0
        for k in range(n_inputs):
            upstream = stack.pop()
            if upstream is not None:
                node.setInput(k, upstream)
        stack.append(node)
        made.append(node)
    return made[-1] if made else None


def filename(node, type=None, frame=None):
    """Foundry nuke.filename: the node's file with variables and TCL expanded (%04d kept), or with the frame
    (`nuke.REPLACE`: the current frame unless `frame` is given). None when the node has no file knob."""
    knob = node.knob("file")
    if knob is None:
        return None
    text = _tcl_expand(knob.value(), node)
    if type == REPLACE:
        text = _frame_into(text, root().frame() if frame is None else frame)
    return text


def tcl(command, *args):
    """nuke.tcl: `add_layer {name name.chan ...}` (what a .nk writes before nodes using a custom layer);
    anything else is evaluated as a knob's [command] would be."""
    words = _tcl_split(" ".join([command, *args]))
    if words[0] != "add_layer":
        return _tcl_command(" ".join([command, *args]), None, None)
    tcl_log.append(("add_layer", " ".join(words)))
    layer = _tcl_words(words[1]) if len(words) == 2 else words[1:]
    name, channels = layer[0], layer[1:]
    known = _layers.setdefault(name, [])
    known += [c for c in channels if c not in known]
    return ""


def layers(node=None):
    return sorted(_layers)


def _layer_known(value):
    layer, _, channel = value.partition(".")
    if layer not in _layers:
        return False
    return not channel or value in _layers[layer] or (layer == "rgba" and channel in ("red", "green", "blue",
                                                                                      "alpha"))


# ------------------------------------------------------------------------------------------ images
# Only the files matter here: a Read reads an EXR's header, `execute` renders a Write whose tree is
# Read / Merge2 over / pass-through nodes, reading EXRs the way Nuke's EXR reader does.
_EXR_CHANNEL_NAMES = {"R": "red", "G": "green", "B": "blue", "A": "alpha"}


def nuke_channel(exr_name):
    """An EXR channel name as Nuke shows it: `R` -> rgba.red, `matte.A` -> matte.alpha, `Z` -> depth.Z
    (Foundry "Reading EXR channels": all but the last dotted part form the layer)."""
    layer, _, chan = exr_name.rpartition(".")
    chan = _EXR_CHANNEL_NAMES.get(chan, chan)
    if not layer:
        return f"rgba.{chan}" if chan in _EXR_CHANNEL_NAMES.values() else f"other.{chan}"
    return f"{layer}.{chan}"


def _read_header_into(read):
    path = _frame_into(_tcl_expand(read["file"].value(), read), read["first"].value())
    if not os.path.isfile(path):
        return
    ext = os.path.splitext(path)[1].lower()
    if ext in (".mov", ".mp4"):
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            count = stream.frames or sum(1 for _ in container.decode(stream))
            w, h = stream.codec_context.width, stream.codec_context.height
        read["format"].setValue(Format(w, h))
        for name, value in (("first", 1), ("last", count), ("origfirst", 1), ("origlast", count)):
            read[name].setValue(value)  # a movie's frames are 1..N unless frame_mode offsets them
        read._channels = ["rgba.red", "rgba.green", "rgba.blue", "rgba.alpha"]
        return
    import OpenEXR

    exr = OpenEXR.File(path, header_only=True)  # (closing it with `with` empties the header dict)
    header = exr.header()
    names = [c.name for c in header["channels"]]
    (x0, y0), (x1, y1) = header["displayWindow"]
    read["format"].setValue(Format(int(x1 - x0 + 1), int(y1 - y0 + 1), x=int(x0), y=int(y0), r=int(x1 + 1),
                                   t=int(y1 + 1)))
    (dx0, dy0), (dx1, dy1) = header["dataWindow"]
    read._metadata = {"exr/dataWindow": [int(dx0), int(dy0), int(dx1), int(dy1)],
                      "exr/displayWindow": [int(x0), int(y0), int(x1), int(y1)]}
    read._channels = sorted({nuke_channel(n) for n in names})
    for channel in read._channels:  # a Read registers the layers it finds (Nuke adds them on read)
        tcl("add_layer", "{" + channel.split(".")[0] + " " + channel + "}")


def read_exr_as_nuke(path, window, auto_alpha=False):
    """Pixels (H, W, 4) over `window` (x0, y0, x1, y1 inclusive) as Nuke's EXR reader gives them: inside the
    data window the file's values; outside it black, except that when the data window equals the display
    window exactly, edge pixels repeat outside it (the reader's edge mode "plate": Foundry Read node,
    "edge pixels" / EXR bounding box). A file without alpha reads alpha 0, or 1 inside the data window with the
    Read's `auto_alpha` on (Nuke 17.0v3 scan: auto_alpha, a Boolean_Knob, default off; Foundry Read node:
    "assume the alpha should be 1 if it's requested")."""
    import numpy as np
    import OpenEXR

    exr = OpenEXR.File(str(path), separate_channels=True)
    header, chans = exr.header(), exr.channels()
    (dx0, dy0), (dx1, dy1) = header["dataWindow"]
    display = tuple(int(v) for v in (*header["displayWindow"][0], *header["displayWindow"][1]))
    data = (int(dx0), int(dy0), int(dx1), int(dy1))
    h, w = data[3] - data[1] + 1, data[2] - data[0] + 1
    pixels = np.zeros((h, w, 4), np.float32)
    for i, name in enumerate("RGBA"):
        pixels[..., i] = chans[name].pixels if name in chans else (1.0 if name == "A" and auto_alpha else 0.0)
    x0, y0, x1, y1 = window
    ys, xs = np.arange(y0, y1 + 1), np.arange(x0, x1 + 1)
    if data == display:
        return pixels[np.clip(ys - data[1], 0, h - 1)][:, np.clip(xs - data[0], 0, w - 1)]
    out = np.zeros((len(ys), len(xs), 4), np.float32)
    inside_y, inside_x = (ys >= data[1]) & (ys <= data[3]), (xs >= data[0]) & (xs <= data[2])
    out[np.ix_(inside_y, inside_x)] = pixels[np.ix_(ys[inside_y] - data[1], xs[inside_x] - data[0])]
    return out


def _data_window(node, frame):
    """The bounding box of a node's output (Nuke's bbox), in EXR pixel coordinates."""
    if node.Class() == "Read":
        import OpenEXR

        header = OpenEXR.File(node["file"].evaluate(_file_frame(node, frame)), header_only=True).header()
        (x0, y0), (x1, y1) = header["dataWindow"]
        (a0, b0), (a1, b1) = header["displayWindow"]
        if (x0, y0, x1, y1) == (a0, b0, a1, b1):
            return None  # edge mode "plate": unbounded (repeated edges), the merge takes the other box
        return (int(x0), int(y0), int(x1), int(y1))
    if node.Class() == "Merge2":
        boxes = [b for b in (_data_window(node.input(0), frame), _data_window(node.input(1), frame)) if b]
        if not boxes:
            return None
        return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                max(b[3] for b in boxes))
    return _data_window(node.input(0), frame)


# Colour (Foundry "Color Management" guide, Read/Write nodes): a Read without Raw Data converts its file from its
# `colorspace` into the project's working space (Root workingSpaceLUT); a Write without Raw Data converts from the
# working space into its `colorspace`. "default" means the project's default for the file type (Project
# Settings > Color > float files: Root floatLut; Nuke's own colour management ships it as "linear"). The fake
# converts with OpenColorIO ($OCIO, else the ACES cg-config Nuke 15 ships), reading Nuke's built-in LUT names
# as their OCIO colour spaces. When the working space is not the float default (e.g. ACEScg), any Read or Write
# that relies on "default" instead of Raw Data changes the pixels, as in Nuke.
FLOAT_FILES_DEFAULT = "linear"  # Nuke colour management's default for float files (Root floatLut)
NUKE_LUT_NAMES = {"linear": "Linear Rec.709 (sRGB)", "sRGB": "sRGB - Texture", "rec709": "Gamma 2.4 Rec.709 - Texture"}
OCIO_CONFIG = "ocio://cg-config-v2.1.0_aces-v1.3_ocio-v2.3"


def _file_colorspace(node):
    """The colour space a Read's file / a Write's output is in; None with Raw Data (no conversion)."""
    if node["raw"].value():
        return None
    value = str(node["colorspace"].value()).strip()
    m = re.match(r"^default\s*\((.*)\)$", value)
    if m:
        return m.group(1)
    if value in ("", "default"):
        knob = root().knob("floatLut")
        return knob.value() if knob is not None and knob.value() else FLOAT_FILES_DEFAULT
    return value


def _working_space():
    knob = root().knob("workingSpaceLUT")
    return knob.value() if knob is not None and knob.value() else FLOAT_FILES_DEFAULT


def _convert(pixels, src, dst):
    """RGB of (H, W, 4) pixels from colour space `src` to `dst` (OCIO); alpha untouched."""
    import numpy as np
    import PyOpenColorIO as ocio

    if src is None or dst is None:
        return pixels
    config = ocio.Config.CreateFromFile(os.environ.get("OCIO") or OCIO_CONFIG)
    names = [config.getCanonicalName(NUKE_LUT_NAMES.get(n, n)) for n in (src, dst)]
    for given, name in zip((src, dst), names):
        if not name:
            raise ValueError(f"colour space {given!r} is not in the OCIO config")  # Nuke: "unknown colorspace"
    if names[0] == names[1]:
        return pixels
    rgb = np.ascontiguousarray(pixels[..., :3], np.float32)
    config.getProcessor(names[0], names[1]).getDefaultCPUProcessor().applyRGB(rgb)
    return np.concatenate([rgb, pixels[..., 3:4]], axis=-1)


def _file_frame(read, frame):
    """The file frame a Read shows at comp frame `frame` (Foundry Read node, frame_mode: "start at" N puts the
    Read's first frame at N; "offset" N shifts every frame by N; an expression is not interpreted here)."""
    text = str(read["frame"].value()).strip()
    if not text:
        return frame
    mode = str(read["frame_mode"].value())
    if not re.fullmatch(r"-?\d+", text) or mode not in ("start at", "offset"):
        raise NotImplementedError(f"the fake nuke does not evaluate frame {text!r} ({read.fullName()})")
    return frame - int(text) + (int(read["first"].value()) if mode == "start at" else 0)


def _pixels(node, frame, window):
    """A node's pixels over `window`, in the working space. Only what the Vera stack needs; anything else
    fails loudly."""
    if node.Class() == "Read":
        pixels = read_exr_as_nuke(node["file"].evaluate(_file_frame(node, frame)), window,
                                  auto_alpha=bool(node["auto_alpha"].value()))
        return _convert(pixels, _file_colorspace(node), _working_space())
    if (node.knob("disable") is not None and node["disable"].value()) or node.Class() in ("Dot", "NoOp", "Output"):
        return _pixels(node.input(0), frame, window)
    if node.Class() == "Grade" and all(node[k].value() == node_default for k, node_default in
                                       (("multiply", 1.0), ("add", 0.0), ("gamma", 1.0), ("white", 1.0),
                                        ("black", 0.0), ("blackpoint", 0.0), ("whitepoint", 1.0))):
        return _pixels(node.input(0), frame, window)  # a Grade at its defaults changes nothing
    if node.Class() == "Merge2" and node["operation"].value() == "over":
        b = _pixels(node.input(0), frame, window)
        a = _pixels(node.input(1), frame, window) if node.input(1) is not None else b * 0
        return a + b * (1.0 - a[..., 3:4])  # Foundry Merge: over = A + B(1-a)
    raise NotImplementedError(f"the fake nuke does not render {node.Class()} ({node.fullName()})")


def execute(nameOrNode, start=None, end=None, incr=1, views=None, continueOnError=False):
    """Render a Write (Foundry nuke.execute). Recorded in `executed`; the frames are written as EXR when the
    tree is one this fake can compute, else only recorded. The file holds what the Write's knobs say (Foundry
    Write node reference): only the `channels` it names (rgba -> R,G,B,A; rgb -> R,G,B; alpha -> A), as
    `datatype` (16 bit half, the default, or 32 bit float), converted from the working space into its
    `colorspace` unless `raw` is on; data window = the tree's bounding box."""
    node = toNode(nameOrNode) if isinstance(nameOrNode, str) else nameOrNode
    if node is None or node.Class() != "Write":
        raise ValueError(f"{nameOrNode}: not an executable node")
    executed.append({"node": node.fullName(), "file": node["file"].value(), "first": start, "last": end})
    upstream = node.input(0)
    if upstream is None:
        raise RuntimeError(f"{node.fullName()}: nothing is connected")  # Nuke: "Write1: no input"
    try:
        _render_write(node, upstream, start, end)
    except NotImplementedError:
        pass  # a tree the fake cannot compute: recorded only


# A Write's `channels` -> the EXR channels Nuke writes for the rgba layer (Foundry "Reading EXR channels").
WRITE_CHANNELS = {"rgba": "RGBA", "rgb": "RGB", "alpha": "A", "all": "RGBA"}


def _render_write(node, upstream, start, end):
    import OpenEXR
    import numpy as np

    channels = str(node["channels"].value())
    if channels not in WRITE_CHANNELS:
        raise NotImplementedError(f"the fake nuke does not write channels {channels!r}")
    datatype = node["datatype"].value() if node.knob("datatype") is not None else "16 bit half"
    dtype = np.float16 if datatype == "16 bit half" else np.float32
    for frame in range(start, end + 1):
        box = _data_window(upstream, frame) or _display_box(upstream)
        pixels = _convert(_pixels(upstream, frame, box), _working_space(), _file_colorspace(node))
        path = node["file"].evaluate(frame)
        if node["create_directories"].value():
            os.makedirs(os.path.dirname(path), exist_ok=True)
        display = _display_box(upstream)
        header = {"dataWindow": ((box[0], box[1]), (box[2], box[3])),
                  "displayWindow": ((display[0], display[1]), (display[2], display[3])),
                  "compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        planes = {c: np.ascontiguousarray(pixels[..., "RGBA".index(c)].astype(dtype))
                  for c in WRITE_CHANNELS[channels]}
        OpenEXR.File(header, planes).write(path)


def _display_box(node):
    fmt = node.format()
    return (fmt.x(), fmt.y(), fmt.r() - 1, fmt.t() - 1)


def executeInMainThread(call, args=(), kwargs=None):
    """Foundry threading guide: queues `call` for Nuke's main thread and returns at once (the GUI runs it
    later). Tests run the queue with `pump_main_thread()`, as Nuke's event loop would."""
    if not isinstance(args, tuple):
        args = (args,)
    with _lock:
        _main_queue.append((call, args, kwargs or {}, None))


def executeInMainThreadWithResult(call, args=(), kwargs=None):
    """Queues `call` and waits for the main thread to run it. Called *from* the main thread it would wait for
    itself forever (Foundry threading guide: never call it from the main thread): raised here instead."""
    if threading.current_thread() is threading.main_thread():
        raise RuntimeError("executeInMainThreadWithResult called from the main thread: Nuke would hang")
    if not isinstance(args, tuple):
        args = (args,)
    box = {"done": threading.Event()}
    with _lock:
        _main_queue.append((call, args, kwargs or {}, box))
    box["done"].wait()
    if "error" in box:
        raise box["error"]
    return box["result"]


def pump_main_thread():
    """Test helper: what Nuke's event loop does with queued calls. Must run on the main thread."""
    assert threading.current_thread() is threading.main_thread(), "pump from the main thread"
    ran = 0
    while True:
        with _lock:
            if not _main_queue:
                return ran
            call, args, kwargs, box = _main_queue.pop(0)
        main_thread_calls.append(getattr(call, "__name__", repr(call)))
        ran += 1
        try:
            result = call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting thread, or raised here
            if box is None:
                raise
            box["error"] = exc
        else:
            if box is not None:
                box["result"] = result
        if box is not None:
            box["done"].set()


# ------------------------------------------------------------------------------------ the GUI thread
# Foundry "Threading" guide: Nuke's interface runs on the main thread; a wait there freezes it. Under
# `main_thread_guard()` any subprocess wait, sleep or thread join over MAIN_THREAD_LIMIT seconds on the
# main thread raises, so a test proves a button only starts work and returns.
MAIN_THREAD_LIMIT = 0.1
_guarded = [0]


class MainThreadBlocked(AssertionError):
    """Something waited on Nuke's main thread (the GUI would freeze)."""


def _guard(name, original, timeout_arg):
    def guarded(*args, **kwargs):
        if _guarded[0] and threading.current_thread() is threading.main_thread():
            timeout = kwargs.get("timeout", args[timeout_arg] if len(args) > timeout_arg else None)
            if timeout is None or timeout > MAIN_THREAD_LIMIT:
                raise MainThreadBlocked(f"{name}(timeout={timeout}) on Nuke's main thread: the GUI would freeze")
        return original(*args, **kwargs)

    guarded.__wrapped__ = original
    return guarded


if not hasattr(subprocess.Popen.wait, "__wrapped__"):  # once per process, whatever reloads the fake
    subprocess.Popen.wait = _guard("subprocess wait", subprocess.Popen.wait, 1)
    subprocess.Popen.communicate = _guard("subprocess communicate", subprocess.Popen.communicate, 2)
    threading.Thread.join = _guard("Thread.join", threading.Thread.join, 1)
    time.sleep = _guard("time.sleep", time.sleep, 0)


if os.environ.get("FAKE_NUKE_MAIN_THREAD_GUARD"):  # a whole process under the guard (the self-test's CLI)
    _guarded[0] = 1


@contextlib.contextmanager
def main_thread_guard():
    """Test helper: inside it, waiting on the main thread fails (see MainThreadBlocked)."""
    _guarded[0] += 1
    try:
        yield
    finally:
        _guarded[0] -= 1


class ProgressTask:
    def __init__(self, name="", maximum=100, flags=0):
        self.name = name
        self.progress = []
        self.messages = []
        self._cancelled = False
        progress_tasks.append(self)

    def setProgress(self, i):
        self.progress.append(int(i))

    def setMessage(self, s):
        self.messages.append(str(s))

    def isCancelled(self):
        return self._cancelled

    def cancel(self):
        """Test helper: what the user's Cancel button does."""
        self._cancelled = True

    def __del__(self):
        pass


class MenuItem:
    def __init__(self, name, command=None, shortcut="", icon="", tooltip=""):
        self._name, self._command, self._shortcut, self._icon = name, command, shortcut, icon
        self._tooltip = tooltip

    def name(self):
        return self._name

    def script(self):
        return self._command

    def invoke(self):
        if callable(self._command):
            return self._command()
        exec(self._command, {"nuke": sys.modules[__name__]})


class Menu(MenuItem):
    def __init__(self, name, icon=""):
        super().__init__(name, None, "", icon)
        self._items = []

    def items(self):
        return list(self._items)

    def findItem(self, path):
        head, _, rest = path.partition("/")
        item = next((i for i in self._items if i.name() == head), None)
        if rest and isinstance(item, Menu):
            return item.findItem(rest)
        return item if not rest else None

    def addMenu(self, name, icon="", tooltip="", index=-1):
        existing = self.findItem(name)
        if isinstance(existing, Menu):
            return existing
        sub = Menu(name, icon)
        self._items.append(sub)
        return sub

    def addCommand(self, name, command="", shortcut="", icon="", tooltip="", index=-1, readonly=False,
                   shortcutContext=None, tag=None):
        head, _, rest = name.rpartition("/")
        parent = self.addMenu(head) if head else self
        item = MenuItem(rest, command, shortcut, icon, tooltip)
        parent._items = [i for i in parent._items if i.name() != rest] + [item]
        return item

    def addSeparator(self, **kwargs):
        return None


def menu(name):
    # Foundry nuke.menu: "Returns: The menu, or None if it couldn't be found"; in a terminal session (nuke -t,
    # renders) there are no menus, so it returns None (menu.py is not even run there)
    if not env.get("gui"):
        return None
    if name not in _menus:
        _menus[name] = Menu(name)
    return _menus[name]


class _Pane:
    def __init__(self, name):
        self.name = name
        self.panels = []


def getPaneFor(name):
    return _Pane(name)


reset()
