"""What the Vera Edit node's buttons do (gizmos/VeraEdit.gizmo calls these with nuke.thisNode()).

Every problem reaches the artist as nuke.message text, never a traceback: ShotError / EngineError /
ConnectError are caught here. Jobs are recorded twice: on the node (hidden knob `vera_job`, JSON, saved with
the script) and in the job registry (vera_nuke.jobs) that the monitor reads. A button runs with the gizmo as
Nuke's current group, so nodes are made in the Vera node's own group (vera_nuke.graph) and named by their
full name (`Group1.VeraEdit1`).
"""

from __future__ import annotations

import json
import os
import threading
import uuid

from vera_nuke import engine, graph, jobs, layers, prefs, prefs_dialog, shot
from vera_nuke.engine import EngineError
from vera_nuke.graph import ConnectError
from vera_nuke.shot import ShotError

NODE_CLASS = "VeraEdit"  # gizmos/VeraEdit.gizmo
JOB_KNOB = "vera_job"
ID_KNOB = "vera_id"
STATUS_KNOB = "status"
RUN_LOG = "vera-run.log"
_local_runs = {}  # job id -> LocalRenderJob (this session's running runs, for cancel from the monitor)
_last_runs = {}  # node id (vera_id) -> its latest LocalRenderJob of this session (running or finished)
_workers = []  # background threads the buttons started (wait_for_workers)
HANDLED = (ShotError, EngineError, ConnectError, OSError)  # problems the artist gets as one line


def _nuke():
    import nuke

    return nuke


def _node(node):
    return node if node is not None else _nuke().thisNode()


def node_id(node) -> str:
    """The node's stable id (survives renames; the imported stack is tagged with it). Hidden knobs are text:
    read with getText() like every free text (value() would evaluate it as TCL)."""
    knob = node[ID_KNOB]
    if not knob.getText():
        knob.setValue(uuid.uuid4().hex[:12])
    return knob.getText()


def on_create(node=None) -> None:
    """The gizmo's onCreate (made, loaded or pasted): a copy of a node that is still in the script gets its own
    id and no job, so Import Layers on the copy never repoints the original's Read. Nodes are compared by full
    name (Nuke hands out a new Python object for the same node)."""
    node = _node(node)
    own = node[ID_KNOB].getText()
    if not own:
        return
    for other in graph.all_nodes_everywhere():
        knob = other.knob(ID_KNOB)
        if knob is not None and knob.getText() == own and other.fullName() != node.fullName():
            node[ID_KNOB].setValue(uuid.uuid4().hex[:12])
            node[JOB_KNOB].setValue("")
            node[STATUS_KNOB].setValue("not rendered")
            return


def node_job(node) -> dict:
    try:
        job = json.loads(node[JOB_KNOB].getText() or "{}")
    except (ValueError, RecursionError):
        job = {}
    return job if isinstance(job, dict) else {}


def record_job(node, job: dict) -> None:
    """Store the job on the node and show its state in the node's status line (main thread only)."""
    node[JOB_KNOB].setValue(json.dumps(job, sort_keys=True))
    where = job.get("farm") if job.get("kind") == "farm" else "local"
    text = f"{job.get('state', '?')} ({where}) {job.get('message', '')}".strip()
    node[STATUS_KNOB].setValue(text)


last_problem = [""]  # the latest message shown to the artist (the self-test reports it)


def _fail(exc: Exception) -> None:
    last_problem[0] = str(exc)
    _nuke().message(str(exc))


def in_background(name: str, work, done=None) -> threading.Thread:
    """Run `work()` on a worker thread: Nuke's GUI thread never waits on a subprocess (Foundry threading guide).
    `done(result)` then runs on the main thread (nuke.executeInMainThread), as does the artist's one-line
    message when `work` fails."""
    nuke = _nuke()

    def run():
        try:
            result = work()
        except HANDLED as exc:
            nuke.executeInMainThread(_fail, args=(exc,))
            return
        except Exception as exc:  # noqa: BLE001 - a worker must report, never die silently
            nuke.executeInMainThread(_fail, args=(RuntimeError(f"Vera: {name}: {type(exc).__name__}: {exc}"),))
            return
        if done is not None:
            nuke.executeInMainThread(done, args=(result,))

    thread = threading.Thread(target=run, name=f"vera-{name}", daemon=True)
    _workers[:] = [t for t in _workers if t.is_alive()] + [thread]
    thread.start()
    return thread


def wait_for_workers(timeout: float | None = None) -> None:
    """Wait for the background work the buttons started (tests, and the self-test on its worker thread)."""
    for thread in list(_workers):
        thread.join(timeout)


