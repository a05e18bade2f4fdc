"""The fake nuke module is strict where Nuke is: tests built on it cannot pass on code Nuke would reject."""

import pytest

import fake_nuke


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    return fake_nuke.setup(tmp_path, monkeypatch)


def test_unknown_knobs_and_inputs_raise(nuke):
    read = nuke.nodes.Read(file="/p.####.exr")
    with pytest.raises(NameError):
        read["no_such_knob"]
    assert read.knob("no_such_knob") is None
    with pytest.raises(NameError):
        nuke.nodes.Grade(no_such_knob=1)
    with pytest.raises(ValueError):
        read.setInput(0, nuke.nodes.Grade())  # a Read has no inputs
    merge = nuke.nodes.Merge2()
    with pytest.raises(ValueError):
        merge.setInput(merge.maximumInputs(), read)
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


def test_progress_task_and_main_thread(nuke):
    task = nuke.ProgressTask("x")
    task.setProgress(30)
    task.setMessage("half")
    assert not task.isCancelled()
    task.cancel()
    assert task.isCancelled() and task.progress == [30] and nuke.progress_tasks == [task]
    assert nuke.executeInMainThreadWithResult(lambda a, b=0: a + b, args=(2,), kwargs={"b": 3}) == 5
