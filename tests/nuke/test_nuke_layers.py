"""Import Layers / Copy as .nk: the Merge-over stack the Vera Edit node builds (fake nuke)."""

import re

import numpy as np
import pytest

import fake_nuke
from bundles import write_plate
from vera.exr import write_layers
from vera_nuke import actions, layers, shot


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    return fake_nuke.setup(tmp_path, monkeypatch)


def rendered_node(nuke, tmp_path, first=1001, last=1010, out="out", group=None):
    """A Vera node (at root, or inside `group`) whose render is done: its shot spec and edit layers exist
    (what Render Locally / Submit leave behind). Nodes are made as an artist does, inside the group."""
    pattern = write_plate(tmp_path / "plates", 1001, 1020, 64, 48)
    if group is not None:
        group.begin()
    try:
        read = nuke.nodes.Read()
        read["file"].fromUserText(f"{pattern} 1001-1020")
        read["raw"].setValue(True)
        read.setXYpos(0, 0)
        node = nuke.nodes.VeraEdit(instruction="add a red balloon\nfloating left to right")
        assert node.setInput(0, read)
        node.setXYpos(0, 100)
        node["output_dir"].setValue(str(tmp_path / out))
        node["limit_range"].setValue(True)
        node["first_frame"].setValue(first)
        node["last_frame"].setValue(last)
        path = shot.write_spec(shot.build_spec(node))
    finally:
        if group is not None:
            group.end()
    write_edit_layers(tmp_path / out, first, last)
    actions.record_job(node, {"kind": "local", "state": "done", "spec": path})
    return node, read


def write_edit_layers(folder, first, last, width=64, height=48):
    rgba = np.zeros((height, width, 4), np.float32)
    rgba[10:20, 10:30] = (0.5, 0.1, 0.1, 0.5)
    for frame in range(first, last + 1):
        write_layers(folder / f"edit.{frame:04d}.exr", rgba, (0, 0, width - 1, height - 1), {})


def press(node, button):
    """What an artist does: click the button (its command runs with the node's gizmo as current group)."""
    node[button].execute()


def vera_stack(nuke, node):
    """role -> node of the stack tagged with the Vera node's id, wherever it is."""
    owner = node["vera_id"].value()
    found = {}
    for n in nuke.allNodes(group=nuke.root(), recurseGroups=True):
        if n.knob("vera_owner") is not None and n["vera_owner"].value() == owner:
            assert n["vera_role"].value() not in found, "a role appears twice"
            found[n["vera_role"].value()] = n
    return found


def test_import_at_root_builds_the_merge_over_stack_at_root(nuke, tmp_path):
    node, plate = rendered_node(nuke, tmp_path)

    press(node, "import_layers")

    assert nuke.messages == []
    stack = vera_stack(nuke, node)
    assert set(stack) == {"backdrop", "read", "grade", "matte", "merge"}
    assert all("." not in n.fullName() for n in stack.values())  # at root, not inside the gizmo
    assert not [n for n in node.nodes() if n.Class() not in ("Input", "Output")]
    read, grade, matte, merge = stack["read"], stack["grade"], stack["matte"], stack["merge"]
    assert nuke.filename(read) == f"{tmp_path}/out/edit.%04d.exr"
    assert (read["first"].value(), read["last"].value()) == (1001, 1010)
    assert (read["origfirst"].value(), read["origlast"].value()) == (1001, 1010)
    assert (read.format().width(), read.format().height()) == (64, 48)  # from the file, not the default
    assert "matte.alpha" in read.channels()
    assert read["premultiplied"].value() is True
    assert read["raw"].value() is True  # the plate was raw, so the layer is read raw too
    assert grade.input(0) is read and grade["unpremult"].value() == "rgba.alpha"
    assert matte.input(0) is grade and matte["disable"].value() is True
    assert matte["in2"].value() == "matte" and (0, "matte.alpha", "rgba.alpha") in matte["mappings"].value()
    assert merge["operation"].value() == "over"
    assert merge.input(1) is matte  # A: the edit layer chain
    assert merge.input(0) is plate  # B: the Vera node's Source
    assert "Vera: VeraEdit1" in stack["backdrop"]["label"].value()
    assert "add a red balloon" in stack["backdrop"]["label"].value()
    for role, n in stack.items():
        assert n["vera_role"].value() == role and not n["vera_role"].visible()
    assert node.input(0) is plate and node.dependent() == []  # the Vera node still passes Source through

    press(node, "import_layers")  # a second press updates the same stack
    assert vera_stack(nuke, node) == stack and len(nuke.allNodes("Read")) == 2