class LocalRenderJob:
    """A local `vera-render run` followed by a nuke.ProgressTask from a worker thread.

    Like Foundry's threading example, the ProgressTask is created and fed in the worker thread; anything
    touching the node graph (recording the job, messages) goes through nuke.executeInMainThread.
    """

    def __init__(self, node, spec_path: str, spec: dict):
        self.node_name = node.fullName()
        self.spec_path = spec_path
        self.out_dir = spec["output"]["dir"]
        self.log_path = os.path.join(self.out_dir, RUN_LOG)
        self.run = engine.LocalRun(spec_path, self.log_path)
        self.job = jobs.new_job(kind="local", node=self.node_name, node_id=node_id(node), script=shot.script_path(),
                                spec=spec_path, out_dir=self.out_dir, log=self.log_path, farm="",
                                frames=[spec["plate"]["first"], spec["plate"]["last"]], name=spec["name"])
        self.thread = None
        self.state = None
        self.last_error = ""
        self._cancel_requested = False  # set from another thread (the monitor's Cancel)

    def start(self) -> "LocalRenderJob":
        """Record the job (queued), start the process, record it running. A process whose job could not be
        recorded is stopped: nothing may render that the monitor cannot see or cancel."""
        jobs.add(self.job)  # before any process exists
        try:
            self.run.start()
        except EngineError as exc:
            jobs.update(self.job["id"], state="failed", message=str(exc))
            raise
        try:
            jobs.update(self.job["id"], state="running", pid=self.run.pid)
        except OSError as exc:
            self.run.terminate()
            raise EngineError(f"Vera: the render was stopped: its job could not be recorded ({exc})") from None
        self.job.update(state="running", pid=self.run.pid)
        _nuke().executeInMainThread(self._record, args=(dict(self.job),))
        _local_runs[self.job["id"]] = self
        _last_runs[self.job["node_id"]] = self
        self.thread = threading.Thread(target=self._follow, name=f"vera-{self.node_name}", daemon=True)
        self.thread.start()
        return self

    def wait(self, timeout=None) -> str:
        self.thread.join(timeout)
        return self.state

    def _follow(self) -> None:
        try:
            self._follow_run()
        except Exception as exc:  # noqa: BLE001 - a worker thread must end by reporting, never silently
            self.run.terminate()
            self._report("failed", None, f"vera_nuke: {type(exc).__name__}: {exc}")

    def _follow_run(self) -> None:
        nuke = _nuke()
        task = nuke.ProgressTask(f"Vera: {self.node_name}")
        task.setMessage("starting vera-render")
        cancelled, shown = False, 0
        while True:
            for line in self.run.new_lines(timeout=0.2):
                progress = engine.parse_progress(line)
                if progress is not None:
                    # whole-run percent (windows + assemble, from the manifest the run keeps), never backwards
                    counts = engine.manifest_counts(self.out_dir, [])
                    shown = max(shown, engine.run_percent(progress, counts[1] if counts else {}))
                    task.setProgress(shown)
                    counter = f"{progress.done}/{progress.total}" if progress.total else ""
                    task.setMessage(" ".join(p for p in (progress.label, counter, progress.note) if p))
                elif line.strip():
                    self.last_error = line.strip()
            if (task.isCancelled() or self._cancel_requested) and not cancelled:
                cancelled = True
                self.run.terminate()
            code = self.run.poll()
            if code is not None:
                break
        if cancelled:
            self.state, message = "cancelled", "cancelled by the user"
        elif code == 0:
            self.state, message = "done", ""
            task.setProgress(100)
        else:
            self.state, message = "failed", self.last_error or f"vera-render exited with {code}"
        del task  # closes the progress bar in Nuke
        self._report(self.state, code, message)

    def _report(self, state: str, code, message: str) -> None:
        self.state = state
        self.job.update(state=state, returncode=code, message=message)
        try:
            jobs.update(self.job["id"], state=state, returncode=code, message=message)
        finally:
            _local_runs.pop(self.job["id"], None)
            _nuke().executeInMainThread(self._finish, args=(dict(self.job),))

    def _record(self, job: dict) -> None:
        node = graph.node_by_full_name(self.node_name)
        if node is not None:
            record_job(node, job)

    def _finish(self, job: dict) -> None:
        nuke = _nuke()
        self._record(job)
        if job["state"] == "failed":
            nuke.message(f"Vera: {self.node_name} failed: {job['message']}")

    def cancel(self) -> None:
        self._cancel_requested = True  # the follower stops the process and reports "cancelled"


def render_locally(node=None):
    """Render Locally: the spec is built here (knobs, plate write-through: Nuke's thread), then a worker
    validates it and starts `vera-render run`, which a progress bar follows. Returns the worker thread."""
    node = _node(node)
    try:
        path, spec = shot.write(node, prefs.load())
        runner = LocalRenderJob(node, path, spec)
    except HANDLED as exc:
        _fail(exc)
        return None
    return in_background("render", lambda: shot.check(path) and runner.start())


def last_run(node):
    """The latest local run Render Locally started for `node` in this session (running or finished)."""
    return _last_runs.get(node[ID_KNOB].getText())


