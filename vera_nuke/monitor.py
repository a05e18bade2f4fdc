"""The Vera monitor: the jobs started from Nuke, their state and progress, a thumbnail, and actions.

In Nuke it is a dockable panel (Vera > Monitor, or the node's Open Monitor button); outside Nuke it is
`vera-monitor` (the same widget in its own window). Rows come from the job registry (vera_nuke.jobs); each
row's state and progress come from `vera-render status OUTDIR --json`, else the output manifest, else the
frames on disk, and for a local run also its last progress line. Actions: Import (in Nuke: Import Layers on
the node; outside: the stack as .nk text on the clipboard), Open Folder, Resubmit, Cancel (local runs).

The row logic (`job_view`, `thumbnail_for`) has no Qt in it; the widget only shows it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading

from vera_nuke import actions, engine, graph, jobs, layers, prefs, shot
from vera_nuke.util import frame_path

COLUMNS = ("", "Node", "Instruction", "Where", "State", "Progress", "Frames", "Note", "Output")
PROGRESS_COLUMN = COLUMNS.index("Progress")
THUMB_W, THUMB_H = 128, 72
REFRESH_MS = 4000
_RELAYS = []  # every _Relay made, kept alive (see _Relay)
LINEAR_HINTS = ("linear", "acescg", "aces2065", "scene_linear", "raw")


# --------------------------------------------------------------------------------------- row logic
def _frames_of(job: dict, spec: dict | None) -> list:
    if spec:
        return list(range(int(spec["plate"]["first"]), int(spec["plate"]["last"]) + 1))
    first, last = (job.get("frames") or [0, -1])[:2]
    return list(range(int(first), int(last) + 1))


def _output_pattern(job: dict, spec: dict | None) -> str:
    out = (spec or {}).get("output", {})
    return layers.layer_pattern(job["out_dir"], out.get("name", "edit"), int(out.get("padding", 4)))


def _spec_of(job: dict):
    """The job's shot spec, checked like any spec read back from a folder; None when missing or refused."""
    path = job.get("spec", "")
    try:
        spec = shot.load_spec(path) if isinstance(path, str) and path else None
        return shot.checked_output(spec, path) if spec is not None else None
    except shot.ShotError:
        return None


def job_view(job: dict, report: dict | None = None) -> dict:
    """What a monitor row shows: state, percent, frames done/total, latest frame, message.

    `report` is `vera-render status --json` for the job's output folder (None when unavailable).
    """
    spec = _spec_of(job)
    frames = _frames_of(job, spec)
    total = len(frames)
    pattern = _output_pattern(job, spec)
    on_disk = [f for f in frames if os.path.isfile(frame_path(pattern, f))]
    latest = on_disk[-1] if on_disk else None
    state = job.get("state", "queued")
    message = job.get("message", "")
    windows = {}
    if report and isinstance(report.get("frames"), dict):
        done = int(report["frames"].get("done_count", len(on_disk)))
        total = int(report["frames"].get("total", total)) or total
        w = report.get("windows") or {}
        windows = {k: len(v) for k, v in w.items() if isinstance(v, list)}
        errors = w.get("errors") or {}
        if errors and not message:
            message = "; ".join(f"window {k}: {v}" for k, v in list(errors.items())[:2])
        complete = bool(report.get("complete"))
    else:
        counts = engine.manifest_counts(job["out_dir"], frames)
        if counts is not None:
            done, windows = counts
        else:
            done = len(on_disk)
        complete = total > 0 and done >= total
    percent = int(100 * done / total) if total else 0

    if job.get("kind") == "local" and state == "running":
        progress = engine.last_progress(job.get("log", ""))
        if progress is not None:  # the run's own progress moves while frames are still in the cache
            percent = max(percent, engine.run_percent(progress, windows))
            stage = progress.label.rsplit(" window ", 1)
            stage = f"window {stage[1]}" if len(stage) == 2 else progress.label.rsplit(" ", 1)[-1]
            message = message or f"{stage}: {progress.percent}% {progress.note}".strip()
        if not engine.pid_alive(job.get("pid")):
            state = "done" if complete else "failed"
            message = message or ("" if complete else "the render process is gone")
    elif state not in jobs.FINAL_STATES:
        if complete:
            state = "done"
        elif windows.get("failed"):
            state = "failed"
        elif windows.get("running") or done:
            state = "running"
    if state == "done" and complete:
        percent = 100
    if not message and windows and state not in jobs.FINAL_STATES:
        n = sum(windows.values())
        message = f"windows {windows.get('done', 0)}/{n} done" + (
            f", {windows['running']} running" if windows.get("running") else "")
    return {"state": state, "percent": percent, "done": done, "total": total, "latest": latest,
            "message": message, "pattern": pattern, "spec": spec}


