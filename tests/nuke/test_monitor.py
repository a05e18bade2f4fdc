"""The monitor panel, offscreen with pytest-qt: rows from job registries and manifests, and its actions."""

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import monitor_demo
import vera.render as render
from bundles import FIRST, LAST, FakeRenderer, base_spec, write_plates, write_spec
from vera.cli import main as render_main
from vera.status import status
from vera_nuke import engine, jobs, monitor
from vera_nuke.monitor import MonitorPanel
from vera_nuke.qt import QtCore, QtGui

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path, monkeypatch, engine_on_path):
    monkeypatch.setenv("VERA_PREFS", str(tmp_path / "prefs.json"))
    built = monitor_demo.build(tmp_path)
    monkeypatch.setenv("VERA_JOBS", built["jobs_file"])
    yield built
    built["sleeper"].kill()
    built["sleeper"].wait()


@pytest.fixture
def panel(qtbot, demo):
    widget = MonitorPanel(script=demo["script"], status_fn=lambda out_dir: None, background=False,
                          auto_refresh=False)
    qtbot.addWidget(widget)
    return widget


def cell(panel, row, name):
    return panel.table.item(row, monitor.COLUMNS.index(name)).text()


def test_rows_come_from_the_registry_and_manifests(panel, demo):
    assert panel.table.rowCount() == 4
    rows = {cell(panel, r, "Node"): r for r in range(4)}
    states = {node: cell(panel, r, "State") for node, r in rows.items()}
    assert states == {"VeraEdit1": "running", "VeraEdit2": "running", "VeraEdit3": "done", "VeraEdit4": "failed"}
    bars = {node: panel.table.cellWidget(r, monitor.PROGRESS_COLUMN).value() for node, r in rows.items()}
    # local: 1 of 2 windows done + 58% of window 1, over 3 stages; farm: 12 of 48 frames in the manifest
    assert bars == {"VeraEdit1": int(100 * 1.58 / 3), "VeraEdit2": 25, "VeraEdit3": 100, "VeraEdit4": 0}
    assert cell(panel, rows["VeraEdit2"], "Frames") == "12/48"
    assert cell(panel, rows["VeraEdit1"], "Note") == "window 1: 58% step 5/8"
    assert cell(panel, rows["VeraEdit2"], "Note") == "windows 1/3 done, 1 running"
    assert "truncated" in cell(panel, rows["VeraEdit4"], "Note")
    assert cell(panel, rows["VeraEdit3"], "Instruction") == "replace the sky with a golden sunset"
    # a thumbnail of the latest layer over its plate where frames exist, none where nothing rendered
    icons = {node: panel.table.item(r, 0).icon() for node, r in rows.items()}
    assert not icons["VeraEdit2"].isNull() and icons["VeraEdit4"].isNull()
    out_dir = Path(demo["jobs_file"]).parent / "vera_renders" / "shot010_comp_v003" / "VeraEdit2"
    thumb = out_dir / ".vera_nuke" / "thumbs" / "thumb.001012.png"
    image = QtGui.QImage(str(thumb))
    assert not image.isNull() and image.width() == 2 * monitor.THUMB_W
    # over the plate: the plate's pixels show where the layer's alpha is 0 (not black)
    assert QtGui.QColor(image.pixel(2, 2)).value() > 20


def test_other_scripts_jobs_are_not_listed(qtbot, demo):
    widget = MonitorPanel(script="/another/script.nk", status_fn=lambda d: None, background=False,
                          auto_refresh=False)
    qtbot.addWidget(widget)
    assert widget.table.rowCount() == 0
    everything = MonitorPanel(script="", status_fn=lambda d: None, background=False, auto_refresh=False)
    qtbot.addWidget(everything)
    assert everything.table.rowCount() == 4


