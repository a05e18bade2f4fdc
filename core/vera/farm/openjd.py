"""Open Job Description backend: JOBDIR/template.yaml (jobtemplate-2023-09).

Two steps: `Render` with one task per window (task parameter `Window`, an INT range over the window indices)
and `Assemble`, which depends on it. The template is built as plain data and checked by openjd-model before it
is written, so what lands on disk is a valid template (`openjd check` agrees). JOBDIR is also a Deadline Cloud
job bundle (`deadline bundle submit JOBDIR`). Run it locally, the whole shot:

    openjd run JOBDIR/template.yaml --step Assemble --run-dependencies

`--launch` does exactly that with the `openjd` CLI (there is no other OpenJD scheduler to hand it to here).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from openjd.model import DecodeValidationError, decode_job_template

from vera.atomic import atomic_write_text
from vera.errors import BadInput, VeraError
from vera.farm import JobInfo, job_name, task_commands, vera_executable

SPECIFICATION = "jobtemplate-2023-09"
TEMPLATE_FILE = "template.yaml"
RENDER_STEP, ASSEMBLE_STEP = "Render", "Assemble"
WINDOW_PARAM = "Window"
WINDOW_TOKEN = "{{Task.Param.Window}}"


def host_requirements(gpus: int | None, gpu_memory_gib: float | None) -> dict | None:
    """OpenJD's step hostRequirements for GPUs: the standard amount capabilities `amount.worker.gpu` (count) and
    `amount.worker.gpu.memory` (the least memory of any GPU on the host, in MiB: jobtemplate-2023-09 §3.3.1.1)."""
    amounts = []
    if gpus:
        amounts.append({"name": "amount.worker.gpu", "min": int(gpus)})
    if gpu_memory_gib:
        amounts.append({"name": "amount.worker.gpu.memory", "min": math.ceil(gpu_memory_gib * 1024)})
    return {"amounts": amounts} if amounts else None


def build_template(shot, executable: str, gpus: int | None = None, gpu_memory_gib: float | None = None) -> dict:
    """The job template as data (the dict that becomes template.yaml).

    The spec is a STRING parameter holding its absolute path: OpenJD only allows a PATH parameter's default
    inside the template's folder, and the spec stays where its relative plate paths make sense."""
    render, assemble = task_commands(shot, "{{Param.VeraRender}}", "openjd", WINDOW_TOKEN, gpus or 1)
    spec_token = "{{Param.ShotSpec}}"
    render = [spec_token if arg == str(shot.spec_path) else arg for arg in render]
    assemble = [spec_token if arg == str(shot.spec_path) else arg for arg in assemble]
    last = len(shot.windows) - 1
    render_step = {
        "name": RENDER_STEP,
        "description": "Render one window of frames into the shot's cache (exit 3: transient, retry).",
        "parameterSpace": {"taskParameterDefinitions": [
            {"name": WINDOW_PARAM, "type": "INT", "range": f"0-{last}" if last else "0"}]},
        "script": {"actions": {"onRun": {"command": render[0], "args": render[1:]}}}}
    requirements = host_requirements(gpus, gpu_memory_gib)
    if requirements:
        render_step["hostRequirements"] = requirements
    return {
        "specificationVersion": SPECIFICATION,
        "name": job_name(shot),
        "description": f"Vera: shot {shot.spec.name}, frames {shot.spec.plate.first}-{shot.spec.plate.last} "
                       f"as {len(shot.windows)} window(s), then assemble into {shot.out_dir}",
        "parameterDefinitions": [
            {"name": "ShotSpec", "type": "STRING", "default": str(shot.spec_path),
             "description": "The shot spec (JSON) every task reads, by absolute path."},
            {"name": "VeraRender", "type": "STRING", "default": executable,
             "description": "The vera-render executable as the workers see it."},
        ],
        "steps": [
            render_step,
            {"name": ASSEMBLE_STEP,
             "description": "Cross-fade the windows' overlaps and write the final frames.",
             "dependencies": [{"dependsOn": RENDER_STEP}],
             "script": {"actions": {"onRun": {"command": assemble[0], "args": assemble[1:]}}}},
        ],
    }


def check_template(template: dict) -> None:
    """Raise BadInput unless openjd-model accepts the template."""
    try:
        decode_job_template(template=template)
    except DecodeValidationError as exc:
        raise BadInput(f"the generated OpenJD template is not valid: {exc}") from None


def write_job(shot, jobdir: Path, launch: bool = False, executable: str | None = None, gpus: int | None = None,
              gpu_memory: float | None = None, **_ignored) -> JobInfo:
    executable = vera_executable(executable)
    template = build_template(shot, executable, gpus, gpu_memory)
    check_template(template)
    path = jobdir / TEMPLATE_FILE
    atomic_write_text(path, yaml.safe_dump(template, sort_keys=False, width=120))
    render, assemble = task_commands(shot, executable, "openjd", WINDOW_TOKEN, gpus or 1)
    openjd = shutil.which("openjd") or str(Path(sys.executable).parent / "openjd")
    launch_command = [openjd, "run", str(path), "--step", ASSEMBLE_STEP, "--run-dependencies"]
    info = JobInfo("openjd", str(jobdir), shot.spec.name, str(shot.spec_path), len(shot.windows), [str(path)],
                   render, assemble, launch_command, gpus=gpus or 1, gpu_memory_gib=gpu_memory)
    if launch:
        if not Path(openjd).is_file():
            raise BadInput("--launch needs the openjd CLI (pip install openjd-cli); "
                           f"the job is written to {path}")
        # Runs every task here, streaming its log; a failed task makes openjd exit non-zero.
        result = subprocess.run(launch_command)
        if result.returncode:
            raise VeraError(f"{path}: `openjd run` failed with exit code {result.returncode} (see its log above)")
        info.launched = True
    return info
