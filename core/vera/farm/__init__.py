"""Farm submission: one job per shot, a render step with one task per window, then an assemble step after it.

`submit(spec_path, backend, jobdir, launch=False)` validates the shot, writes the job files of one backend
(`BACKENDS`: openjd, opencue, deadline) into `jobdir` and, with `launch`, hands them to the farm. Every task
runs `vera-render` with the shot spec's absolute path, so the spec and its plates must be on storage the farm
nodes see under the same path (docs/farm.md).
"""

from __future__ import annotations

import importlib
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vera.errors import BadInput
from vera.layout import load_shot
from vera.manifest import prepare_manifest
from vera.plan import bundle_components, plan, require_fit

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


def check_gpus(shot, gpus: int, gpu_memory_gib: float | None) -> None:
    """BadInput unless `gpus` GPUs (of `gpu_memory_gib` each, when given) can render one window of the shot, as
    the planner (vera.plan) sees the shot's bundle at its resolution: refused at submission, not on every task."""
    if int(gpus) != gpus or gpus < 1:
        raise BadInput(f"GPUs per task must be a whole number of at least 1, got {gpus}")
    if gpu_memory_gib is None:
        return
    if gpu_memory_gib <= 0:
        raise BadInput(f"GPU memory must be positive, got {gpu_memory_gib} GiB")

    bundle = "demo" if shot.spec.model.bundle == "demo" else shot.spec.resolve(shot.spec.model.bundle)
    cfg, components, defaults = bundle_components(bundle)
    width, height = defaults["resolution"]
    guidance = shot.spec.sampler.guidance if shot.spec.sampler.guidance is not None else defaults["guidance"]
    result = plan(cfg, shot.window_frames, int(width), int(height), gpus, gpu_memory_gib, guidance=guidance > 1,
                  components=components)
    try:
        require_fit(result)
    except BadInput as exc:
        raise BadInput(f"{shot.spec_path}: {exc}") from None


def gpu_options(gpus: int | None, gpu_memory_gib: float | None) -> list[str]:
    """`vera-render submit` options that ask for these GPUs again (in a launch command printed for a person)."""
    return [*(["--gpus", str(gpus)] if gpus else []), *(["--gpu-memory", f"{gpu_memory_gib:g}"] if gpu_memory_gib else [])]


def job_name(shot) -> str:
    return f"vera_{shot.spec.name}"


def submit(spec_path: str | Path, backend: str, jobdir: str | Path, launch: bool = False, force: bool = False,
           **options) -> JobInfo:
    """Validate the shot, write `backend`'s job files into `jobdir`, and (launch) submit them.

    The shot's output folder is registered first: outputs rendered there with other settings make the
    submission fail now (every task would refuse them) unless `force`, which discards them here, once.
    options: executable (vera-render as the nodes see it), priority, pool, group (Deadline), show (OpenCue),
    gpus (per render task) and gpu_memory (GiB per GPU: the planner must fit the shot's window into it).
    """
    if backend not in BACKENDS:
        raise BadInput(f"unknown farm '{backend}' (one of: {', '.join(BACKENDS)})")

    module = importlib.import_module(BACKENDS[backend])
    options = {k: v for k, v in options.items() if v is not None}
    if hasattr(module, "check_options"):  # before anything is written
        module.check_options(**options)
    jobdir = Path(jobdir).resolve()
    if jobdir.exists() and not jobdir.is_dir():
        raise BadInput(f"{jobdir}: --out names an existing file; give a folder for the job files")
    shot = load_shot(spec_path)
    gpus = options.get("gpus")
    check_gpus(shot, 1 if gpus is None else gpus, options.get("gpu_memory"))
    prepare_manifest(shot, force)
    return module.write_job(shot, _writable_folder(jobdir), launch=launch, **options)


def _writable_folder(jobdir: Path) -> Path:
    """`jobdir`, created if needed and proven writable (an OSError here is the machine's answer, vera.errors)."""
    jobdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=jobdir):
        pass
    return jobdir