def test_import_inside_a_group_builds_the_stack_in_that_group(nuke, tmp_path):
    group = nuke.nodes.Group()
    node, plate = rendered_node(nuke, tmp_path, group=group)
    assert node.fullName() == "Group1.VeraEdit1"

    press(node, "import_layers")

    assert nuke.messages == []
    stack = vera_stack(nuke, node)
    assert {n.fullName() for n in stack.values()} == {f"Group1.{n.name()}" for n in stack.values()}
    assert stack["merge"].input(0) is plate and stack["merge"].input(1) is stack["matte"]
    assert nuke.allNodes() == [group]  # nothing landed at root

    press(node, "import_layers")
    assert vera_stack(nuke, node) == stack


def test_reimport_updates_the_read_and_keeps_the_artists_nodes(nuke, tmp_path):
    node, plate = rendered_node(nuke, tmp_path)
    press(node, "import_layers")
    stack = vera_stack(nuke, node)
    # the artist refines: grades the edit, renames the nodes, inserts a node before the merge
    stack["grade"]["white"].setValue(1.3)
    stack["grade"].setName("balloon_grade")
    stack["read"].setName("balloon_layer")
    extra = nuke.nodes.NoOp()
    extra.setInput(0, stack["matte"])
    stack["merge"].setInput(1, extra)

    # a re-render with another range into another folder
    node["output_dir"].setValue(str(tmp_path / "out_v2"))
    node["first_frame"].setValue(1003)
    node["last_frame"].setValue(1008)
    path = shot.write_spec(shot.build_spec(node))
    write_edit_layers(tmp_path / "out_v2", 1003, 1008)
    actions.record_job(node, {"kind": "farm", "state": "done", "spec": path, "farm": "openjd"})
    press(node, "import_layers")
    again = vera_stack(nuke, node)

    assert len(nuke.allNodes("Read")) == 2 and len(nuke.allNodes("Grade")) == 1  # plate + layer; no duplicates
    assert again["read"] is stack["read"]
    assert nuke.filename(again["read"]) == f"{tmp_path}/out_v2/edit.%04d.exr"
    assert (again["read"]["first"].value(), again["read"]["last"].value()) == (1003, 1008)
    assert again["grade"] is stack["grade"] and again["grade"]["white"].value() == 1.3
    assert again["grade"].name() == "balloon_grade"
    assert stack["merge"].input(1) is extra and stack["merge"].input(0) is plate


def test_a_connection_nuke_refuses_is_reported(nuke, tmp_path):
    """The stack exists at root, but this Vera node (a copy pasted into a group, same id) lives elsewhere:
    its Source cannot be connected to that Merge. The artist is told; nothing is silently unconnected."""
    node, plate = rendered_node(nuke, tmp_path)
    press(node, "import_layers")
    stack = vera_stack(nuke, node)
    stack["merge"].setInput(0, None)
    group = nuke.nodes.Group()
    with group:
        source = nuke.nodes.Read()
        source["file"].fromUserText(f"{tmp_path}/plates/plate.####.exr 1001-1020")
        copy = nuke.nodes.VeraEdit()
    for knob in ("vera_id", "vera_job", "instruction", "output_dir"):
        copy[knob].setValue(node[knob].value())
    copy.setInput(0, source)

    press(copy, "import_layers")

    assert nuke.messages and "connect" in nuke.messages[-1] and "Merge" in nuke.messages[-1]


def test_layer_read_matches_a_non_working_plate_colorspace(nuke, tmp_path):
    knobs = layers.read_knobs("/o/edit.####.exr", 1, 5, "sRGB - Texture", "ACEScg")
    assert knobs["raw"] is False and knobs["colorspace"] == "sRGB - Texture"
    assert layers.read_knobs("/o/edit.####.exr", 1, 5, "ACEScg", "ACEScg")["raw"] is True


def test_import_without_a_render_says_so(nuke, tmp_path):
    read = nuke.nodes.Read(file="/p.####.exr", first=1, last=3)
    node = nuke.nodes.VeraEdit(instruction="x", output_dir=str(tmp_path / "nothing"))
    node.setInput(0, read)
    press(node, "import_layers")
    assert "nothing rendered yet" in nuke.messages[-1]


