"""Talking to the engine: `vera-render` as a subprocess, never its Python.

Contract (docs/farm.md, vera.cli): `validate SHOT.json` exits 2 with one problem per stderr line;
`run SHOT.json --progress log` prints `<label>: <done>/<total> (<percent>%) <note>` lines on stderr
(vera.progress, `log` mode); `submit SHOT.json --farm F --out JOBDIR --json` and `status OUTDIR --json`
print JSON on stdout. Exit codes: 0 ok, 1 internal, 2 bad input, 3 transient.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections import namedtuple

from vera_nuke import prefs

EXIT_BAD_INPUT = 2


class EngineError(Exception):
    """vera-render could not be run or failed: a one-line message for the artist."""


ProgressLine = namedtuple("ProgressLine", "label done total percent note")

# `<label>: 3/12 (25%) note` (log mode); also the farm dialects, so a farm log can be read the same way.
_LOG_RE = re.compile(r"(?P<done>\d+)\s*/\s*(?P<total>\d+)\s*\(\s*(?P<pct>\d+(?:\.\d+)?)\s*%\s*\)\s*(?P<note>.*)$")
_PCT_RE = re.compile(r"^\s*(?:openjd_progress:\s*(?P<a>\d+(?:\.\d+)?)\s*%?|Progress:\s*(?P<b>\d+(?:\.\d+)?)\s*%)\s*$")


def parse_progress(line: str):
    """A ProgressLine for a progress line of vera-render, else None. Percent is clamped to 0..100."""
    line = line.rstrip("\r\n")
    m = _LOG_RE.search(line)
    if m:
        label = line[:m.start()].rstrip().rstrip(":").strip()
        done, total = int(m.group("done")), int(m.group("total"))
        pct = float(m.group("pct")) if total <= 0 else 100.0 * done / total
        return ProgressLine(label, done, total, max(0, min(100, int(pct))), m.group("note").strip())
    m = _PCT_RE.match(line)
    if m:
        pct = float(m.group("a") or m.group("b"))
        return ProgressLine("", None, None, max(0, min(100, int(pct))), "")
    return None


def command(preferences: dict | None = None) -> list:
    """argv prefix that runs vera-render: $VERA_RENDER, else the preference, else PATH."""
    configured = os.environ.get("VERA_RENDER") or (preferences or prefs.load()).get("vera_render", "")
    if configured:
        argv = shlex.split(configured, posix=os.name != "nt")
        return argv
    found = shutil.which("vera-render")
    if not found:
        raise EngineError("vera-render not found: set its path in Vera > Preferences or $VERA_RENDER")
    return [found]


def child_env() -> dict:
    """The environment for vera-render: Nuke's, less every PYTHON* variable. Nuke sets PYTHONPATH / PYTHONHOME
    for its own interpreter; inherited, they make the engine's Python load Nuke's libraries (OpenPype PRs
    2493 and 4740 fixed the same breakage). Progress lines still arrive at once: Python's stderr is line
    buffered even when it is a pipe."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PYTHON")}


def _run(args: list, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = command() + [str(a) for a in args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=child_env())
    except FileNotFoundError:
        raise EngineError(f"cannot run {argv[0]}: not found (Vera > Preferences)") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"vera-render {args[0]} took more than {timeout:g} s") from None


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def validate(spec_path: str) -> list:
    """Problems with the shot (empty when it is valid). Raises EngineError when validation could not run."""
    proc = _run(["validate", spec_path], timeout=300)  # on a worker thread: a slow start never freezes Nuke
    if proc.returncode == 0:
        return []
    if proc.returncode == EXIT_BAD_INPUT:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("vera-render: error:")] or lines  # drop the summary line
        return [re.sub(r"^vera-render:\s*(error:\s*)?", "", ln) for ln in errors] or ["the shot is invalid"]
    raise EngineError(f"vera-render validate failed: {_error_line(proc)}")


def submit(spec_path: str, farm: str, job_dir: str, launch: bool = True) -> dict:
    """Write the farm job (and with `launch`, submit it); returns what `submit --json` printed."""
    args = ["submit", spec_path, "--farm", farm, "--out", job_dir, "--json"] + (["--launch"] if launch else [])
    proc = _run(args, timeout=600)
    if proc.returncode != 0:
        raise EngineError(f"submit to {farm} failed: {_error_line(proc)}")
    try:
        return json.loads(proc.stdout)
    except (ValueError, RecursionError):
        raise EngineError(f"submit to {farm}: unreadable answer: {proc.stdout.strip()[:200]}") from None


def find_tool(name: str):
    """A tool (oiiotool) on PATH, else beside vera-render (the engine's venv ships it)."""
    found = shutil.which(name)
    if found:
        return found
    try:
        engine_bin = shutil.which(command()[0]) or command()[0]
    except EngineError:
        return None
    candidate = os.path.join(os.path.dirname(os.path.abspath(engine_bin)), name)
    return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


