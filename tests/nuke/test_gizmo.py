"""gizmos/VeraEdit.gizmo parses, uses only known knob types, and every button calls a real function."""

import ast
import re
from pathlib import Path

import pytest

import fake_nuke
import vera_nuke.actions

GIZMO = Path(__file__).resolve().parents[2] / "gizmos" / "VeraEdit.gizmo"
# addUserKnob type ids: REFERENCE.md's list, plus 43 (Multiline_Eval_String_Knob) for the instruction.
KNOWN_KNOB_TYPES = {1: "String", 2: "File", 3: "Int", 4: "Enumeration", 6: "Bool", 7: "Double", 20: "Tab",
                    22: "PyScript", 26: "Text", 41: "Link", 43: "Multiline_Eval_String"}


def strip_quoted(text):
    """The gizmo without its quoted strings (braces inside quotes do not nest)."""
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def user_knobs():
    import nuke

    _inputs, knobs, values = nuke.parse_gizmo(GIZMO.read_text())
    return knobs, values


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    return fake_nuke.setup(tmp_path, monkeypatch)


def test_braces_balance_and_the_group_closes(nuke):
    depth = 0
    for ch in strip_quoted(GIZMO.read_text()):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    lines = [ln.strip() for ln in GIZMO.read_text().splitlines() if ln.strip()]
    assert lines[-1] == "end_group" and any(ln.startswith("Gizmo {") for ln in lines)


def test_knob_types_are_known_and_names_unique(nuke):
    knobs, _values = user_knobs()
    assert {type_id for type_id, *_ in knobs} <= set(KNOWN_KNOB_TYPES)
    names = [name for _type, name, *_ in knobs if name]
    assert len(names) == len(set(names))
    by_name = {name: type_id for type_id, name, *_ in knobs}
    assert by_name["instruction"] == 43 and by_name["task"] == 4 and by_name["output_dir"] == 2
    assert by_name["vera_job"] == 1


def test_every_button_calls_a_real_vera_nuke_function(nuke):
    knobs, _values = user_knobs()
    buttons = {name: (label, command) for type_id, name, label, command, _enum, _flags in knobs if type_id == 22}
    assert {label for label, _ in buttons.values()} == {"Render Locally", "Submit to Farm", "Import Layers",
                                                        "Copy as .nk", "Open Monitor"}
    for name, (_label, command) in buttons.items():
        tree = ast.parse(command)  # valid Python
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
        targets = [ast.unparse(c.func) for c in calls if ast.unparse(c.func).startswith("vera_nuke.")]
        assert len(targets) == 1, command
        module, _, function = targets[0].rpartition(".")
        assert module == "vera_nuke.actions" and callable(getattr(vera_nuke.actions, function)), targets[0]


def test_the_knobs_the_code_reads_exist_in_the_gizmo(nuke):
    knobs, _values = user_knobs()
    names = {name for _type, name, *_ in knobs}
    used = set()
    for name in ("actions.py", "shot.py"):  # the modules that read the Vera node's knobs
        used |= set(re.findall(r'node\["(\w+)"\]', (Path(vera_nuke.actions.__file__).parent / name).read_text()))
    assert used and used <= names, used - names


def test_nuke_loads_it_with_two_inputs_and_defaults(nuke):
    node = nuke.createNode("VeraEdit")
    assert node.Class() == "VeraEdit" and node.maximumInputs() == 2
    assert node["task"].values() == ["object_addition", "background_change"]
    assert node["model_bundle"].value() == "demo" and node["window_overlap"].value() == 8
    assert node["vera_job"].getFlag(nuke.INVISIBLE) and node["vera_id"].getFlag(nuke.INVISIBLE)
    text = GIZMO.read_text()
    # Input 0 is Source (the one a disabled node passes through), input 1 the optional Mask
    assert re.search(r"Input \{[^}]*name Mask[^}]*number 1", text)
    source_at = text.index("name Source")
    assert text.index("name Mask") < source_at < text.index("Output {")  # Output takes Source: pass-through


def test_pressing_a_button_runs_the_action(nuke):
    node = nuke.createNode("VeraEdit")
    node["render_local"].execute()  # nothing connected: a message, not a traceback
    assert nuke.messages == [f"{node.name()}: connect a plate to the Source input"]
    node["import_layers"].execute()
    assert "connect the Source input" in nuke.messages[-1]