def _contact_sheet(out_dir: str):
    try:
        names = sorted(n for n in os.listdir(out_dir)
                       if n.lower().startswith("contact") and n.lower().endswith(".png"))
    except OSError:
        return None
    return os.path.join(out_dir, names[-1]) if names else None


def thumbnail_for(job: dict, view: dict, qt_reads_exr: bool = False):
    """A PNG (or EXR Qt can read) to show for the job: a contact sheet if the engine wrote one, else the
    latest edit frame over its plate made with oiiotool (cached per frame), else None."""
    sheet = _contact_sheet(job["out_dir"])
    if sheet:
        return sheet
    frame = view.get("latest")
    if frame is None:
        return None
    edit = frame_path(view["pattern"], frame)
    # beside, not inside, the engine's private .vera/ folder
    thumb = os.path.join(job["out_dir"], ".vera_nuke", "thumbs", f"thumb.{frame:06d}.png")
    if os.path.isfile(thumb) and os.path.getmtime(thumb) >= os.path.getmtime(edit):
        return thumb
    oiiotool = engine.find_tool("oiiotool")
    if oiiotool is None:
        return edit if qt_reads_exr else None
    plate = (view.get("spec") or {}).get("plate", {})
    plate_file = frame_path(plate.get("path", ""), frame) if plate.get("path") else ""
    argv = [oiiotool, edit, "--ch", "R,G,B,A"]
    if plate_file and os.path.isfile(plate_file):
        argv += [plate_file, "--ch", "R,G,B,A=1.0", "--over"]  # the layer over its plate, as the comp does
    argv += ["--resize", f"{THUMB_W * 2}x0"]
    if any(h in str(plate.get("colorspace", "")).lower() for h in LINEAR_HINTS):
        argv += ["--powc", "0.4545,0.4545,0.4545,1"]  # a display-ish look for linear plates
    argv += ["--ch", "R,G,B", "-d", "uint8", "-o", thumb]
    os.makedirs(os.path.dirname(thumb), exist_ok=True)
    try:
        subprocess.run(argv, capture_output=True, timeout=60, check=True, env=engine.child_env())
    except (OSError, subprocess.SubprocessError):
        return None
    return thumb if os.path.isfile(thumb) else None


def in_nuke_gui() -> bool:
    try:
        import nuke
    except ImportError:
        return False
    return bool(getattr(nuke, "env", {}).get("gui"))


# --------------------------------------------------------------------------------------- actions
def import_job(job: dict) -> str:
    """Import: Import Layers on the job's node in Nuke; elsewhere the stack as .nk on the clipboard."""
    if in_nuke_gui():
        node = graph.node_by_full_name(job.get("node", ""))  # the job names the node by its full name
        if node is not None:
            actions.import_layers(node)
            return f"imported into {node.fullName()}"
    spec = shot.load_spec(job.get("spec", ""))
    if spec is None:
        raise engine.EngineError(f"no shot spec at {job.get('spec')}")
    shot.checked_output(spec, job.get("spec", ""))  # its fields enter the .nk text's knobs
    text = layers.nk_text(layers.stack_from_spec(spec, job.get("node", "Vera")), job.get("node_id", job["id"]))
    layers.copy_to_clipboard(text)
    return "copied the layer stack as .nk: paste it in Nuke with the plate selected"


def open_folder(job: dict) -> str:
    from vera_nuke.qt import QtCore, QtGui

    QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(job["out_dir"]))
    return f"opened {job['out_dir']}"


def resubmit(job: dict) -> dict:
    """Run the same spec again: on its farm, or as a new local run."""
    fields = {k: job[k] for k in ("node", "node_id", "script", "spec", "out_dir", "frames", "name", "farm")
              if k in job}
    if job.get("kind") == "farm":
        job_dir = job.get("job_dir") or os.path.join(job["out_dir"], "farm", job["farm"])
        answer = engine.submit(job["spec"], job["farm"], job_dir, launch=prefs.load()["launch"] == "yes")
        new = jobs.new_job(kind="farm", job_dir=job_dir, farm_job=answer, state="submitted", **fields)
    else:
        log = job.get("log") or os.path.join(job["out_dir"], actions.RUN_LOG)
        pid = engine.start_detached_run(job["spec"], log)
        new = jobs.new_job(kind="local", log=log, pid=pid, state="running", **fields)
    return jobs.add(new)


