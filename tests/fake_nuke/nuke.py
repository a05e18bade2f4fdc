"""A stand-in for Foundry Nuke's `nuke` Python module, for testing `vera_nuke` without Nuke.

It behaves like Nuke's documented Python API (learn.foundry.com, "Nuke Python API reference") for the parts
Vera uses, and records what happened so tests can assert on it:

- Nodes: `createNode(cls, knobs="", inpanel=True)` (connects to the selected node and selects the new one,
  as the GUI does), `nodes.<Class>(**knobs)` (no auto-connect; `inputs=[...]` allowed), `toNode`, `allNodes`,
  `selectedNode` (ValueError when nothing is selected), `selectedNodes`, `delete`, `thisNode`, `root`.
- Node: `Class()`, `name()`, `setName`, `knob(name)` (None when missing), `node[name]` (NameError when the
  knob does not exist, like Nuke), `knobs()`, `addKnob`, `removeKnob` (ValueError when not on the node),
  `input(i)`, `inputs()`, `setInput(i, node)`, `maximumInputs()`, `dependent()`, `xpos/ypos/setXYpos`,
  `screenWidth/screenHeight`, `format()`, `width()`, `height()`, `metadata()`, `isSelected/setSelected`.
- Knobs: `value/getValue/setValue`, `setFlag/clearFlag/getFlag`, `name`, `label`, `Class`, `evaluate`
  (File/String), `values()` (Enumeration), `execute()` (PyScript: runs the command with `thisNode()` set,
  as pressing the button does), `toScript()`.
- Gizmos: a node class not built in is looked up as `<Class>.gizmo` on the plug-in path (`pluginAddPath`),
  and its `Input` nodes and `addUserKnob` lines define its inputs and knobs, as Nuke loads gizmos.
- `ProgressTask` (setProgress, setMessage, isCancelled), `executeInMainThread[WithResult]` (run inline:
  this fake has no event loop), `message` (recorded in `messages`), `execute(node, first, last)` (recorded
  in `executed`; nothing is rendered), `menu(name).addCommand/addMenu` (recorded), `pluginAddPath`
  (recorded and added to sys.path, Nuke's default `addToSysPath=True`), `getPaneFor`, `scriptName`.

Where it is simplified (say so in a test before relying on more):
- `setInput` with an index at or beyond `maximumInputs()` raises ValueError; Nuke refuses the connection
  (returns False). Failing loudly here catches the same mistake.
- Unknown knob names passed to `nodes.X(...)` / `createNode(..., knobs)` raise NameError, as `node[name]` does.
- Each built-in class knows only the knobs listed in `NODE_CLASSES` (the knobs of Nuke's reference guide
  that Vera touches, plus the knobs every node has). Array knobs (Grade `white`...) hold one value.
- No images are computed: `format()` comes from the `format` knob, `metadata()` from `_metadata`, which a
  test may fill (e.g. an EXR data window); `bbox()` (the node's box in the DAG) is xpos/ypos/size.
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
        return self._value

    def getText(self):
        return self._value

    def setText(self, text):
        self.setValue(text)


class EvalString_Knob(String_Knob):
    pass


class Multiline_Eval_String_Knob(EvalString_Knob):
    pass


class File_Knob(EvalString_Knob):
    def evaluate(self, frame=None):
        """Nuke substitutes the frame number into the pattern; we do the same for #### and %0Nd."""
        text = self._value
        if frame is None:
            return text
        text = re.sub(r"#+", lambda m: f"{frame:0{len(m.group(0))}d}", text)
        return re.sub(r"%0?(\d*)d", lambda m: f"{frame:0{int(m.group(1) or 1)}d}", text)


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
    pass


class ChannelMask_Knob(String_Knob):
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
        _this_stack.append(self._node)
        try:
            exec(self._value, {"nuke": sys.modules[__name__], "__name__": "__main__"})
        finally:
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
                  ("create_directories", Boolean_Knob, False), ("datatype", Enumeration_Knob,
                                                                 ["16 bit half", "32 bit float"]),
                  ("compression", Enumeration_Knob, ["none", "Zip (1 scanline)", "Zip (16 scanlines)",
                                                     "PIZ Wavelet (32 scanlines)"]),
                  ("metadata", Enumeration_Knob, ["default metadata", "no metadata", "all metadata"])]),
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
    "Root": (0, [("first_frame", Int_Knob, 1), ("last_frame", Int_Knob, 100), ("format", Format_Knob, "HD_1080"),
                 ("colorManagement", Enumeration_Knob, ["Nuke", "OCIO"]),
                 ("workingSpaceLUT", String_Knob, "scene_linear"), ("project_directory", String_Knob, "")]),
}
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
        self._deleted = False
        for name, knob_cls, default in COMMON_KNOBS + list(knob_specs):
            if knob_cls is Enumeration_Knob or knob_cls is ColorspaceKnob:
                knob = knob_cls(name, name, default if isinstance(default, list) else [])
                if not isinstance(default, list):
                    knob._value = default
            else:
                knob = knob_cls(name, name, default)
            self.addKnob(knob)

    # identity
    def Class(self):
        return self._class

    def name(self):
        return self._knobs["name"].value()

    def setName(self, name, uncollide=True):
        if uncollide and toNode(name) not in (None, self):
            name = _unique_name(re.sub(r"\d+$", "", name))
        self._knobs["name"].setValue(name)

    def fullName(self):
        return self.name()

    def __repr__(self):
        return f"<{self._class} {self.name()}>"

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
        if not 0 <= i < self._max_inputs:
            raise ValueError(f"{self.name()} ({self._class}) has no input {i} (maximum {self._max_inputs})")
        self._inputs[i] = node
        return True

    def connectInput(self, i, node):
        return self.setInput(i, node)

    def dependent(self, what=None, forceEvaluate=True):
        return [n for n in _nodes if self in n._inputs]

    def canSetInput(self, i, node):
        return 0 <= i < self._max_inputs

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
        return self._metadata if key is None else self._metadata.get(key)

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

    def begin(self):
        return self

    def end(self):
        return None