def submit_to_farm(node=None):
    """Submit to Farm: the spec is built here, a worker validates and runs `vera-render submit` (up to minutes),
    and the job is recorded back on Nuke's main thread. Returns the worker thread."""
    node = _node(node)
    try:
        values = prefs.load()
        path, spec = shot.write(node, values)
        farm = node["farm"].value()
        farm = values["farm"] if farm in ("", "default") else farm
        job_dir = os.path.join(spec["output"]["dir"], "farm", farm)
        job = jobs.new_job(kind="farm", farm=farm, node=node.fullName(), node_id=node_id(node),
                           script=shot.script_path(), spec=path, out_dir=spec["output"]["dir"], job_dir=job_dir,
                           frames=[spec["plate"]["first"], spec["plate"]["last"]], name=spec["name"],
                           state="submitted")
    except HANDLED as exc:
        _fail(exc)
        return None

    def work():
        shot.check(path)
        job["farm_job"] = engine.submit(path, farm, job_dir, launch=values["launch"] == "yes")
        return jobs.add(job)

    def done(recorded):
        target = graph.node_by_full_name(recorded["node"])
        if target is not None:
            record_job(target, recorded)

    return in_background("submit", work, done)


def _layer_source(node) -> tuple:
    """(spec, out_dir) of the node's last job, else of the spec in its output folder. The spec was read back
    from a folder others can write: checked before any of its fields enters a knob."""
    job = node_job(node)
    spec_path = job.get("spec") if isinstance(job.get("spec"), str) else ""
    spec_path = spec_path or os.path.join(shot.output_dir(node), shot.SPEC_NAME)
    spec = shot.load_spec(spec_path)
    if spec is None:
        raise ShotError(f"{node.name()}: nothing rendered yet (no shot spec at {spec_path})")
    shot.checked_output(spec, spec_path)
    return spec, spec["output"]["dir"]


def stack_for(node) -> list:
    spec, _out_dir = _layer_source(node)
    source = node.input(0)
    layer_format = layers.format_text(source.format()) if source is not None else ""  # layers = plate's format
    return layers.stack_from_spec(spec, node.name(), shot.working_space(), (node.xpos() + 250, node.ypos()),
                                  layer_format, shot.root_luts())


def import_layers(node=None):
    """Import Layers: build the Merge-over stack beside the node (in its group), or update its Read when the
    stack already exists, wherever it is."""
    node = _node(node)
    try:
        source = node.input(0)
        if source is None:
            raise ShotError(f"{node.name()}: connect the Source input first")
        specs = stack_for(node)
        owner = node_id(node)
        existing = layers.find_stack(owner)
        if "read" not in existing:
            return layers.build(specs, source, owner, graph.parent_group(node))
        by_role = {s.role: s for s in specs}
        layers.update_read(existing["read"], by_role["read"].knobs)
        if "backdrop" in existing:
            existing["backdrop"]["label"].setValue(by_role["backdrop"].knobs["label"])
        merge = existing.get("merge")
        if merge is not None and merge.input(0) is None:
            graph.connect(merge, 0, source)
        return existing
    except (ShotError, ConnectError, ValueError) as exc:  # ValueError: a knob value Nuke refused
        _fail(exc)
        return None


def nk_text_for(node) -> str:
    return layers.nk_text(stack_for(node), node_id(node))


def copy_as_nk(node=None):
    """Copy as .nk: the same stack as script text on the clipboard."""
    node = _node(node)
    try:
        text = nk_text_for(node)
    except (ShotError, ValueError) as exc:
        _fail(exc)
        return None
    layers.copy_to_clipboard(text)
    return text


def cancel_job(job: dict) -> bool:
    """Stop a local run: through this session's runner when it is ours, else by its process id."""
    runner = _local_runs.get(job.get("id"))
    if runner is not None:
        runner.cancel()
        return True
    return bool(job.get("pid")) and engine.terminate_pid(int(job["pid"]))


MONITOR_WIDGET = "__import__('vera_nuke.monitor', fromlist=['MonitorPanel']).MonitorPanel"
MONITOR_ID = "com.vera.monitor"


def open_monitor(node=None):
    """Open Monitor: the monitor panel docked beside the Properties bin."""
    nuke = _nuke()
    import nukescripts

    panel = nukescripts.panels.registerWidgetAsPanel(MONITOR_WIDGET, "Vera Monitor", MONITOR_ID, True)
    return panel.addToPane(nuke.getPaneFor("Properties.1"))


def edit_preferences():
    """Vera > Preferences: a small Qt dialog over prefs.json."""
    dialog = prefs_dialog.PreferencesDialog(prefs.load())
    if dialog.exec_() if hasattr(dialog, "exec_") else dialog.exec():
        prefs.save(dialog.values())


def create_node():
    """Vera > Vera Edit: create the node under the selection."""
    return _nuke().createNode(NODE_CLASS)
