"""The Vera Edit node in real Nuke's terms (issue 17): typed text never runs, a shot folder cannot run code, the
GUI thread never waits, and every knob the plugin sets is one Nuke 17.0v3 has (the fake is held to the scan).

The fake evaluates as Nuke does: String knobs' value() runs their TCL, the node graph evaluates labels when it
draws them, pasting a .nk substitutes quoted words. `nuke.tcl_log` records every TCL command evaluated.
"""

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import fake_nuke
from test_nuke_layers import press, rendered_node, vera_stack
from vera_nuke import actions, engine, jobs, layers, prefs, shot

ROOT = Path(__file__).resolve().parents[2]
# Free text an artist may type: Python and shell through TCL, a variable, braces, a backslash
EVIL = "add a [python {nuke.tcl_log.append(('PWNED', 'python ran'))}] ball [exec touch pwned] $env(HOME) { \\ end"
# the `[` falls at the label's 60-character cut
UNBALANCED = "x" * 57 + "[python {nuke.tcl_log.append(('PWNED', 'cut'))}] more text"


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    return fake_nuke.setup(tmp_path, monkeypatch)


def ran(nuke):
    """TCL commands that would run code (python / exec)."""
    return [c for c in nuke.tcl_log if c[0] in ("python", "exec", "PWNED")]


def settle(nuke):
    """What Nuke does after a click: the workers finish, the main thread runs what they queued."""
    actions.wait_for_workers(timeout=120)
    nuke.pump_main_thread()


@pytest.mark.parametrize("text", [EVIL, UNBALANCED])
def test_a_prompt_is_read_as_typed_and_runs_nothing(nuke, tmp_path, text):
    read = nuke.nodes.Read(file=str(tmp_path / "p.####.exr"), first=1, last=3)
    node = nuke.nodes.VeraEdit(instruction=text, negative_prompt=text, output_dir=str(tmp_path / "o"))
    node.setInput(0, read)
    nuke.tcl_log.clear()
    spec = shot.build_spec(node)
    assert spec["instruction"] == text.strip() and spec["negative_prompt"] == text.strip()
    assert ran(nuke) == []


def test_the_job_record_and_id_are_read_raw(nuke):
    node = nuke.nodes.VeraEdit()
    job = {"id": "abc", "frames": [1001, 1100], "state": "done", "message": "[python {1}]"}
    actions.record_job(node, job)
    nuke.tcl_log.clear()
    assert actions.node_job(node) == job  # JSON `[1001, 1100]` is not evaluated as TCL
    node["vera_id"].setText("[python {nuke.tcl_log.append(('PWNED', 'id'))}]")
    actions.node_id(node)
    assert ran(nuke) == []


def rendered_node_with_instruction(nuke, tmp_path, text):
    """A rendered Vera Edit node (and its plate Read) whose job's spec now holds `text` as its instruction."""
    node, plate = rendered_node(nuke, tmp_path)
    spec_path = Path(json.loads(node["vera_job"].getText())["spec"])
    spec_path.write_text(json.dumps(dict(json.loads(spec_path.read_text()), instruction=text)))
    return node, plate


@pytest.mark.parametrize("text", [EVIL, UNBALANCED])
def test_labels_show_free_text_literally_when_drawn(nuke, tmp_path, text):
    node, _plate = rendered_node_with_instruction(nuke, tmp_path, text)
    press(node, "import_layers")
    nuke.tcl_log.clear()
    drawn = nuke.draw_all()
    assert ran(nuke) == []
    backdrop = vera_stack(nuke, node)["backdrop"]
    assert drawn[backdrop.fullName()] == "Vera: VeraEdit1\n" + text.splitlines()[0][:60]


def test_copy_as_nk_pasted_back_runs_nothing_and_shows_the_text(nuke, tmp_path, qapp):
    node, plate = rendered_node_with_instruction(nuke, tmp_path, EVIL)
    text = actions.copy_as_nk(node)
    (tmp_path / "paste.nk").write_text(text)
    plate.setSelected(True)
    nuke.tcl_log.clear()
    nuke.nodePaste(str(tmp_path / "paste.nk"))
    drawn = nuke.draw_all()
    assert ran(nuke) == []
    backdrop = next(n for n in nuke.allNodes("BackdropNode"))
    assert drawn[backdrop.fullName()] == "Vera: VeraEdit1\n" + EVIL[:60]