def test_state_from_vera_render_status(qtbot, demo):
    """With the real `vera-render status --json`, its frame counts drive the row."""
    queried = []

    def status(out_dir):
        queried.append(out_dir)
        return engine.status(out_dir)

    widget = MonitorPanel(script=demo["script"], status_fn=status, background=False, auto_refresh=False)
    qtbot.addWidget(widget)
    assert len(queried) == 4
    report = engine.status(queried[2])  # VeraEdit3: every frame on disk and done in the manifest
    assert report["complete"] is True and report["frames"]["done_count"] == 10
    rows = {cell(widget, r, "Node"): r for r in range(4)}
    assert cell(widget, rows["VeraEdit2"], "Frames") == "12/48"
    assert widget.table.cellWidget(rows["VeraEdit2"], monitor.PROGRESS_COLUMN).value() == 25
    widget.refresh()
    assert len(queried) == 4 + 2  # finished jobs (done, failed) are not asked again


def test_thumbnails_are_made_off_the_ui_thread(qtbot, demo, monkeypatch):
    """oiiotool (a subprocess) never runs on the UI thread: the panel stays responsive."""
    threads = []
    real = monitor.thumbnail_for

    def thumbnail_for(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor, "thumbnail_for", thumbnail_for)
    widget = MonitorPanel(script=demo["script"], status_fn=lambda out_dir: None, background=True,
                          auto_refresh=False)
    qtbot.addWidget(widget)
    rows = {cell(widget, r, "Node"): r for r in range(4)}
    qtbot.waitUntil(lambda: not widget.table.item(rows["VeraEdit2"], 0).icon().isNull(), timeout=60_000)
    assert threads and threading.main_thread() not in threads


def test_open_folder_and_import_outside_nuke(panel, qtbot, qapp, monkeypatch, demo):
    opened = []
    monkeypatch.setattr(QtGui.QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    panel.select_job("job3")
    qtbot.mouseClick(panel.buttons["open"], QtCore.Qt.MouseButton.LeftButton)
    assert opened == [panel.selected_job()["out_dir"]]

    qtbot.mouseClick(panel.buttons["import"], QtCore.Qt.MouseButton.LeftButton)
    text = qapp.clipboard().text()
    assert "Merge2 {" in text and f"{panel.selected_job()['out_dir']}/edit.%04d.exr" in text
    assert "copied" in panel.message.text()


def test_cancel_stops_a_local_run(panel, qtbot, demo):
    panel.select_job("job2")
    assert not panel.buttons["cancel"].isEnabled()  # a farm job: not ours to kill
    panel.select_job("job1")
    assert panel.buttons["cancel"].isEnabled()
    qtbot.mouseClick(panel.buttons["cancel"], QtCore.Qt.MouseButton.LeftButton)
    assert demo["sleeper"].wait(timeout=10) == -15  # SIGTERM
    assert jobs.get("job1")["state"] == "cancelled"
    rows = {cell(panel, r, "Node"): r for r in range(4)}
    assert cell(panel, rows["VeraEdit1"], "State") == "cancelled"


def test_resubmit_farm_and_local(panel, qtbot, monkeypatch, demo):
    calls = []
    monkeypatch.setattr(engine, "submit", lambda spec, farm, job_dir, launch=True: calls.append(
        ("submit", spec, farm, job_dir)) or {"backend": farm, "files": []})
    monkeypatch.setattr(engine, "start_detached_run", lambda spec, log: calls.append(("run", spec, log)) or 4242)
    panel.select_job("job2")
    qtbot.mouseClick(panel.buttons["resubmit"], QtCore.Qt.MouseButton.LeftButton)
    old = jobs.get("job2")
    assert calls[-1] == ("submit", old["spec"], "openjd", old["job_dir"])
    panel.select_job("job4")
    qtbot.mouseClick(panel.buttons["resubmit"], QtCore.Qt.MouseButton.LeftButton)
    assert calls[-1] == ("run", jobs.get("job4")["spec"], jobs.get("job4")["log"])
    added = [j for j in jobs.load() if j["id"] not in demo["ids"]]
    assert sorted((j["kind"], j["node"]) for j in added) == [("farm", "VeraEdit2"), ("local", "VeraEdit4")]
    assert next(j for j in added if j["kind"] == "local")["pid"] == 4242
    assert panel.table.rowCount() == 6


def test_vera_monitor_screenshot_cli(tmp_path, demo):
    png = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "vera-monitor"), "--jobs",
                           demo["jobs_file"], "--script", demo["script"], "--screenshot", str(png)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    image = QtGui.QImage(str(png))
    assert image.width() >= 600 and image.height() >= 200
    # not blank: the table's text, bars and thumbnails make many distinct colours, some of them saturated
    step = 4
    colours = {image.pixel(x, y) for x in range(0, image.width(), step) for y in range(0, image.height(), step)}
    assert len(colours) > 50, len(colours)
    assert max(QtGui.QColor(c).saturation() for c in colours) > 100  # a thumbnail's red ball or a coloured bar


