"""Import Layers: the rendered edit layer as ordinary Nuke nodes, merged over the source.

Inside a labelled Backdrop:  Read (edit.####.exr, premultiplied) -> Grade (refine the edit's colour)
-> Shuffle2 (matte.alpha -> alpha, off until the artist wants the raw matte) -> Merge2 over: A (input 1) =
that chain, B (input 0) = the Vera Edit node's Source. Every node carries hidden knobs `vera_role` and
`vera_owner` (the Vera node's `vera_id`), so a re-import finds its stack whatever the artist renamed:
it updates the Read in place and leaves the refinement nodes (and anything inserted) alone. The stack is
made in the Vera node's own group (vera_nuke.graph), never inside the gizmo whose button runs this.

The stack is described once (`stack_nodes`); `build` makes it with Nuke's Python API and `nk_text` writes
the same thing as Nuke script text ("Copy as .nk").
"""

from __future__ import annotations

import os
import re
from collections import namedtuple

from vera_nuke import graph
from vera_nuke.util import to_nuke_path

ROLE_KNOB = "vera_role"
OWNER_KNOB = "vera_owner"
ROLES = ("backdrop", "read", "grade", "matte", "merge")
SOURCE = "source"  # input placeholder: the Vera node's Source

NodeSpec = namedtuple("NodeSpec", "role cls knobs inputs")  # inputs: {index: role or SOURCE}

# Shuffle2 keeps R,G,B and takes alpha from the matte layer. One description, written both ways: the Python
# API's mappings are (in-slot, from, to), the slot being where the source layer is chosen (in1: rgba = 0,
# in2: matte = 1); the script form (`mappings_script`) is derived from the same list and layers.
MATTE_IN, MATTE_OUT = ("rgba", "matte"), ("rgba", "none")
LAYER_CHANNELS = {"rgba": ("rgba.red", "rgba.green", "rgba.blue", "rgba.alpha"), "matte": ("matte.alpha",)}
MATTE_MAPPINGS = [(MATTE_IN.index(src.split(".")[0]), src, dst) for src, dst in
                  (("rgba.red", "rgba.red"), ("rgba.green", "rgba.green"), ("rgba.blue", "rgba.blue"),
                   ("matte.alpha", "rgba.alpha"))]
MATTE_LAYER = "matte " + " ".join(LAYER_CHANNELS["matte"])  # add_layer's argument: Nuke knows a layer once added
# Vera's Reads: black outside the layer's frames (Nuke's default "hold" would hold the first and last edit
# frames over the plate), and alpha 1 where a file has none (Nuke's default: alpha 0, which an over ignores).
READ_EDGES = {"before": "black", "after": "black"}
# OCIO roles a spec may name -> the Root LUT knob Nuke's own colour management uses for such files (Project
# Settings > Color: 8/16-bit sRGB, log Cineon, float linear). Under OCIO management the roles are values.
ROLE_LUTS = {"compositing_log": "logLut", "color_timing": "logLut", "color_picking": "int8Lut",
             "matte_paint": "int8Lut", "texture_paint": "int8Lut", "scene_linear": "floatLut",
             "reference": "floatLut"}
NUKE_LUT_DEFAULTS = {"int8Lut": "sRGB", "int16Lut": "sRGB", "logLut": "Cineon", "floatLut": "linear"}


def mappings_script(mappings=None, ins=MATTE_IN, outs=MATTE_OUT) -> str:
    """Shuffle2 mappings as a script value: the count, then per link `from slot index to slot index`, the
    index being the channel's place in its layer (matte.alpha: 0). Checks that each link's slot is its layer's."""
    mappings = MATTE_MAPPINGS if mappings is None else mappings
    parts = [str(len(mappings))]
    for slot, src, dst in mappings:
        if ins.index(src.split(".")[0]) != slot:
            raise ValueError(f"Shuffle2 mapping {src}: slot {slot} is not its layer's ({ins})")
        for channel, slots in ((src, ins), (dst, outs)):
            layer = channel.split(".")[0]
            parts += [channel, str(slots.index(layer)), str(LAYER_CHANNELS[layer].index(channel))]
    return " ".join(parts)


def tcl_escape(text: str) -> str:
    """Free text made literal for a knob Nuke evaluates (labels): every TCL character backslashed, so the
    label shows `[python ...]`, `$env(HOME)`, `{` and `\\` as typed and runs nothing."""
    return re.sub(r"([\\\[\]${}])", r"\\\1", text)


def _nuke():
    import nuke

    return nuke


def layer_pattern(out_dir: str, name: str = "edit", padding: int = 4) -> str:
    """The layers' file pattern as Nuke writes a Read's file: printf padding (`edit.%04d.exr`)."""
    return to_nuke_path(os.path.join(out_dir, f"{name}.%0{padding}d.exr"))


