"""The fake nuke module is strict where Nuke is: tests built on it cannot pass on code Nuke would reject.

Each test pins one documented behaviour of real Nuke (the source is named in tests/fake_nuke/nuke.py).
"""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fake_nuke
from vera.exr import write_exr


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    return fake_nuke.setup(tmp_path, monkeypatch)


def test_unknown_knobs_and_inputs(nuke):
    read = nuke.nodes.Read(file="/p.####.exr")
    with pytest.raises(NameError):
        read["no_such_knob"]
    assert read.knob("no_such_knob") is None
    with pytest.raises(NameError):
        nuke.nodes.Grade(no_such_knob=1)
    assert read.setInput(0, nuke.nodes.Grade()) is False  # a Read has no inputs: refused, not raised
    merge = nuke.nodes.Merge2()
    assert merge.setInput(merge.maximumInputs(), read) is False
    assert merge.setInput(0, read) is True and merge.input(0) is read
    with pytest.raises(ValueError):
        nuke.nodes.Merge2(operation="no_such_operation")
    with pytest.raises(RuntimeError):
        nuke.createNode("NoSuchGizmo")


def test_nodes_names_selection_and_create_node(nuke):
    a = nuke.nodes.Read()
    b = nuke.nodes.Read()
    assert (a.name(), b.name()) == ("Read1", "Read2") and nuke.toNode("Read2") is b
    with pytest.raises(ValueError):
        nuke.selectedNode()
    b.setSelected(True)
    grade = nuke.createNode("Grade")  # the GUI way: connected under the selection, then selected
    assert grade.input(0) is b and nuke.selectedNode() is grade
    nuke.delete(b)
    assert grade.input(0) is None and nuke.allNodes("Read") == [a]


def test_group_context(nuke):
    outside = nuke.nodes.Read()
    group = nuke.nodes.Group()
    with group:
        inside = nuke.nodes.Read()  # created in the current group
        assert nuke.thisGroup() is group and nuke.allNodes() == [inside]
        assert nuke.toNode("Read1") is inside and nuke.toNode("root.Read1") is outside
    assert nuke.thisGroup() is nuke.root()
    assert (outside.fullName(), inside.fullName()) == ("Read1", "Group1.Read1")  # names are per group
    assert nuke.allNodes("Read") == [outside]
    assert nuke.allNodes("Read", recurseGroups=True) == [outside, inside]
    assert nuke.allNodes(group=group) == [inside] and nuke.toNode("Group1.Read1") is inside
    merge = nuke.nodes.Merge2()
    assert merge.setInput(0, inside) is False and merge.input(0) is None  # never across groups
    group.begin()
    assert nuke.nodes.Dot().fullName() == "Group1.Dot1"
    group.end()
    assert nuke.thisGroup() is nuke.root()


def test_a_gizmo_button_runs_inside_the_gizmo(nuke):
    node = nuke.nodes.VeraEdit()
    assert [n.name() for n in node.nodes()] == ["Mask", "Source", "Output1"]  # its internal nodes
    knob = nuke.PyScript_Knob("probe", "probe",
                              "made = nuke.nodes.NoOp()\nnuke.message(made.fullName() + ' ' + nuke.thisNode().name()"
                              " + ' ' + ','.join(n.name() for n in nuke.allNodes()))")
    node.addKnob(knob)
    knob.execute()
    assert nuke.messages[-1] == "VeraEdit1.NoOp1 VeraEdit1 Mask,Source,Output1,NoOp1"
    assert nuke.thisGroup() is nuke.root()  # the context ends with the button


def test_execute_in_main_thread_is_queued(nuke):
    ran = []
    worker = threading.Thread(target=lambda: nuke.executeInMainThread(ran.append, args=("x",)))
    worker.start()
    worker.join()
    assert ran == []  # queued, returns at once
    assert nuke.pump_main_thread() == 1 and ran == ["x"]
    with pytest.raises(RuntimeError):  # from the main thread it would wait for itself
        nuke.executeInMainThreadWithResult(lambda: 1)
    answer = []
    worker = threading.Thread(target=lambda: answer.append(nuke.executeInMainThreadWithResult(lambda a: a + 1, 2)))
    worker.start()
    deadline = time.monotonic() + 60
    while not nuke._main_queue:
        assert time.monotonic() < deadline, "the worker never queued its call"
        time.sleep(0.001)
    nuke.pump_main_thread()
    worker.join()
    assert answer == [3]


