"""Farm submission: one job per shot, a render step with one task per window, then an assemble step after it.

`vera.farm.submission.submit(spec_path, backend, jobdir, launch=False)` validates the shot, writes the job files
of one backend (`BACKENDS`: openjd, opencue, deadline) into `jobdir` and, with `launch`, hands them to the farm.
This package holds what the backends share, and imports nothing heavy (the CLI declares `--farm` from it). Every
task runs `vera-render` with the shot spec's absolute path, so the spec and its plates must be on storage the farm
nodes see under the same path (docs/farm.md).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vera.errors import BadInput

BACKENDS = {
    "openjd": "vera.farm.openjd",
    "opencue": "vera.farm.opencue",
    "deadline": "vera.farm.deadline",
}


@dataclass
class JobInfo:
    """What a submission wrote (and launched)."""

    backend: str
    jobdir: str
    shot: str
    spec_path: str
    windows: int
    files: list[str]
    render_command: list[str]    # one render task; WINDOW_TOKEN of the backend stands for the window index
    assemble_command: list[str]
    launch_command: list[str]    # what `--launch` runs (or what a person runs to submit)
    launched: bool = False
    job_ids: dict = field(default_factory=dict)
    gpus: int = 1                # GPUs each render task asks the farm for (`--devices` of its command)
    gpu_memory_gib: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        lines = [f"{self.backend} job for shot {self.shot}: {self.windows} render task(s) + assemble",
                 *([f"  each render task asks for {self.gpus} GPU(s)"
                    + (f" of {self.gpu_memory_gib:g} GiB" if self.gpu_memory_gib else "")]
                   if self.gpus > 1 or self.gpu_memory_gib else []),
                 *(f"  wrote {f}" for f in self.files),
                 f"  render task:   {shlex.join(self.render_command)}",
                 f"  assemble task: {shlex.join(self.assemble_command)}"]
        if self.launched:
            lines.append("  submitted" + (f": {self.job_ids}" if self.job_ids else ""))
        else:
            lines.append(f"  submit with:   {shlex.join(self.launch_command)}")
        return "\n".join(lines)


def vera_executable(override: str | None = None) -> str:
    """vera-render by absolute path: the one beside this Python (its venv), else the one on PATH."""
    if override:
        return override
    beside = Path(sys.executable).parent / "vera-render"
    if beside.is_file():
        return str(beside)
    found = shutil.which("vera-render")
    if not found:
        raise BadInput("cannot find the vera-render executable; pass --executable PATH as the farm nodes see it")
    return str(Path(found).resolve())


def task_commands(shot, executable: str, progress: str, window_token: str,
                  gpus: int = 1) -> tuple[list[str], list[str]]:
    """(render task, assemble task) command lines; `window_token` is the backend's placeholder for the index.
    A render task on several GPUs runs them as `--devices N` worker processes (the assemble task needs none)."""
    spec = str(shot.spec_path)
    render = [executable, "run", spec, "--window", window_token, "--progress", progress]
    if gpus > 1:
        render += ["--devices", str(gpus)]
    assemble = [executable, "assemble", spec, "--progress", progress]
    return render, assemble


def gpu_options(gpus: int | None, gpu_memory_gib: float | None) -> list[str]:
    """`vera-render submit` options that ask for these GPUs again (in a launch command printed for a person)."""
    return [*(["--gpus", str(gpus)] if gpus else []), *(["--gpu-memory", f"{gpu_memory_gib:g}"] if gpu_memory_gib else [])]


def job_name(shot) -> str:
    return f"vera_{shot.spec.name}"


