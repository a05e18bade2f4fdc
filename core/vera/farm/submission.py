"""`submit(spec_path, backend, jobdir, launch=False)`: validate the shot, check its GPUs with the planner, register
its output folder, and write (and launch) one backend's job files. The backends and what they share live in
vera.farm, which stays light for the CLI's declarations."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

from vera.errors import BadInput, machine_error
from vera.farm import BACKENDS, JobInfo
from vera.layout import load_shot
from vera.manifest import prepare_manifest
from vera.plan import bundle_components, plan, require_fit


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
    try:
        jobdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=jobdir):
            pass
    except OSError as exc:
        refused = machine_error(exc)
        raise refused or BadInput(f"{jobdir}: cannot create the job folder here ({exc.strerror or exc})") from None
    return jobdir