class Root(Node):
    def __init__(self):
        super().__init__("Root", 0, NODE_CLASSES["Root"][1])
        self._knobs["name"].setValue("")

    def firstFrame(self):
        return self["first_frame"].value()

    def lastFrame(self):
        return self["last_frame"].value()


# ---------------------------------------------------------------------------------------------- state
_nodes: list = []
_root = None
_this_stack: list = []
_counters: dict = {}
plugin_paths: list = []
messages: list = []
executed: list = []
progress_tasks: list = []
main_thread_calls: list = []
_menus: dict = {}
_lock = threading.RLock()


def reset():
    """Forget every node, message, menu and record (call between tests)."""
    global _root
    with _lock:
        _nodes.clear()
        _this_stack.clear()
        _counters.clear()
        messages.clear()
        executed.clear()
        progress_tasks.clear()
        main_thread_calls.clear()
        _menus.clear()
        del plugin_paths[:]
        _root = Root()


def _unique_name(base):
    n = _counters.get(base, 0)
    while True:
        n += 1
        name = f"{base}{n}"
        if toNode(name) is None:
            _counters[base] = n
            return name


def _gizmo_path(cls):
    for folder in reversed(plugin_paths):
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


def _make_node(cls):
    cls = CLASS_ALIASES.get(cls, cls)
    if cls in NODE_CLASSES:
        max_inputs, specs = NODE_CLASSES[cls]
        node = Node(cls, max_inputs, specs)
    else:
        path = _gizmo_path(cls)
        if path is None:
            raise RuntimeError(f"{cls}: unknown command")  # Nuke's message for an unknown node class
        with open(path, encoding="utf-8") as f:
            n_inputs, user_knobs, values = parse_gizmo(f.read())
        node = Node(cls, n_inputs, [])
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
    node._knobs["name"].setValue(_unique_name(cls))
    with _lock:
        _nodes.append(node)
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
    """Create a node as the GUI does: connected to (and replacing) the selection."""
    new = _make_node(node)
    pairs = shlex.split(args) if args else []
    _apply_knobs(new, dict(zip(pairs[0::2], pairs[1::2])))
    selected = selectedNodes()
    if selected and new.maximumInputs() > 0:
        new.setInput(0, selected[0])
    for n in _nodes:
        n.setSelected(n is new)
    return new


class _NodeFactory:
    def __getattr__(self, cls):
        def create(**knobs):
            new = _make_node(cls)
            _apply_knobs(new, knobs)
            return new

        return create


nodes = _NodeFactory()


def toNode(name):
    if name == "root":
        return _root
    return next((n for n in _nodes if n.name() == name), None)


def allNodes(filter=None, group=None, recurseGroups=False):
    return [n for n in _nodes if filter is None or n.Class() == CLASS_ALIASES.get(filter, filter)]


def selectedNodes(filter=None):
    return [n for n in allNodes(filter) if n.isSelected()]


def selectedNode():
    chosen = selectedNodes()
    if not chosen:
        raise ValueError("no node selected")
    return chosen[-1]


def delete(node):
    with _lock:
        _nodes.remove(node)
        for n in _nodes:
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


def pluginAddPath(path, addToSysPath=True):
    plugin_paths.append(path)
    if addToSysPath and path not in sys.path:
        sys.path.append(path)


def pluginPath():
    return list(plugin_paths)


def message(text):
    messages.append(str(text))


def tprint(*args):
    print(*args)


def execute(nameOrNode, start=None, end=None, incr=1, views=None, continueOnError=False):
    node = toNode(nameOrNode) if isinstance(nameOrNode, str) else nameOrNode
    if node is None or node.Class() != "Write":
        raise ValueError(f"{nameOrNode}: not an executable node")
    executed.append({"node": node.name(), "file": node["file"].value(), "first": start, "last": end})


def executeInMainThread(call, args=(), kwargs=None):
    if not isinstance(args, tuple):
        args = (args,)
    main_thread_calls.append(getattr(call, "__name__", repr(call)))
    call(*args, **(kwargs or {}))


def executeInMainThreadWithResult(call, args=(), kwargs=None):
    if not isinstance(args, tuple):
        args = (args,)
    main_thread_calls.append(getattr(call, "__name__", repr(call)))
    return call(*args, **(kwargs or {}))


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