def format_text(fmt) -> str:
    """A nuke.Format as a .nk `format` value: width height x y r t pixel-aspect."""
    return f"{fmt.width()} {fmt.height()} {fmt.x()} {fmt.y()} {fmt.r()} {fmt.t()} {fmt.pixelAspect():g}"


def read_knobs(pattern: str, first: int, last: int, colorspace: str, working_space: str,
               luts: dict | None = None) -> dict:
    """The Read's knobs. Layers are premultiplied and in the plate's colour space (docs/output-format.md):
    raw when that is the working space (or raw), else the plate's colour space so Nuke converts it. `luts`
    (Root LUT knob -> value) is given under Nuke's own colour management, where an OCIO role is not a value of
    the Read's colorspace: the Root's LUT for that kind of file is used instead."""
    knobs = {"file": pattern, "first": first, "last": last, "origfirst": first, "origlast": last,
             "premultiplied": True, "auto_alpha": True, **READ_EDGES}
    if colorspace in ("raw", "Raw", working_space, "scene_linear"):
        knobs["raw"] = True
    else:
        if luts is not None and colorspace in ROLE_LUTS:
            colorspace = luts.get(ROLE_LUTS[colorspace]) or NUKE_LUT_DEFAULTS[ROLE_LUTS[colorspace]]
        knobs.update(raw=False, colorspace=colorspace)
    return knobs


def stack_nodes(owner_name: str, instruction: str, pattern: str, first: int, last: int, colorspace: str,
                working_space: str, origin=(0, 0), layer_format: str = "", luts: dict | None = None) -> list:
    """The stack. `layer_format` (the plate's format, see format_text) goes into the .nk text so a pasted
    Read need not guess; the API build reads it from the file header instead (fromUserText). The backdrop's
    label shows the instruction's first line, cut first and then escaped (a cut never splits an escape)."""
    x, y = origin
    read = dict(read_knobs(pattern, first, last, colorspace, working_space, luts), label="Vera edit layer",
                xpos=x, ypos=y)
    if layer_format:
        read["format"] = layer_format
    title = instruction.strip().splitlines()[0][:60] if instruction.strip() else ""
    return [
        NodeSpec("backdrop", "BackdropNode", {
            "label": tcl_escape(f"Vera: {owner_name}\n{title}"), "note_font_size": 16, "tile_color": 0x5C6F8AFF,
            "xpos": x - 40, "ypos": y - 60, "bdwidth": 200, "bdheight": 360}, {}),
        NodeSpec("read", "Read", read, {}),
        NodeSpec("grade", "Grade", {"channels": "rgb", "unpremult": "rgba.alpha",
                                    "label": "refine edit colour", "xpos": x, "ypos": y + 100}, {0: "read"}),
        NodeSpec("matte", "Shuffle2", {"in1": MATTE_IN[0], "in2": MATTE_IN[1], "out1": MATTE_OUT[0],
                                       "out2": MATTE_OUT[1], "mappings": MATTE_MAPPINGS, "disable": True,
                                       "label": "matte.alpha -> alpha\n(enable for the raw matte)",
                                       "xpos": x, "ypos": y + 150}, {0: "grade"}),
        NodeSpec("merge", "Merge2", {"operation": "over", "label": "Vera over plate",
                                     "xpos": x, "ypos": y + 250}, {0: SOURCE, 1: "matte"}),
    ]


def stack_from_spec(spec: dict, owner_name: str, working_space: str = "scene_linear", origin=(0, 0),
                    layer_format: str = "", luts: dict | None = None) -> list:
    """The stack for a shot spec's output (the frames it names, in its plate's colour space). The spec must
    have passed vera_nuke.shot.checked_output: its output fields enter knobs."""
    out = spec["output"]
    pattern = layer_pattern(out["dir"], out.get("name", "edit"), int(out.get("padding", 4)))
    plate = spec["plate"]
    instruction = spec.get("instruction", "")
    return stack_nodes(owner_name, instruction if isinstance(instruction, str) else "", pattern,
                       int(plate["first"]), int(plate["last"]), plate["colorspace"], working_space, origin,
                       layer_format, luts)


def find_stack(owner_id: str) -> dict:
    """role -> node for the nodes tagged with this Vera node's id, in whatever group they are."""
    found = {}
    for n in graph.all_nodes_everywhere():
        role, owner = n.knob(ROLE_KNOB), n.knob(OWNER_KNOB)
        if role is not None and owner is not None and owner.getText() == owner_id:
            found.setdefault(role.getText(), n)
    return found