def test_progress_task(nuke):
    task = nuke.ProgressTask("x")
    task.setProgress(30)
    task.setMessage("half")
    assert not task.isCancelled()
    task.cancel()
    assert task.isCancelled() and task.progress == [30] and nuke.progress_tasks == [task]


def test_plugin_add_path_and_menus(nuke, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "init.py").write_text("import nuke\nnuke.message('b init')\n")
    nuke.plugin_paths.clear()
    nuke.pluginAddPath(str(a) + "/")
    nuke.pluginAddPath(str(b))
    assert nuke.pluginPath() == [str(b), str(a)]  # prepended, slash stripped
    assert nuke.messages == []  # outside an init.py the folder's init.py is not run
    (tmp_path / "init.py").write_text(f"import nuke\nnuke.pluginAddPath({str(b)!r})\n")
    nuke.run_init(tmp_path / "init.py")
    assert nuke.messages == ["b init"] and nuke.pluginPath() == [str(b), str(a)]  # moved to the start once
    nuke.env["gui"] = False
    assert nuke.menu("Nuke") is None  # Foundry nuke.menu: None when there is no such menu (terminal mode)


def test_file_knob_filename_and_expressions(nuke, tmp_path, monkeypatch):
    read = nuke.nodes.Read(file="$env(SHOTS)/plate.####.exr")
    monkeypatch.setenv("SHOTS", "/jobs/shot010")
    assert read["file"].value() == "$env(SHOTS)/plate.%04d.exr"  # printf notation, nothing expanded
    assert nuke.filename(read) == "/jobs/shot010/plate.%04d.exr"
    assert nuke.filename(read, nuke.REPLACE, frame=1001) == "/jobs/shot010/plate.1001.exr"
    assert read["file"].evaluate(1002) == "/jobs/shot010/plate.1002.exr"
    project = nuke.root()["project_directory"]
    assert project.getText() == "[python {nuke.script_directory()}]"  # raw
    assert project.value() == project.evaluate() == str(tmp_path)  # evaluated (Nuke 12.2+ String_Knob.value)


def test_write_datatype_exists_only_for_exr(nuke):
    with pytest.raises(NameError):
        nuke.nodes.Write(file="/o.####.exr", datatype="16 bit half")
    write = nuke.nodes.Write(file="/o.####.exr", file_type="exr", datatype="16 bit half")  # in that order
    assert write["datatype"].value() == "16 bit half"
    write["file_type"].setValue("png")
    assert write.knob("datatype") is None


def test_read_format_comes_from_the_header_with_from_user_text(nuke, tmp_path):
    ones = np.ones((30, 50), np.float32)
    for f in (1, 2):
        write_exr(tmp_path / f"l.{f:04d}.exr", {"R": ones, "G": ones, "B": ones, "A": ones, "matte.A": ones},
                  (0, 0, 63, 47), data_window=(-5, -3, 44, 26))
    typed = nuke.nodes.Read(file=f"{tmp_path}/l.####.exr")
    assert typed.format().width() == 1920  # setValue reads nothing: the default format
    read = nuke.nodes.Read()
    read["file"].fromUserText(f"{tmp_path}/l.####.exr 1-2")
    assert (read.format().width(), read.format().height()) == (64, 48)
    assert (read["first"].value(), read["last"].value()) == (1, 2)
    assert read.metadata("exr/dataWindow") == [-5, -3, 44, 26]
    assert "matte.alpha" in read.channels() and "rgba.alpha" in read.channels()


def test_custom_layers_must_be_registered(nuke):
    with pytest.raises(ValueError):
        nuke.nodes.Shuffle2(in2="matte")
    nuke.tcl("add_layer {matte matte.alpha}")
    assert nuke.nodes.Shuffle2(in2="matte")["in2"].value() == "matte" and "matte" in nuke.layers()