def test_rows_from_a_manifest_written_by_vera_render_run(qtbot, tmp_path, monkeypatch, engine_on_path,
                                                        tiny_bundle):
    """The monitor reads what `vera-render run` really writes (not a hand-made manifest): window 0 of 2 done,
    then the rest and assemble."""
    monkeypatch.setenv("VERA_PREFS", str(tmp_path / "prefs.json"))
    monkeypatch.setenv("VERA_JOBS", str(tmp_path / "jobs.json"))
    monkeypatch.setattr(render, "_render_frames", FakeRenderer())
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    assert render_main(["run", str(spec), "--window", "0", "--progress", "none"]) == 0
    out = tmp_path / "out"
    jobs.add(jobs.new_job(kind="farm", farm="openjd", node="VeraEdit1", node_id="r1", spec=str(spec),
                          out_dir=str(out), state="submitted", frames=[FIRST, LAST], name="sh010",
                          script="/shows/x/comp.nk", instruction="add a red ball"))
    widget = MonitorPanel(script="/shows/x/comp.nk", status_fn=engine.status, background=False,
                          auto_refresh=False)
    qtbot.addWidget(widget)
    assert widget.table.rowCount() == 1
    total = LAST - FIRST + 1
    # window 0's frames sit in its cache until assemble: no final frame yet, one window of two done
    assert cell(widget, 0, "Frames") == f"0/{total}" and cell(widget, 0, "State") == "submitted"
    assert cell(widget, 0, "Note") == "windows 1/2 done"

    assert render_main(["run", str(spec), "--progress", "none"]) == 0
    widget.refresh()
    assert cell(widget, 0, "Frames") == f"{total}/{total}" and cell(widget, 0, "State") == "done"
    assert widget.table.cellWidget(0, monitor.PROGRESS_COLUMN).value() == 100


def test_docs_show_the_screenshot():
    doc = (ROOT / "docs" / "nuke.md").read_text()
    assert "images/monitor.png" in doc and (ROOT / "docs" / "images" / "monitor.png").stat().st_size > 10_000
    assert "NUKE_PATH" in doc


def test_resubmit_runs_on_a_worker_and_reports_on_the_ui_thread(qtbot, monkeypatch, demo):
    widget = MonitorPanel(script=demo["script"], status_fn=lambda out_dir: None, background=True,
                          auto_refresh=False)
    qtbot.addWidget(widget)
    threads = []
    monkeypatch.setattr(engine, "submit", lambda spec, farm, job_dir, launch=True: threads.append(
        threading.current_thread()) or {"backend": farm, "files": []})
    widget.select_job("job2")
    qtbot.mouseClick(widget.buttons["resubmit"], QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.message.text().startswith("resubmitted as job"), timeout=10000)
    assert threads and threads[0] is not threading.main_thread()  # vera-render submit never on the UI thread


def test_a_closed_panels_relay_is_not_deleted_on_the_worker_thread(qtbot, demo):
    """The panel is closed while its status query runs: the worker's relay must not die on the worker thread
    (a QObject deleted on a thread not its own breaks Qt)."""
    release, started = threading.Event(), threading.Event()

    def slow_status(out_dir):
        started.set()
        release.wait(10)
        return None

    widget = MonitorPanel(script=demo["script"], status_fn=slow_status, background=True, auto_refresh=False)
    assert started.wait(10)
    destroyed_in = []
    widget._relay.destroyed.connect(lambda *_: destroyed_in.append(threading.current_thread()),
                                    QtCore.Qt.ConnectionType.DirectConnection)
    workers = [t for t in threading.enumerate() if t.name == "vera-monitor-status"]
    widget.deleteLater()
    qtbot.wait(50)
    del widget
    gc.collect()
    release.set()
    for t in workers:
        t.join(10)
    gc.collect()
    assert all(t is threading.main_thread() for t in destroyed_in), destroyed_in