# ----------------------------------------------------------------- .nk text
def run_nk(text):
    """Interpret the .nk stack language as Nuke does: a node pops its inputs (input 0 = top of the stack)
    and pushes itself; `push $var` pushes a named node. Returns nodes [{class, knobs, inputs}] and the
    placeholder for $cut_paste_input."""
    paste_input = {"class": "<selected node>", "knobs": {}, "inputs": []}
    stack, nodes, variables = [], [], {"cut_paste_input": paste_input}
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        if line.startswith("set cut_paste_input") or line.startswith("version"):
            continue
        if line.startswith("add_layer"):
            nodes.append({"class": "add_layer", "knobs": {"layer": fake_nuke_words(line[len("add_layer"):])},
                          "inputs": []})
            continue
        m = re.match(r"^push \$(\w+)$", line)
        if m:
            stack.append(variables[m.group(1)])
            continue
        m = re.match(r"^(\w+) \{$", line)
        assert m, line
        node = {"class": m.group(1), "knobs": {}, "inputs": []}
        n_inputs = 1
        for body in lines:
            body = body.strip()
            if body == "}":
                break
            key, _, value = body.partition(" ")
            if key == "inputs":
                n_inputs = int(value)
            elif key != "addUserKnob":
                node["knobs"][key] = fake_nuke_words(value)
        node["inputs"] = [stack.pop() for _ in range(n_inputs)]  # input 0 first: the top of the stack
        stack.append(node)
        nodes.append(node)
    return nodes, paste_input


def fake_nuke_words(value):
    import nuke

    words = nuke._tcl_words(value)
    return words[0] if words else ""


def test_copy_as_nk_is_the_same_stack(nuke, tmp_path, qapp):
    node, plate = rendered_node(nuke, tmp_path)
    press(node, "copy_nk")
    text = qapp.clipboard().text()
    assert text.count("{") == text.count("}")

    nodes, paste_input = run_nk(text)
    classes = [n["class"] for n in nodes]
    # Nuke writes add_layer before the first node that uses a custom layer
    assert classes.index("add_layer") < classes.index("Shuffle2")
    assert nodes[classes.index("add_layer")]["knobs"]["layer"] == "matte matte.alpha"
    by_class = {n["class"]: n for n in nodes}
    assert set(by_class) == {"add_layer", "BackdropNode", "Read", "Grade", "Shuffle2", "Merge2"}
    read, grade, matte, merge = (by_class[c] for c in ("Read", "Grade", "Shuffle2", "Merge2"))
    assert read["knobs"]["file"] == f"{tmp_path}/out/edit.%04d.exr"
    assert (read["knobs"]["first"], read["knobs"]["last"]) == ("1001", "1010")
    assert read["knobs"]["format"] == "64 48 0 0 64 48 1"  # the layer's size, so Nuke need not guess
    assert read["knobs"]["premultiplied"] == "true" and read["knobs"]["raw"] == "true"
    assert grade["inputs"] == [read] and matte["inputs"] == [grade]
    # Shuffle2 mapping entries: from-channel, input slot, index *within its layer* (matte.alpha is 0)
    assert "matte.alpha 1 0 rgba.alpha 0 3" in matte["knobs"]["mappings"]
    assert merge["knobs"]["operation"] == "over"
    assert merge["inputs"][0] is paste_input  # B: whatever is selected when pasting (the plate)
    assert merge["inputs"][1] is matte  # A: the edit layer chain
    assert merge["knobs"]["vera_role"] == "merge" and merge["knobs"]["vera_owner"] == node["vera_id"].value()
    assert by_class["BackdropNode"]["knobs"]["label"].startswith("Vera: VeraEdit1\nadd a red balloon")

    # the same nodes and knobs as Import Layers builds through the API
    press(node, "import_layers")
    stack = vera_stack(nuke, node)
    for role, cls in (("read", "Read"), ("grade", "Grade"), ("matte", "Shuffle2"), ("merge", "Merge2")):
        for key, value in by_class[cls]["knobs"].items():
            if key in ("xpos", "ypos", "mappings"):
                continue
            knob = stack[role][key]
            api_value = knob.toScript() if key == "format" else layers.tcl_value(knob.value())
            assert api_value.strip('"') == layers.tcl_value(value).strip('"'), key