def status(out_dir: str, timeout: float = 30):
    """`status OUTDIR --json` as a dict, or None when vera-render is missing or could not tell."""
    try:
        proc = _run(["status", out_dir, "--json"], timeout=timeout)
    except EngineError:
        return None
    if proc.returncode != 0:
        return None
    try:
        answer = json.loads(proc.stdout)
    except (ValueError, RecursionError):
        return None
    return answer if isinstance(answer, dict) else None


class LocalRun:
    """`vera-render run SPEC --progress log` in the background. stderr lines are queued and logged.

    The log file lets another process (vera-monitor) follow the run; the process gets its own session /
    process group so cancelling stops its children too.
    """

    def __init__(self, spec_path: str, log_path: str):
        self.spec_path = spec_path
        self.log_path = log_path
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.proc = None
        self._reader = None

    def start(self) -> "LocalRun":
        argv = command() + ["run", self.spec_path, "--progress", "log"]
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        kwargs = _new_process_group()
        env = child_env()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, bufsize=1, env=env, **kwargs)
        except OSError as exc:
            raise EngineError(f"cannot start {argv[0]}: {exc}") from None
        self._reader = threading.Thread(target=self._read, name="vera-run-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self):
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                self.lines.put(line.rstrip("\n"))
        self.proc.stderr.close()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def poll(self):
        """The exit code once the process ended and all its output was read, else None."""
        if self.proc.poll() is None or (self._reader and self._reader.is_alive()):
            return None
        return self.proc.returncode

    def new_lines(self, timeout: float = 0.2) -> list:
        out = []
        try:
            out.append(self.lines.get(timeout=timeout))
            while True:
                out.append(self.lines.get_nowait())
        except queue.Empty:
            pass
        return out

    def terminate(self, grace: float = 5.0) -> None:
        if self.proc and self.proc.poll() is None:
            terminate_pid(self.proc.pid)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _new_process_group() -> dict:
    """Popen arguments that make the run its own process group, so cancelling stops its children too."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def terminate_pid(pid: int) -> bool:
    """Ask a local run (and its process group) to stop. False when it is not running."""
    try:
        if os.name == "nt":
            os.kill(pid, signal.SIGTERM)
        else:
            os.killpg(pid, signal.SIGTERM)  # the run is its own session leader (LocalRun.start)
        return True
    except (ProcessLookupError, PermissionError, OSError):
        return False


def pid_alive(pid) -> bool:
    if not pid:
        return False
    if os.name == "nt":  # pragma: no cover - no os.kill(pid, 0) probe on Windows
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, OSError, ValueError):
        return False
    if not hasattr(os, "waitid"):
        return True
    try:  # a finished child of this process is a zombie until reaped: not alive. Peek (WNOWAIT), never
        # reap: the Popen that owns it must still read its exit code.
        return os.waitid(os.P_PID, int(pid), os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:  # not our child: kill(0) said it exists
        return True


def start_detached_run(spec_path: str, log_path: str) -> int:
    """Start a local run that outlives the caller (the monitor's Resubmit). Returns its pid."""
    argv = command() + ["run", spec_path, "--progress", "log"]
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    kwargs = _new_process_group()
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                env=child_env(), **kwargs)
    return proc.pid


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return None


def manifest_counts(out_dir: str, frames: list):
    """(frames done, windows {state: count}) from OUT/manifest.json, or None when there is none."""
    manifest = read_json(os.path.join(out_dir, "manifest.json"))
    if not isinstance(manifest, dict):
        return None
    done = sum(1 for f in frames
               if (manifest.get("frames") or {}).get(str(f), {}).get("status") == "done")
    windows = {}
    for entry in (manifest.get("windows") or {}).values():
        state = entry.get("status", "missing") if isinstance(entry, dict) else "missing"
        windows[state] = windows.get(state, 0) + 1
    return done, windows


def run_percent(progress, windows: dict) -> int:
    """Whole-run percent of `vera-render run` from its last progress line: each window (rendered in index
    order) and the final assemble count as one stage. `windows`: the manifest's {state: count}."""
    n_windows = max(sum(windows.values()), 1)
    m = re.search(r"\bwindow (\d+)$", progress.label)
    if m:
        before = int(m.group(1))
        n_windows = max(n_windows, before + 1)
    elif progress.label.endswith("assemble"):
        before = n_windows
    else:
        return 0
    return min(100, int(100 * (before + progress.percent / 100) / (n_windows + 1)))


def last_progress(log_path: str):
    """The last progress line in a run log (None when there is none yet)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()[-200:]
    except OSError:
        return None
    for line in reversed(lines):
        parsed = parse_progress(line)
        if parsed:
            return parsed
    return None


__all__ = ["EngineError", "ProgressLine", "parse_progress", "command", "child_env", "validate", "submit", "status",
           "LocalRun", "terminate_pid", "start_detached_run", "last_progress", "pid_alive", "manifest_counts",
           "run_percent", "read_json"]