def test_exr_reader_edge_mode(tmp_path):
    """Nuke's EXR reader: edges repeat past a data window equal to the display window, else black."""
    fake_nuke.install()
    import nuke

    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_exr(tmp_path / "same.exr", {"R": value, "G": value, "B": value, "A": value}, (0, 0, 3, 2))
    write_exr(tmp_path / "box.exr", {"R": value, "G": value, "B": value, "A": value}, (0, 0, 5, 4),
              data_window=(0, 0, 3, 2))
    same = nuke.read_exr_as_nuke(tmp_path / "same.exr", (-1, 0, 4, 2))
    assert same[0, 0, 0] == value[0, 0] and same[0, 5, 0] == value[0, 3]  # edges repeated
    box = nuke.read_exr_as_nuke(tmp_path / "box.exr", (-1, 0, 4, 2))
    assert box[0, 0, 0] == 0 and box[0, 5, 0] == 0 and box[0, 1, 0] == value[0, 0]


def test_string_knobs_evaluate_tcl_and_labels_are_evaluated_when_drawn(nuke, monkeypatch):
    """Nuke 12.2+ String_Knob.value() evaluates; getText() is raw; the DAG evaluates labels; unknown commands
    and unbalanced brackets are TCL errors; backslashes make text literal."""
    monkeypatch.setenv("SHOW", "bigshow")
    dot = nuke.nodes.Dot(label="[python {1 + 2}] $env(SHOW) \\[value name\\]")
    assert dot["label"].getText() == "[python {1 + 2}] $env(SHOW) \\[value name\\]"
    assert nuke.draw(dot) == dot["label"].value() == "3 bigshow [value name]"
    assert ("python", "python {1 + 2}") in nuke.tcl_log
    dot["label"].setValue("[value name]")
    assert nuke.draw(dot) == dot.name()
    for bad in ("[no_such_command]", "a [python {1}", "$env(NO_SUCH_VARIABLE_HERE)"):
        dot["label"].setValue(bad)
        with pytest.raises(RuntimeError):
            nuke.draw(dot)
    with pytest.raises(ValueError):
        nuke.nodes.Read(before="freeze")  # not a value of Read.before in the scan
    with pytest.raises(NameError):
        nuke.nodes.Shuffle2(no_such_knob=1)
    assert nuke.SCAN_SOURCE["repository"] == "kirkjr2/nuke-python-reference" and len(nuke.SCAN_SOURCE["commit"]) == 40


def test_waiting_on_the_main_thread_fails_under_the_guard(nuke):
    with nuke.main_thread_guard():
        time.sleep(0.01)  # short waits are fine
        with pytest.raises(nuke.MainThreadBlocked):
            time.sleep(0.2)
        with pytest.raises(nuke.MainThreadBlocked):
            subprocess.run([sys.executable, "-c", "pass"])
        worker = threading.Thread(target=lambda: time.sleep(0.2))  # a worker may wait
        worker.start()
        worker.join(0.05)
    worker.join()


def test_an_rgb_file_has_alpha_only_with_auto_alpha(tmp_path):
    """Nuke 17.0v3 scan: Read auto_alpha is off by default, so an RGB-only file's alpha is 0 in a Merge over
    (the plate would vanish under the edit); with auto_alpha on it is 1. Vera's Reads set it (layers.py,
    selftest.py)."""
    fake_nuke.install()
    import nuke

    value = np.full((3, 4), 0.5, np.float32)
    write_exr(tmp_path / "rgb.0001.exr", {"R": value, "G": value, "B": value}, (0, 0, 3, 2))
    read = nuke.nodes.Read()
    read["file"].fromUserText(f"{tmp_path}/rgb.####.exr 1-1")
    assert read["auto_alpha"].value() is False or read["auto_alpha"].value() == 0
    write = nuke.nodes.Write(file=str(tmp_path / "off.%04d.exr"), channels="rgba", raw=True)
    write.setInput(0, read)
    nuke.execute(write, 1, 1)
    read["auto_alpha"].setValue(True)
    write["file"].setValue(str(tmp_path / "on.%04d.exr"))
    nuke.execute(write, 1, 1)
    off = nuke.read_exr_as_nuke(tmp_path / "off.0001.exr", (0, 0, 3, 2), auto_alpha=False)
    on = nuke.read_exr_as_nuke(tmp_path / "on.0001.exr", (0, 0, 3, 2), auto_alpha=False)
    assert (off[..., 3] == 0).all() and (on[..., 3] == 1).all()
    assert (off[..., :3] == 0.5).all() and (on[..., :3] == 0.5).all()