def _tag(node, role: str, owner_id: str) -> None:
    nuke = _nuke()
    for name, value in ((ROLE_KNOB, role), (OWNER_KNOB, owner_id)):
        knob = node.knob(name)
        if knob is None:
            knob = nuke.String_Knob(name, name)
            knob.setFlag(nuke.INVISIBLE)
            node.addKnob(knob)
        knob.setValue(value)


def register_matte_layer() -> None:
    """Make the `matte` layer known to Nuke (what `add_layer` does in a .nk) before a node names it."""
    nuke = _nuke()
    if "matte" not in nuke.layers():
        nuke.tcl(f"add_layer {{{MATTE_LAYER}}}")


READ_FILE_KNOBS = ("file", "first", "last", "origfirst", "origlast", "premultiplied", "raw", "colorspace",
                   "auto_alpha", "before", "after")


def set_read_file(read, knobs: dict) -> None:
    """The Read's file and range through fromUserText, so that Nuke reads the header (format, bounding box,
    channels) as when a file is chosen in the panel; setValue would leave the default format."""
    read["file"].fromUserText(f"{knobs['file']} {knobs['first']}-{knobs['last']}")
    for name in READ_FILE_KNOBS[1:]:
        if name in knobs:
            read[name].setValue(knobs[name])


def build(specs: list, source, owner_id: str, parent) -> dict:
    """Create the nodes with Nuke's API inside `parent` (the Vera node's group); returns role -> node.
    Raises graph.ConnectError when Nuke refuses a connection."""
    nuke = _nuke()
    made = {}
    with parent:
        register_matte_layer()
        for spec in specs:
            skip = ("xpos", "ypos", "format", "mappings") + (READ_FILE_KNOBS if spec.cls == "Read" else ())
            node = getattr(nuke.nodes, spec.cls)(**{k: v for k, v in spec.knobs.items() if k not in skip})
            if spec.cls == "Read":
                set_read_file(node, spec.knobs)
            node.setXYpos(int(spec.knobs.get("xpos", 0)), int(spec.knobs.get("ypos", 0)))
            if "mappings" in spec.knobs:  # after in1/in2/out1/out2: the links name their layers
                node["mappings"].setValue(spec.knobs["mappings"])
            _tag(node, spec.role, owner_id)
            made[spec.role] = node
    for spec in specs:
        for index, upstream in spec.inputs.items():
            graph.connect(made[spec.role], index, source if upstream == SOURCE else made[upstream])
    return made


def update_read(read, knobs: dict) -> None:
    """Point an existing Read at the new render (same knobs a fresh import sets) and reload it."""
    set_read_file(read, knobs)
    reload = read.knob("reload")
    if reload is not None and hasattr(reload, "execute"):
        reload.execute()


# ------------------------------------------------------------------------------------------ .nk text
def tcl_value(value) -> str:
    """A knob value as Nuke writes it in a script."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if text and re.fullmatch(r"[\w./#%:+\-@]+", text):
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("[", "\\[").replace("]", "\\]")
               .replace("$", "\\$").replace("\n", "\\n"))
    return f'"{escaped}"'


def nk_text(specs: list, owner_id: str, version: str = "13.0 v1") -> str:
    """Nuke script text for the stack, to paste in any Nuke 13+: B connects to the node selected when
    pasting ($cut_paste_input). On Nuke's stack the top is input 0, so A's chain is written first."""
    lines = ["set cut_paste_input [stack 0]", f"version {version}"]
    by_role = {s.role: s for s in specs}
    order = ["backdrop", "read", "grade", "matte", "merge"]
    for role in order:
        spec = by_role[role]
        if role == "matte":
            lines.append(f"add_layer {{{MATTE_LAYER}}}")  # before the first node naming the layer, as Nuke does
        if spec.inputs.get(0) == SOURCE:
            lines.append("push $cut_paste_input")
        lines.append(f"{spec.cls} {{")
        n_inputs = len(spec.inputs)
        if n_inputs != 1:
            lines.append(f" inputs {n_inputs}")
        for name, value in spec.knobs.items():
            if name == "mappings":
                value = mappings_script(value, (spec.knobs["in1"], spec.knobs["in2"]),
                                        (spec.knobs["out1"], spec.knobs["out2"]))
            lines.append(f" {name} {tcl_value(value)}")
        lines.append(" addUserKnob {20 User}")
        for name, value in ((ROLE_KNOB, role), (OWNER_KNOB, owner_id)):
            lines.append(f" addUserKnob {{1 {name} +INVISIBLE}}")
            lines.append(f" {name} {tcl_value(value)}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def copy_to_clipboard(text: str) -> None:
    from vera_nuke.qt import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        raise RuntimeError("no Qt application: cannot reach the clipboard")
    app.clipboard().setText(text)