def test_knob_truth_import_at_root_in_a_group_and_pasted_back(nuke, tmp_path, qapp):
    """Every node the plugin makes, made through Nuke 17.0v3's knobs (unknown knobs and enumeration values
    raise), and Copy as .nk pasted back gives the same knobs as the API build."""
    node, plate = rendered_node(nuke, tmp_path)
    press(node, "import_layers")
    api = vera_stack(nuke, node)
    assert set(api) == set(layers.ROLES), nuke.messages
    group = nuke.nodes.Group()
    gnode, _gplate = rendered_node(nuke, tmp_path, out="gout", group=group)
    press(gnode, "import_layers")
    assert {n.fullName().rpartition(".")[0] for n in vera_stack(nuke, gnode).values()} == {group.name()}

    (tmp_path / "paste.nk").write_text(actions.copy_as_nk(node))
    with group:  # pasted into another group, so the two stacks can be compared side by side
        before = set(nuke.allNodes())
        nuke.nodePaste(str(tmp_path / "paste.nk"))
        pasted = {n["vera_role"].value(): n for n in set(nuke.allNodes()) - before}
    assert set(pasted) == set(layers.ROLES)
    for role, made in api.items():
        for knob in made.allKnobs():
            if knob.name() in ("xpos", "ypos", "name", "selected", "format"):
                continue
            other = pasted[role].knob(knob.name())
            assert other is not None and other.toScript() == knob.toScript(), (role, knob.name())
    assert pasted["matte"]["mappings"].value() == api["matte"]["mappings"].value() == [
        tuple(m) for m in layers.MATTE_MAPPINGS]

    # the Write-out: a source that is not a Read is written through a Write made with Nuke's knobs
    grade = nuke.nodes.Grade(white=1.0)
    assert grade.setInput(0, plate)
    node.setInput(0, grade)
    shot.build_spec(node)
    assert nuke.executed and nuke.executed[-1]["file"].endswith("plate.%04d.exr")


def test_a_shot_folder_cannot_put_tcl_into_a_read(nuke, tmp_path):
    node, _plate = rendered_node(nuke, tmp_path)
    spec_path = json.loads(node["vera_job"].getText())["spec"]
    for field, value in (("dir", str(tmp_path / "out") + "/[python {nuke.tcl_log.append(('PWNED', 'dir'))}]"),
                         ("name", "edit$env(HOME)"), ("dir", str(tmp_path / "out") + "/a\\b")):
        spec = json.loads(Path(spec_path).read_text())
        spec["output"][field] = value
        Path(spec_path).write_text(json.dumps(spec))
        nuke.messages.clear()
        nuke.tcl_log.clear()
        press(node, "import_layers")
        assert ran(nuke) == [] and not nuke.allNodes("Read")[1:]  # only the plate Read
        assert len(nuke.messages) == 1 and "\n" not in nuke.messages[0] and "refused" in nuke.messages[0]


def test_the_edit_read_is_black_outside_its_range_and_sets_auto_alpha(nuke, tmp_path):
    node, _plate = rendered_node(nuke, tmp_path, first=1003, last=1008)
    press(node, "import_layers")
    read = vera_stack(nuke, node)["read"]
    assert (read["before"].value(), read["after"].value()) == ("black", "black")
    assert read["auto_alpha"].value() is True


def test_a_log_plates_layer_read_uses_the_roots_lut(nuke, tmp_path):
    """Under Nuke's default colour management the Read's colorspace is an enumeration (scan): an OCIO role
    such as compositing_log is not one of its values; the Root's LUT for log files is."""
    node, _plate = rendered_node(nuke, tmp_path)
    spec_path = json.loads(node["vera_job"].getText())["spec"]
    spec = json.loads(Path(spec_path).read_text())
    spec["plate"]["colorspace"] = "compositing_log"
    Path(spec_path).write_text(json.dumps(spec))
    press(node, "import_layers")
    read = vera_stack(nuke, node)["read"]
    assert read["colorspace"].value() == nuke.root()["logLut"].value() == "Cineon" and not read["raw"].value()


def test_a_duplicated_node_gets_a_new_id(nuke, tmp_path):
    node, _plate = rendered_node(nuke, tmp_path)
    original = actions.node_id(node)
    for n in nuke.allNodes():
        n.setSelected(n is node)
    nuke.nodeCopy(str(tmp_path / "copy.nk"))
    copy = nuke.nodePaste(str(tmp_path / "copy.nk"))
    assert copy is not node and copy.Class() == "VeraEdit"
    assert node["vera_id"].getText() == original
    assert copy["vera_id"].getText() not in ("", original) and copy["vera_job"].getText() in ("", "{}")