def cancel(job: dict) -> bool:
    if job.get("kind") != "local":
        return False
    stopped = actions.cancel_job(job)
    jobs.update(job["id"], state="cancelled", message="cancelled from the monitor")
    return stopped


# --------------------------------------------------------------------------------------- widget
def _qt():
    from vera_nuke import qt

    return qt


def gather(job_list, wanted: set, reports: dict, status_fn, qt_reads_exr: bool) -> tuple:
    """(status reports, thumbnails) of the jobs: subprocesses (vera-render status, oiiotool), so run off the
    UI thread in Nuke. `wanted`: ids of the jobs whose report must be (re)read."""
    reports = dict(reports)
    for job in job_list:
        if job["id"] in wanted and os.path.isdir(job.get("out_dir", "")):
            reports[job["id"]] = status_fn(job["out_dir"])
    thumbs = {job["id"]: thumbnail_for(job, job_view(job, reports.get(job["id"])), qt_reads_exr)
              for job in job_list}
    return reports, thumbs


def _build_classes():
    qt = _qt()
    QtCore, QtGui, QtWidgets = qt.QtCore, qt.QtGui, qt.QtWidgets

    class _Relay(QtCore.QObject):
        """Carries a worker thread's result to the UI thread. Every relay is kept in _RELAYS for the life of the
        process: were a worker's reference the last one (its panel closed meanwhile), the QObject would be
        deleted on the worker thread, which Qt does not allow."""
        gathered = QtCore.Signal()
        result = None

        def __init__(self):
            super().__init__()
            _RELAYS.append(self)

    class MonitorPanel(QtWidgets.QWidget):
        """The job table. `status_fn(out_dir)` is `vera-render status --json` (swappable for tests).

        With `background` (always in Nuke), the slow parts of a refresh (vera-render status, oiiotool
        thumbnails: both subprocesses) run on a worker thread; `gathered` brings the table update back to
        the UI thread (a queued signal), so Nuke's interface never waits for them."""

        def __init__(self, parent=None, script: str | None = None, status_fn=None, background: bool = True,
                     auto_refresh: bool = True):
            super().__init__(parent)
            self.setObjectName("VeraMonitor")
            self.setWindowTitle("Vera Monitor")
            self.script = script if script is not None else (shot.script_path() if in_nuke_gui() else "")
            self.status_fn = status_fn or engine.status
            self.background = background
            self.qt_reads_exr = "exr" in qt.image_formats()
            self.jobs = []
            self.views = {}
            self._reports = {}
            self._thumbs = {}  # job id -> thumbnail file (made off the UI thread)
            self._querying = False
            # The worker thread signals through a relay it keeps alive, never through the panel itself: the
            # panel may be closed and deleted while a status query runs, and emitting on a deleted QObject
            # crashes (a queued connection to a deleted receiver is simply dropped by Qt).
            self._relay = _Relay()
            self._relay.gathered.connect(self._take, QtCore.Qt.ConnectionType.QueuedConnection)
            self._resubmit_relay = _Relay()  # Resubmit runs `vera-render submit` (minutes) on a worker too
            self._resubmit_relay.gathered.connect(self._resubmitted, QtCore.Qt.ConnectionType.QueuedConnection)

            self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
            self.table.setHorizontalHeaderLabels(COLUMNS)
            self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
            self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
            self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
            self.table.setIconSize(QtCore.QSize(THUMB_W, THUMB_H))
            self.table.verticalHeader().setVisible(False)
            self.table.verticalHeader().setDefaultSectionSize(THUMB_H + 8)
            self.table.setColumnWidth(0, THUMB_W + 8)
            self.table.horizontalHeader().setStretchLastSection(True)
            self.table.itemSelectionChanged.connect(self._update_buttons)

            self.buttons = {}
            bar = QtWidgets.QHBoxLayout()
            for key, text, slot in (("refresh", "Refresh", self.refresh), ("import", "Import", self.import_selected),
                                    ("open", "Open Folder", self.open_selected),
                                    ("resubmit", "Resubmit", self.resubmit_selected),
                                    ("cancel", "Cancel", self.cancel_selected)):
                button = QtWidgets.QPushButton(text)
                button.setObjectName(f"vera_{key}")
                button.clicked.connect(slot)
                bar.addWidget(button)
                self.buttons[key] = button
            bar.addStretch(1)
            self.message = QtWidgets.QLabel("")
            self.message.setObjectName("vera_message")
            layout = QtWidgets.QVBoxLayout(self)
            layout.addLayout(bar)
            layout.addWidget(self.table)
            layout.addWidget(self.message)

            self.timer = QtCore.QTimer(self)
            self.timer.timeout.connect(self.refresh)
            if auto_refresh:
                self.timer.start(REFRESH_MS)
            self.refresh()

        # data
        def refresh(self):
            self.jobs = jobs.load(self.script or None)
            if self.background:
                self._gather_async()
            else:
                self._reports, self._thumbs = gather(*self._gather_args(self.jobs))
            self._fill()

        def _needs_report(self, job):
            view = self.views.get(job["id"])
            return not (view and view["state"] in jobs.FINAL_STATES and job["id"] in self._reports)

        def _gather_args(self, job_list) -> tuple:
            """What a gathering needs, as plain data taken on the UI thread (the worker never holds the panel:
            a panel whose last reference died on the worker thread would be deleted there, which crashes Qt)."""
            wanted = {job["id"] for job in job_list if self._needs_report(job)}
            return list(job_list), wanted, dict(self._reports), self.status_fn, self.qt_reads_exr

        def _gather_async(self):
            if self._querying:
                return
            self._querying = True
            args, relay = self._gather_args(self.jobs), self._relay

            def work():
                try:
                    relay.result = gather(*args)
                except Exception as exc:  # noqa: BLE001 - shown in the panel, never lost on a thread
                    relay.result = exc
                relay.gathered.emit()  # queued: _take runs on the UI thread (dropped if the panel is gone)

            threading.Thread(target=work, name="vera-monitor-status", daemon=True).start()

        def _take(self):
            result, self._querying = self._relay.result, False
            if isinstance(result, Exception):
                self.message.setText(f"status failed: {result}")
                return
            self._reports, self._thumbs = result
            self._fill()

        def _fill(self):
            selected = self.selected_job()
            self.table.setRowCount(len(self.jobs))
            for row, job in enumerate(self.jobs):
                view = job_view(job, self._reports.get(job["id"]))
                self.views[job["id"]] = view
                thumb = self._thumbs.get(job["id"])
                icon_item = QtWidgets.QTableWidgetItem()
                if thumb:
                    pixmap = QtGui.QPixmap(thumb)
                    if not pixmap.isNull():
                        icon_item.setIcon(QtGui.QIcon(pixmap.scaled(
                            THUMB_W, THUMB_H, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                            QtCore.Qt.TransformationMode.SmoothTransformation)))
                icon_item.setData(QtCore.Qt.ItemDataRole.UserRole, job["id"])
                self.table.setItem(row, 0, icon_item)
                where = job.get("farm") if job.get("kind") == "farm" else "local"
                instruction = (view["spec"] or {}).get("instruction", "")
                short = instruction if len(instruction) <= 40 else instruction[:39] + "\u2026"
                out_dir = job.get("out_dir", "")
                home = os.path.expanduser("~")
                shown_dir = "~" + out_dir[len(home):] if home != "/" and out_dir.startswith(home) else out_dir
                texts = [job.get("node", "?"), short, where, view["state"], None, f"{view['done']}/{view['total']}",
                         view["message"], shown_dir]
                for col, text in enumerate(texts, start=1):
                    if text is None:
                        continue
                    item = QtWidgets.QTableWidgetItem(text)
                    item.setToolTip({2: instruction, 8: out_dir}.get(col, text))
                    self.table.setItem(row, col, item)
                bar = self.table.cellWidget(row, PROGRESS_COLUMN)
                if not isinstance(bar, QtWidgets.QProgressBar):
                    bar = QtWidgets.QProgressBar()
                    self.table.setCellWidget(row, PROGRESS_COLUMN, bar)
                bar.setValue(view["percent"])
                bar.setFormat(f"{view['percent']}%")
                if selected is not None and job["id"] == selected["id"]:
                    self.table.selectRow(row)
            self.table.resizeColumnsToContents()
            self.table.setColumnWidth(0, THUMB_W + 8)
            self._update_buttons()

        def selected_job(self):
            rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
            if not rows or rows[0].row() >= len(self.jobs):
                return None
            return self.jobs[rows[0].row()]

        def select_job(self, job_id: str):
            for row, job in enumerate(self.jobs):
                if job["id"] == job_id:
                    self.table.selectRow(row)
                    return True
            return False

        def _update_buttons(self):
            job = self.selected_job()
            for key in ("import", "open", "resubmit"):
                self.buttons[key].setEnabled(job is not None)
            state = self.views.get(job["id"], {}).get("state") if job else None
            self.buttons["cancel"].setEnabled(bool(job) and job.get("kind") == "local" and state == "running")

        # actions
        def _act(self, fn):
            job = self.selected_job()
            if job is None:
                self.message.setText("select a job first")
                return None
            try:
                result = fn(job)
            except (engine.EngineError, shot.ShotError, OSError, ValueError, RuntimeError) as exc:
                self.message.setText(f"error: {exc}")
                return None
            self.message.setText(result if isinstance(result, str) else "")
            return result

        def import_selected(self):
            return self._act(import_job)

        def open_selected(self):
            return self._act(open_folder)

        def resubmit_selected(self):
            """Resubmit: in the background (always in Nuke) on a worker, the answer shown when it comes."""
            job = self.selected_job()
            if not self.background or job is None:
                result = self._act(resubmit)
                if result is not None:
                    self.message.setText(f"resubmitted as job {result['id']}")
                    self.refresh()
                return result
            relay = self._resubmit_relay
            self.message.setText(f"resubmitting {job.get('node', '')}...")

            def work():
                try:
                    relay.result = resubmit(job)
                except Exception as exc:  # noqa: BLE001 - shown in the panel, never lost on a thread
                    relay.result = exc
                relay.gathered.emit()

            threading.Thread(target=work, name="vera-monitor-resubmit", daemon=True).start()
            return None

        def _resubmitted(self):
            result = self._resubmit_relay.result
            if isinstance(result, Exception):
                self.message.setText(f"error: {result}")
                return
            self.message.setText(f"resubmitted as job {result['id']}")
            self.refresh()

        def cancel_selected(self):
            result = self._act(cancel)
            self.refresh()
            return result

    MonitorPanel.__qualname__ = "MonitorPanel"
    return MonitorPanel


