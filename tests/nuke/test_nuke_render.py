"""Render Locally / Submit to Farm from a Vera Edit node: real vera-render processes, fake nuke."""

import json
import os
import subprocess
import sys
import time

import pytest

import fake_nuke
from bundles import random_bundle, write_plate
from vera_nuke import actions, engine, jobs, prefs

@pytest.fixture
def nuke(tmp_path, monkeypatch, engine_on_path):
    return fake_nuke.setup(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return str(random_bundle(tmp_path_factory.mktemp("bundle") / "bundle"))


def plate_node(nuke, tmp_path, first=1001, last=1005):
    pattern = write_plate(tmp_path / "plate", first, last, 64, 48)
    nuke.use_ocio_config(["ACEScg"])  # an ACES show: Read colour spaces are the config's
    read = nuke.nodes.Read(file=pattern, first=first, last=last, colorspace="default (ACEScg)")
    node = nuke.nodes.VeraEdit(instruction="add a red ball", output_dir=str(tmp_path / "out"))
    node.setInput(0, read)
    return node


def test_progress_lines_of_vera_progress_parse():
    """The lines vera.progress prints in `log` mode, from a real process, parse to the right numbers."""
    code = ("from vera.progress import Progress\n"
            "with Progress(12, 'shot010 window 0', mode='log') as p:\n"
            "    for i in range(12): p.advance(1, f'step {i + 1}/12')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    parsed = [engine.parse_progress(line) for line in err.splitlines()]
    assert [p.percent for p in parsed] == [100 * i // 12 for i in range(1, 13)]
    assert parsed[2] == engine.ProgressLine("shot010 window 0", 3, 12, 25, "step 3/12")
    # the farm dialects and noise
    assert engine.parse_progress("openjd_progress: 42").percent == 42
    assert engine.parse_progress("Progress: 7%").percent == 7
    assert engine.parse_progress("x: 3/0 (250%) odd").percent == 100  # clamped
    assert engine.parse_progress("vera-render: error: plate.1001.exr: missing") is None
    assert engine.parse_progress("loaded 3/4 of the weights") is None


@pytest.mark.slow
def click(nuke, node, button):
    """The artist's click: it may not wait on Nuke's main thread; the work it started then finishes."""
    with nuke.main_thread_guard():
        node[button].execute()
    actions.wait_for_workers(timeout=120)


@pytest.mark.slow
def test_render_locally_drives_a_progress_task_from_vera_render(nuke, tmp_path, bundle_dir):
    """Render Locally on a small random model: the ProgressTask follows the real run to 100%."""
    node = plate_node(nuke, tmp_path)
    node["model_bundle"].setValue(bundle_dir)
    node["device"].setValue("cpu")
    node["window_overlap"].setValue(2)

    click(nuke, node, "render_local")
    run = actions.last_run(node)
    assert run is not None, nuke.messages
    assert node["vera_job"].getText() == ""  # the main thread has not run yet: nothing recorded on the node
    assert run.wait(timeout=240) == "done", run.last_error
    assert nuke.pump_main_thread() == 2  # Nuke's event loop runs the queued updates: running, then done

    task = nuke.progress_tasks[-1]
    assert task.name == f"Vera: {node.name()}"
    assert len(task.progress) >= 5 and task.progress[-1] == 100
    assert task.progress == sorted(task.progress) and task.progress[0] < 50  # one bar for the whole run
    assert any("window 0" in m for m in task.messages) and any("assemble" in m for m in task.messages)
    recorded = json.loads(node["vera_job"].getText())  # written through executeInMainThread
    assert recorded["state"] == "done" and recorded["returncode"] == 0
    assert "_finish" in nuke.main_thread_calls
    assert node["status"].value().startswith("done (local)")
    assert jobs.get(recorded["id"])["state"] == "done"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("edit.*.exr")) == [f"edit.{f}.exr" for f in range(1001, 1006)]
    assert engine.status(str(out))["complete"] is True

    node["import_layers"].execute()
    read = next(n for n in nuke.allNodes("Read") if n.knob("vera_role") is not None)
    frames = range(read["first"].value(), read["last"].value() + 1)
    assert all(os.path.isfile(read["file"].evaluate(f)) for f in frames)


SLOW_RENDER = """
import sys, time
from vera.progress import Progress
print('pid', flush=True)
with Progress(50, 'slow window 0', mode='log') as p:
    for i in range(50):
        p.advance(1, 'step')
        time.sleep(0.2)
"""


def test_cancel_stops_the_local_run(nuke, tmp_path, monkeypatch):
    """Cancel in the ProgressTask terminates the process (a real one printing the documented lines)."""
    script = tmp_path / "slow_render.py"
    script.write_text(SLOW_RENDER)
    node = plate_node(nuke, tmp_path)
    monkeypatch.setattr(engine, "validate", lambda spec: [])  # this stand-in engine has no validate
    monkeypatch.setenv("VERA_RENDER", f"{sys.executable} {script}")

    click(nuke, node, "render_local")
    run = actions.last_run(node)
    deadline = time.time() + 30
    while time.time() < deadline and not (nuke.progress_tasks and nuke.progress_tasks[-1].progress):
        time.sleep(0.05)
    task = nuke.progress_tasks[-1]
    assert task.progress and task.progress[0] == 1  # 1/50 of window 0, the first of two stages
    task.cancel()
    assert run.wait(timeout=30) == "cancelled"
    assert run.run.proc.returncode != 0 and not engine.pid_alive(run.run.pid)
    assert task.progress[-1] < 100
    nuke.pump_main_thread()
    assert json.loads(node["vera_job"].getText())["state"] == "cancelled"
    assert "slow window 0: 1/50 (2%) step" in (tmp_path / "out" / actions.RUN_LOG).read_text()

    # the monitor's Cancel (another thread) stops this session's run the same way
    click(nuke, node, "render_local")
    again = actions.last_run(node)
    deadline = time.time() + 30
    while time.time() < deadline and not (len(nuke.progress_tasks) == 2 and nuke.progress_tasks[-1].progress):
        time.sleep(0.05)
    assert actions.cancel_job(jobs.get(again.job["id"])) is True
    assert again.wait(timeout=30) == "cancelled" and jobs.get(again.job["id"])["state"] == "cancelled"


def test_a_failing_run_is_reported(nuke, tmp_path, monkeypatch):
    script = tmp_path / "failing.py"
    script.write_text("import sys\nprint('vera-render: error: plate.1003.exr (frame 1003): truncated', "
                      "file=sys.stderr)\nsys.exit(2)\n")
    node = plate_node(nuke, tmp_path)
    monkeypatch.setattr(engine, "validate", lambda spec: [])
    monkeypatch.setenv("VERA_RENDER", f"{sys.executable} {script}")
    click(nuke, node, "render_local")
    run = actions.last_run(node)
    assert run.wait(timeout=30) == "failed"
    nuke.pump_main_thread()
    error = "vera-render: error: plate.1003.exr (frame 1003): truncated"
    assert nuke.messages[-1] == f"Vera: {node.name()} failed: {error}"


def test_the_job_is_recorded_before_its_process_starts(nuke, tmp_path, monkeypatch):
    script = tmp_path / "quick.py"
    script.write_text("import sys\nsys.exit(0)\n")
    node = plate_node(nuke, tmp_path)
    monkeypatch.setattr(engine, "validate", lambda spec: [])
    monkeypatch.setenv("VERA_RENDER", f"{sys.executable} {script}")
    seen = []
    real_add = jobs.add

    def add(job):
        seen.append((job["state"], job.get("pid")))
        return real_add(job)

    monkeypatch.setattr(jobs, "add", add)
    click(nuke, node, "render_local")
    run = actions.last_run(node)
    assert run.wait(timeout=30) == "done"
    assert seen[0] == ("queued", None)  # in the registry before any process exists
    assert jobs.get(run.job["id"])["pid"] == run.run.pid


def test_a_run_whose_job_cannot_be_recorded_is_stopped(nuke, tmp_path, monkeypatch):
    script = tmp_path / "slow_render.py"
    script.write_text(SLOW_RENDER)
    node = plate_node(nuke, tmp_path)
    monkeypatch.setattr(engine, "validate", lambda spec: [])
    monkeypatch.setenv("VERA_RENDER", f"{sys.executable} {script}")
    started = []
    real_start = engine.LocalRun.start

    def start(self):
        started.append(self)
        return real_start(self)

    def broken_update(job_id, **changes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.LocalRun, "start", start)
    monkeypatch.setattr(jobs, "update", broken_update)
    click(nuke, node, "render_local")
    assert actions.last_run(node) is None
    nuke.pump_main_thread()  # the worker's message reaches the artist through the main thread
    assert "No space left on device" in nuke.messages[-1]
    proc = started[0].proc
    assert proc.wait(timeout=10) is not None and not engine.pid_alive(proc.pid)  # not left running unrecorded


def test_submit_to_farm_records_the_job(nuke, tmp_path, bundle_dir):
    prefs.save(dict(prefs.load(), farm="openjd", launch="no"))  # no farm here: write the job files only
    node = plate_node(nuke, tmp_path)
    node["model_bundle"].setValue(bundle_dir)
    node["window_overlap"].setValue(2)

    click(nuke, node, "submit_farm")
    nuke.pump_main_thread()
    job = json.loads(node["vera_job"].getText())

    assert job is not None, nuke.messages
    assert job["kind"] == "farm" and job["farm"] == "openjd" and job["state"] == "submitted"
    assert job["farm_job"]["backend"] == "openjd"
    assert all(os.path.isfile(f) for f in job["farm_job"]["files"])
    assert json.loads(node["vera_job"].getText())["id"] == job["id"]
    assert [j["id"] for j in jobs.load(str(tmp_path / "shot010_comp_v001.nk"))] == [job["id"]]
    node["farm"].setValue("deadline")
    click(nuke, node, "submit_farm")
    nuke.pump_main_thread()
    assert json.loads(node["vera_job"].getText())["farm"] == "deadline"


def test_pid_alive_peeks_without_stealing_the_exit_code():
    """The monitor asks whether a local run lives; that must not reap it before its runner reads the code."""
    finished = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    deadline = time.time() + 10
    while engine.pid_alive(finished.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not engine.pid_alive(finished.pid)
    assert finished.wait(timeout=5) == 3
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert engine.pid_alive(running.pid)
    finally:
        running.kill()
        running.wait()
