"""OpenCue backend: a PyOutline job with two Shell layers, serialised to OpenCue's XML job spec (JOBDIR/job.xml).

- layer `render`: frame range = window indices `0-N`, chunk 1, command `vera-render run SPEC --window #IFRAME#`
- layer `assemble`: one frame, depends on all of `render` (LAYER_ON_LAYER)

Serialising needs no Cuebot: PyOutline only writes a session folder (its copy of the outline), which we put
in JOBDIR/session instead of ~/.opencue/sessions. Submitting (`--launch`) needs a configured Cuebot:
$CUEBOT_HOSTS, or an OpenCue config file ($OPENCUE_CONFIG_FILE or ~/.config/opencue/opencue.yaml).
Commands run without the pycuerun wrapper (use_pycuerun=False): RQD runs them as given.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import os
import shlex
from pathlib import Path

import opencue

import outline

from outline.cuerun import OutlineLauncher

from outline.modules.shell import Shell

from vera.atomic import atomic_write_text
from vera.errors import BadInput, TransientError
from vera.farm import JobInfo, gpu_options, job_name, task_commands, vera_executable

JOB_FILE = "job.xml"
SESSION_DIR = "session"
RENDER_LAYER, ASSEMBLE_LAYER = "render", "assemble"
WINDOW_TOKEN = "#IFRAME#"
MAX_RETRIES = 2  # OpenCue retries any non-zero exit; see docs/farm.md for what the codes mean


def _shell_line(command: list[str]) -> str:
    """Quote for RQD's shell, leaving OpenCue's frame token bare so it is substituted."""
    return " ".join(arg if arg == WINDOW_TOKEN else shlex.quote(arg) for arg in command)


def cuebot_configured() -> str | None:
    """Where this machine's Cuebot is configured, or None (then a launch cannot work)."""
    if os.environ.get("CUEBOT_HOSTS"):
        return f"CUEBOT_HOSTS={os.environ['CUEBOT_HOSTS']}"
    for var in ("OPENCUE_CONFIG_FILE", "OPENCUE_CONF"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return f"{var}={os.environ[var]}"
    user_config = Path.home() / ".config" / "opencue" / "opencue.yaml"
    return str(user_config) if user_config.is_file() else None


@contextlib.contextmanager
def _outline_session_in(folder: Path):
    """PyOutline writes its session under its config's session_dir and sets $SHOT; keep both local."""
    saved_dir = outline.config.get("outline", "session_dir")
    saved_shot = os.environ.get("SHOT")
    outline.config.set("outline", "session_dir", str(folder))
    try:
        yield
    finally:
        outline.config.set("outline", "session_dir", saved_dir)
        if saved_shot is None:
            os.environ.pop("SHOT", None)
        else:
            os.environ["SHOT"] = saved_shot


def build_outline(shot, executable: str, show: str = "", user: str = "", gpus: int | None = None,
                  gpu_memory_gib: float | None = None):
    """The outline.Outline of the job: render layer (one frame per window) and assemble layer after it.

    GPUs per render task are PyOutline's layer args `gpus` and `gpu_memory` (outline/backend/cue.py writes them
    as the layer's <gpus> and <gpu_memory> from spec version 1.12; Cuebot reads "<N>g" as N GB per GPU)."""
    render, assemble = task_commands(shot, executable, "log", WINDOW_TOKEN, gpus or 1)
    ol = outline.Outline(job_name(shot), shot=shot.spec.name, show=show or os.environ.get("SHOW") or "vera",
                         user=user or getpass.getuser())
    last = len(shot.windows) - 1
    gpu_args = {}
    if gpus:
        gpu_args["gpus"] = int(gpus)
    if gpu_memory_gib:
        gpu_args["gpu_memory"] = f"{math.ceil(gpu_memory_gib)}g"
    render_layer = Shell(RENDER_LAYER, command=_shell_line(render), range=f"0-{last}", chunk=1, **gpu_args)
    assemble_layer = Shell(ASSEMBLE_LAYER, command=_shell_line(assemble), range="0", chunk=1)
    assemble_layer.depend_all(render_layer)
    ol.add_layer(render_layer)
    ol.add_layer(assemble_layer)
    return ol


def write_job(shot, jobdir: Path, launch: bool = False, executable: str | None = None, show: str = "",
              priority: int = 50, gpus: int | None = None, gpu_memory: float | None = None, **_ignored) -> JobInfo:
    executable = vera_executable(executable)
    ol = build_outline(shot, executable, show, gpus=gpus, gpu_memory_gib=gpu_memory)
    launcher = OutlineLauncher(ol, priority=priority, maxretries=MAX_RETRIES)
    with _outline_session_in(jobdir / SESSION_DIR):
        xml = launcher.serialize(use_pycuerun=False)
    path = jobdir / JOB_FILE
    atomic_write_text(path, xml + "\n")
    render, assemble = task_commands(shot, executable, "log", WINDOW_TOKEN, gpus or 1)
    info = JobInfo("opencue", str(jobdir), shot.spec.name, str(shot.spec_path), len(shot.windows), [str(path)],
                   render, assemble, [executable, "submit", str(shot.spec_path), "--farm", "opencue", "--out",
                                      str(jobdir), "--launch", *gpu_options(gpus, gpu_memory)],
                   gpus=gpus or 1, gpu_memory_gib=gpu_memory)
    if launch:
        where = cuebot_configured()
        if not where:
            raise BadInput("--launch needs a Cuebot: set CUEBOT_HOSTS=host:8443 (or an OpenCue config file in "
                           f"$OPENCUE_CONFIG_FILE or ~/.config/opencue/opencue.yaml); the job is written to {path}")

        try:
            jobs = opencue.api.launchSpecAndWait(xml)
        except opencue.exception.CueException as exc:
            raise TransientError(f"submitting {path} to the Cuebot ({where}) failed: {exc}") from None
        info.launched = True
        info.job_ids = {job.name(): job.id() for job in jobs}
    return info