def __getattr__(name):
    # The Qt classes are built on first use, so importing this module needs no Qt (farm, tests, docs).
    if name == "MonitorPanel":
        globals()["MonitorPanel"] = _build_classes()
        return globals()[name]
    raise AttributeError(name)


def needs_offscreen(environ, platform: str) -> bool:
    """True on a Linux/BSD machine without a display (no $DISPLAY / $WAYLAND_DISPLAY) when no Qt platform
    is chosen: a farm node or CI machine, where `--screenshot` must still work."""
    if platform.startswith(("win", "darwin")) or environ.get("QT_QPA_PLATFORM"):
        return False
    return not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def main(argv=None) -> int:
    """`vera-monitor`: the monitor in its own window."""
    parser = argparse.ArgumentParser(prog="vera-monitor", description="Watch Vera jobs started from Nuke.")
    parser.add_argument("--jobs", metavar="FILE", help="job registry (default: $VERA_JOBS or ~/.vera/jobs.json)")
    parser.add_argument("--script", default="", help="only the jobs of this Nuke script")
    parser.add_argument("--screenshot", metavar="PNG", help="render the window once to PNG and exit")
    args = parser.parse_args(argv)
    if args.jobs:
        os.environ["VERA_JOBS"] = os.path.abspath(args.jobs)
    if needs_offscreen(os.environ, sys.platform):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # no display: Qt's xcb plug-in would abort the process
    try:
        qt = _qt()
    except ImportError:
        print("vera-monitor: error: needs PySide6 or PySide2 (pip install 'vera[monitor]')", file=sys.stderr)
        return 2
    app = qt.QtWidgets.QApplication.instance() or qt.QtWidgets.QApplication(sys.argv[:1])
    panel = __getattr__("MonitorPanel")(script=args.script, background=not args.screenshot,
                                        auto_refresh=not args.screenshot)
    panel.resize(980, 420)
    if args.screenshot:
        panel.show()
        app.processEvents()
        if not panel.grab().save(args.screenshot):
            print(f"vera-monitor: error: cannot write {args.screenshot}", file=sys.stderr)
            return 2
        return 0
    panel.show()
    return qt.exec_app(app)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