def test_buttons_never_wait_on_the_main_thread(nuke, tmp_path, monkeypatch):
    """validate / submit run on workers; the result comes back through executeInMainThread."""
    script = tmp_path / "slow_vera_render.py"
    script.write_text("import sys, time, json\ntime.sleep(0.5)\n"
                      "print(json.dumps({'backend': 'openjd', 'files': []})) if sys.argv[1] == 'submit' else None\n")
    monkeypatch.setenv("VERA_RENDER", f"{sys.executable} {script}")
    prefs.save(dict(prefs.load(), launch="no"))
    node, _plate = rendered_node(nuke, tmp_path)
    with nuke.main_thread_guard():
        press(node, "submit_farm")
        press(node, "render_local")
    settle(nuke)
    assert nuke.messages == []
    kinds = sorted(j["kind"] for j in jobs.load())
    assert kinds == ["farm", "local"]
    assert json.loads(node["vera_job"].getText())["kind"] in ("farm", "local")


def test_the_child_environment_has_no_python_variables(nuke, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/nuke/lib/python")
    monkeypatch.setenv("PYTHONHOME", "/nuke")
    seen = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def run(argv, **kwargs):
        seen.append(kwargs.get("env"))
        return real_run([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    engine.validate(str(tmp_path / "shot.json"))
    monkeypatch.setenv("VERA_RENDER", f"{sys.executable} -c pass")
    monkeypatch.setattr(subprocess, "run", real_run)

    class Popen(real_popen):
        def __init__(self, argv, **kwargs):
            seen.append(kwargs.get("env"))
            super().__init__(argv, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Popen)
    engine.LocalRun(str(tmp_path / "shot.json"), str(tmp_path / "run.log")).start().proc.wait(30)
    pid = engine.start_detached_run(str(tmp_path / "shot.json"), str(tmp_path / "run2.log"))
    assert pid
    assert len(seen) == 3
    for env in seen:
        assert env is not None and not [k for k in env if k.startswith("PYTHON")]


def test_init_appends_to_the_plugin_path(nuke, tmp_path):
    studio = tmp_path / "studio"
    studio.mkdir()
    (studio / "VeraEdit.gizmo").write_text((ROOT / "gizmos" / "VeraEdit.gizmo").read_text())
    nuke.plugin_paths.clear()
    nuke.pluginAddPath(str(studio))
    nuke.run_init(ROOT / "init.py")
    assert nuke.pluginPath()[0] == str(studio)  # the studio's gizmo of the same name still wins


def test_tooltips_show_angle_brackets(nuke):
    node = nuke.nodes.VeraEdit()
    for knob in node.allKnobs():
        tip = knob.tooltip() if hasattr(knob, "tooltip") else ""
        assert "<output" not in tip, knob.name()  # rich text: written as &lt;...&gt;
    text = (ROOT / "gizmos" / "VeraEdit.gizmo").read_text()
    assert "<output root>" not in text


def test_shot_json_is_readable_by_other_farm_users(nuke, tmp_path):
    node, _plate = rendered_node(nuke, tmp_path)
    path = json.loads(node["vera_job"].getText())["spec"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask


def test_deeply_nested_json_is_one_line_for_the_artist(nuke, tmp_path):
    deep = "[" * 100000 + "]" * 100000
    Path(os.environ["VERA_JOBS"]).write_text('{"jobs": ' + deep + "}")
    Path(os.environ["VERA_PREFS"]).write_text(deep)
    assert jobs.load() == [] and prefs.load() == prefs.DEFAULTS
    node, _plate = rendered_node(nuke, tmp_path)
    spec_path = json.loads(node["vera_job"].getText())["spec"]
    Path(spec_path).write_text(deep)
    nuke.messages.clear()
    press(node, "import_layers")
    assert len(nuke.messages) == 1 and "\n" not in nuke.messages[0] and spec_path in nuke.messages[0]


def test_vera_monitor_screenshot_without_a_display(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(VERA_JOBS=str(tmp_path / "jobs.json"), VERA_PREFS=str(tmp_path / "prefs.json"))
    proc = subprocess.run([sys.executable, "-m", "vera_nuke.monitor", "--screenshot", str(tmp_path / "m.png")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-300:]
    assert (tmp_path / "m.png").stat().st_size > 0


def test_actions_and_monitor_import_without_a_cycle():
    """monitor imports actions; actions must not import monitor (not even inside a function)."""
    tree = ast.parse((ROOT / "vera_nuke" / "actions.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{n.module}.{a.name}" if n.module else a.name for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in imported if m and m.startswith("vera_nuke.monitor")]
