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

import os
import re
import shlex
import sys
import threading

# Knob flags (values as in Nuke's nuke module; only identity matters here).
INVISIBLE = 0x400
HIDDEN = 0x0000000000040000
DISABLED = 0x80
STARTLINE = 0x1000
NO_ANIMATION = 0x100
READ_ONLY = 0x10000000

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

    def evaluate(self):
        # Foundry "Expressions" guide: a string knob's [TCL] and $env() parts are expanded on evaluate(),
        # value() returns the text as typed (Root project_directory is usually [python {...}]).
        return _tcl_expand(self._value, self._node)

    def getText(self):
        return self._value

    def setText(self, text):
        self.setValue(text)


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

    def evaluate(self, frame=None):
        """Nuke expands TCL/variables and puts the frame (default: the current frame) into the pattern."""
        return _frame_into(_tcl_expand(self._value, self._node), root().frame() if frame is None else frame)

    def fromUserText(self, text):
        # Foundry "Read" guide / nukescripts' drop handler: fromUserText("path first-last") sets the file and
        # range and makes the Read read the file's header (its format); setValue only sets the text.
        m = re.match(r"^(.*?)(?:\s+(-?\d+)-(-?\d+))?\s*$", text)
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
        self._values = list(values or [])
        super().__init__(name, label, None)
        self._value = self._values[0] if self._values else ""

    def _coerce(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._values[int(value)]
        value = str(value)
        if self._values and value not in self._values:
            raise ValueError(f"{value!r} is not one of {self._values}")
        return value

    def values(self):
        return list(self._values)

    def setValues(self, values):
        self._values = list(values)

    def numValues(self):
        return len(self._values)


class ColorspaceKnob(Enumeration_Knob):
    """Read/Write `colorspace`: any OCIO name is accepted (the real list depends on the config)."""

    def _coerce(self, value):
        return str(value)


class Channel_Knob(String_Knob):
    def _coerce(self, value):
        # Foundry "Creating Channels and Layers": a channel knob names a known layer or layer.channel; custom
        # layers exist once registered (add_layer in a .nk, which Nuke writes before the nodes using them).
        value = str(value)
        if value not in ("none", "") and not _layer_known(value):
            raise ValueError(f"{self._name}: unknown layer or channel {value!r} (register it with add_layer)")
        return value


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


Script_Knob = PyScript_Knob


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
        return addFormat(str(value))

    def toScript(self):
        f = self._value
        return f"{f.width()} {f.height()} 0 0 {f.width()} {f.height()} {f.pixelAspect():g} {f.name()}".strip()


# ---------------------------------------------------------------------------------------------- classes
# Knobs every node has (Nuke's "Node" tab and internals).
COMMON_KNOBS = [
    ("name", String_Knob, ""), ("label", Multiline_Eval_String_Knob, ""), ("xpos", Int_Knob, 0),
    ("ypos", Int_Knob, 0), ("selected", Boolean_Knob, False), ("disable", Boolean_Knob, False),
    ("tile_color", Int_Knob, 0), ("note_font_size", Int_Knob, 11), ("hide_input", Boolean_Knob, False),
    ("help", Text_Knob, ""),
]

_COLORSPACES = None  # any string accepted (ColorspaceKnob)

# class -> (maximum inputs, [(knob name, knob class, default)])  (knob names from Nuke's reference guide)
NODE_CLASSES = {
    "Read": (0, [("file", File_Knob, ""), ("proxy", File_Knob, ""), ("format", Format_Knob, "HD_1080"),
                 ("first", Int_Knob, 1), ("last", Int_Knob, 1), ("origfirst", Int_Knob, 1),
                 ("origlast", Int_Knob, 1), ("before", Enumeration_Knob, ["hold", "loop", "bounce", "black"]),
                 ("after", Enumeration_Knob, ["hold", "loop", "bounce", "black"]),
                 ("frame_mode", Enumeration_Knob, ["expression", "start at", "offset"]),
                 ("frame", String_Knob, ""), ("on_error", Enumeration_Knob, ["error", "black", "checkerboard",
                                                                           "nearest frame"]),
                 ("colorspace", ColorspaceKnob, "default"), ("premultiplied", Boolean_Knob, False),
                 ("raw", Boolean_Knob, False), ("auto_alpha", Boolean_Knob, False),
                 ("reload", PyScript_Knob, ""), ("file_type", String_Knob, "")]),
    "Write": (1, [("file", File_Knob, ""), ("file_type", Enumeration_Knob,
                                           ["", "exr", "dpx", "tiff", "png", "jpeg", "mov"]),
                  ("channels", ChannelMask_Knob, "rgb"), ("colorspace", ColorspaceKnob, "default"),
                  ("raw", Boolean_Knob, False), ("premultiplied", Boolean_Knob, False),
                  ("use_limit", Boolean_Knob, False), ("first", Int_Knob, 1), ("last", Int_Knob, 1),
                  ("create_directories", Boolean_Knob, False)]),
    "Grade": (2, [("channels", ChannelMask_Knob, "rgb"), ("blackpoint", Color_Knob, 0.0),
                  ("whitepoint", Color_Knob, 1.0), ("black", Color_Knob, 0.0), ("white", Color_Knob, 1.0),
                  ("multiply", Color_Knob, 1.0), ("add", Color_Knob, 0.0), ("gamma", Color_Knob, 1.0),
                  ("reverse", Boolean_Knob, False), ("black_clamp", Boolean_Knob, True),
                  ("white_clamp", Boolean_Knob, False), ("maskChannelInput", Channel_Knob, "none"),
                  ("unpremult", Channel_Knob, "none"), ("mix", Double_Knob, 1.0)]),
    "Shuffle2": (2, [("fromInput1", Int_Knob, 0), ("in1", Channel_Knob, "rgba"), ("fromInput2", Int_Knob, 0),
                     ("in2", Channel_Knob, "none"), ("out1", Channel_Knob, "rgba"),
                     ("out2", Channel_Knob, "none"), ("mappings", Knob, None)]),
    "Merge2": (10, [("operation", Enumeration_Knob, ["over", "under", "plus", "multiply", "screen", "mask",
                                                      "stencil", "copy", "max", "min", "in", "out"]),
                    ("Achannels", ChannelMask_Knob, "rgba"), ("Bchannels", ChannelMask_Knob, "rgba"),
                    ("output", ChannelMask_Knob, "rgba"), ("also_merge", ChannelMask_Knob, "none"),
                    ("maskChannelInput", Channel_Knob, "none"), ("mix", Double_Knob, 1.0),
                    ("bbox", Enumeration_Knob, ["union", "intersection", "A", "B"])]),
    "BackdropNode": (0, [("bdwidth", Int_Knob, 200), ("bdheight", Int_Knob, 200),
                         ("note_font", String_Knob, "Verdana"), ("z_order", Int_Knob, 0),
                         ("appearance", Enumeration_Knob, ["Fill", "Border"])]),
    "Dot": (1, []),
    "NoOp": (1, []),
    "Crop": (1, [("box", Knob, None), ("reformat", Boolean_Knob, False)]),
    "Input": (0, [("number", Int_Knob, 0)]),
    "Output": (1, []),
    "Viewer": (10, []),
    "Group": (0, []),  # inputs: its Input nodes
    "Root": (0, [("first_frame", Int_Knob, 1), ("last_frame", Int_Knob, 100), ("frame", Int_Knob, 1),
                 ("format", Format_Knob, "HD_1080"), ("colorManagement", Enumeration_Knob, ["Nuke", "OCIO"]),
                 ("workingSpaceLUT", String_Knob, "scene_linear"),
                 # Nuke's default project directory is this expression (Project Settings, Root node)
                 ("project_directory", String_Knob, "[python {nuke.script_directory()}]")]),
}
# Write knobs that exist only while file_type is exr (Nuke's Write adds the file format's knobs when the
# type is chosen, so `datatype` set before `file_type` fails: tk-nuke-writenode PR 35 sets file_type first).
WRITE_EXR_KNOBS = [("datatype", Enumeration_Knob, ["16 bit half", "32 bit float"]),
                   ("compression", Enumeration_Knob, ["none", "Zip (1 scanline)", "Zip (16 scanlines)",
                                                      "PIZ Wavelet (32 scanlines)"]),
                   ("metadata", Enumeration_Knob, ["default metadata", "no metadata", "all metadata"])]
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
        for name, knob_cls, default in COMMON_KNOBS + list(knob_specs):
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
        return self._knobs["xpos"].value()

    def ypos(self):
        return self._knobs["ypos"].value()

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
    if knob_cls is Enumeration_Knob or knob_cls is ColorspaceKnob:
        knob = knob_cls(name, name, default if isinstance(default, list) else [])
        if not isinstance(default, list):
            knob._value = default
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
        node = Group(cls, 0, [])
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
        node = Group(cls, n_inputs, [])  # a gizmo is a Group whose nodes come from the file
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
    with _lock:
        node._parent = group
        node._knobs["name"].setValue(_unique_name(cls, group))
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
def _tcl_expand(text, node=None):
    """The TCL a file or string knob may hold, as Nuke expands it (Foundry "Expressions" / "TCL"):
    $env(NAME), [getenv NAME], [python EXPR] / [python {EXPR}], [value KNOB] / [value NODE.KNOB],
    [file dirname X]. Innermost brackets first; anything else is left as typed."""
    text = re.sub(r"\$env\((\w+)\)", lambda m: os.environ.get(m.group(1), ""), str(text))
    pattern = re.compile(r"\[([^\[\]]*)\]")
    while True:
        m = pattern.search(text)
        if m is None:
            return text
        words = _tcl_words(m.group(1))
        command, rest = (words[0], words[1:]) if words else ("", [])
        if command == "python":
            value = str(eval(" ".join(rest), {"nuke": sys.modules[__name__]}))
        elif command == "getenv":
            value = os.environ.get(rest[0], "")
        elif command == "value":
            owner, _, knob = rest[0].rpartition(".")
            target = (toNode(owner) if owner else node) or _root
            value = str(target[knob].evaluate() if hasattr(target[knob], "evaluate") else target[knob].value())
        elif command == "file" and rest[:1] == ["dirname"]:
            value = os.path.dirname(rest[1])
        else:
            raise NotImplementedError(f"the fake nuke does not evaluate [{m.group(1)}]")
        text = text[:m.start()] + value + text[m.end():]


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
    """Only `add_layer {name name.chan ...}` (what a .nk writes before nodes using a custom layer)."""
    words = _tcl_words(" ".join([command, *args]))
    if words[0] != "add_layer":
        raise NotImplementedError(f"the fake nuke runs only add_layer, not {words[0]}")
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


def read_exr_as_nuke(path, window):
    """Pixels (H, W, 4) over `window` (x0, y0, x1, y1 inclusive) as Nuke's EXR reader gives them: inside the
    data window the file's values; outside it black, except that when the data window equals the display
    window exactly, edge pixels repeat outside it (the reader's edge mode "plate": Foundry Read node,
    "edge pixels" / EXR bounding box). Missing alpha is 1 inside the data window (auto alpha)."""
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
        pixels[..., i] = chans[name].pixels if name in chans else (1.0 if name == "A" else 0.0)
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
        pixels = read_exr_as_nuke(node["file"].evaluate(_file_frame(node, frame)), window)
        return _convert(pixels, _file_colorspace(node), _working_space())
    if node["disable"].value() or node.Class() in ("Dot", "NoOp", "Output"):
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
    # Foundry nuke.menu / start-up guide: menus exist only in a GUI session; without one it raises
    if not env.get("gui"):
        raise RuntimeError("nuke.menu: no menus without a GUI (nuke -t / render session)")
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
