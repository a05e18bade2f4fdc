"""Import Layers / Copy as .nk: the Merge-over stack the Vera Edit node builds (fake nuke)."""

import re

import pytest

import fake_nuke
from vera_nuke import actions, layers, shot


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    return fake_nuke.setup(tmp_path, monkeypatch)


def rendered_node(nuke, tmp_path, first=1001, last=1010, out="out"):
    """A Vera node whose shot spec was written (what Render Locally / Submit leave behind)."""
    read = nuke.nodes.Read(file=f"{tmp_path}/plate.####.exr", first=1001, last=1020, raw=True)
    read.setXYpos(0, 0)
    node = nuke.nodes.VeraEdit(instruction="add a red balloon\nfloating left to right")
    node.setInput(0, read)
    node.setXYpos(0, 100)
    node["output_dir"].setValue(str(tmp_path / out))
    node["limit_range"].setValue(True)
    node["first_frame"].setValue(first)
    node["last_frame"].setValue(last)
    path = shot.write_spec(shot.build_spec(node))
    actions.record_job(node, {"kind": "local", "state": "done", "spec": path})
    return node, read


def test_import_builds_the_merge_over_stack(nuke, tmp_path):
    node, plate = rendered_node(nuke, tmp_path)
    before = set(nuke.allNodes())

    stack = actions.import_layers(node)

    made = set(nuke.allNodes()) - before
    assert {n.Class() for n in made} == {"BackdropNode", "Read", "Grade", "Shuffle2", "Merge2"}
    read, grade, matte, merge = stack["read"], stack["grade"], stack["matte"], stack["merge"]
    assert read["file"].value() == f"{tmp_path}/out/edit.####.exr"
    assert (read["first"].value(), read["last"].value()) == (1001, 1010)
    assert (read["origfirst"].value(), read["origlast"].value()) == (1001, 1010)
    assert read["premultiplied"].value() is True
    assert read["raw"].value() is True  # the plate was raw, so the layer is read raw too
    assert grade.input(0) is read and grade["unpremult"].value() == "rgba.alpha"
    assert matte.input(0) is grade and matte["disable"].value() is True
    assert (0, "matte.alpha", "rgba.alpha") in matte["mappings"].value()
    assert merge["operation"].value() == "over"
    assert merge.input(1) is matte  # A: the edit layer chain
    assert merge.input(0) is plate  # B: the Vera node's Source
    assert "Vera: VeraEdit1" in stack["backdrop"]["label"].value()
    assert "add a red balloon" in stack["backdrop"]["label"].value()
    for role, n in stack.items():
        assert n["vera_role"].value() == role and n["vera_owner"].value() == node["vera_id"].value()
        assert not n["vera_role"].visible()
    assert node.input(0) is plate and node.dependent() == []  # the Vera node still passes Source through


def test_reimport_updates_the_read_and_keeps_the_artists_nodes(nuke, tmp_path):
    node, plate = rendered_node(nuke, tmp_path)
    stack = actions.import_layers(node)
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
    actions.record_job(node, {"kind": "farm", "state": "done", "spec": path, "farm": "openjd"})
    again = actions.import_layers(node)

    assert len(nuke.allNodes("Read")) == 2 and len(nuke.allNodes("Grade")) == 1  # plate + layer; no duplicates
    assert again["read"] is stack["read"]
    assert again["read"]["file"].value() == f"{tmp_path}/out_v2/edit.####.exr"
    assert (again["read"]["first"].value(), again["read"]["last"].value()) == (1003, 1008)
    assert again["grade"] is stack["grade"] and again["grade"]["white"].value() == 1.3
    assert again["grade"].name() == "balloon_grade"
    assert stack["merge"].input(1) is extra and stack["merge"].input(0) is plate


def test_layer_read_matches_a_non_working_plate_colorspace(nuke, tmp_path):
    knobs = layers.read_knobs("/o/edit.####.exr", 1, 5, "sRGB - Texture", "ACEScg")
    assert knobs["raw"] is False and knobs["colorspace"] == "sRGB - Texture"
    assert layers.read_knobs("/o/edit.####.exr", 1, 5, "ACEScg", "ACEScg")["raw"] is True


def test_import_without_a_render_says_so(nuke, tmp_path):
    read = nuke.nodes.Read(file="/p.####.exr", first=1, last=3)
    node = nuke.nodes.VeraEdit(instruction="x", output_dir=str(tmp_path / "nothing"))
    node.setInput(0, read)
    assert actions.import_layers(node) is None
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
    text = actions.copy_as_nk(node)
    assert qapp.clipboard().text() == text
    assert text.count("{") == text.count("}")

    nodes, paste_input = run_nk(text)
    by_class = {n["class"]: n for n in nodes}
    assert set(by_class) == {"BackdropNode", "Read", "Grade", "Shuffle2", "Merge2"}
    read, grade, matte, merge = (by_class[c] for c in ("Read", "Grade", "Shuffle2", "Merge2"))
    assert read["knobs"]["file"] == f"{tmp_path}/out/edit.####.exr"
    assert (read["knobs"]["first"], read["knobs"]["last"]) == ("1001", "1010")
    assert read["knobs"]["premultiplied"] == "true" and read["knobs"]["raw"] == "true"
    assert grade["inputs"] == [read] and matte["inputs"] == [grade]
    assert merge["knobs"]["operation"] == "over"
    assert merge["inputs"][0] is paste_input  # B: whatever is selected when pasting (the plate)
    assert merge["inputs"][1] is matte  # A: the edit layer chain
    assert merge["knobs"]["vera_role"] == "merge" and merge["knobs"]["vera_owner"] == node["vera_id"].value()
    assert by_class["BackdropNode"]["knobs"]["label"].startswith("Vera: VeraEdit1\nadd a red balloon")

    # the same nodes and knobs as Import Layers builds through the API
    stack = actions.import_layers(node)
    for role, cls in (("read", "Read"), ("grade", "Grade"), ("matte", "Shuffle2"), ("merge", "Merge2")):
        for key, value in by_class[cls]["knobs"].items():
            if key in ("xpos", "ypos", "mappings"):
                continue
            api_value = layers.tcl_value(stack[role][key].value()).strip('"')
            assert api_value == layers.tcl_value(value).strip('"'), key
