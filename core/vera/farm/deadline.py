"""Deadline 10 backend: two CommandLine-plugin jobs, the second depending on the first.

    JOBDIR/render.job.info   + render.plugin.info     Frames = window indices, ChunkSize 1: one task per window,
                                                      Arguments "run SPEC --window <STARTFRAME> --progress deadline"
    JOBDIR/assemble.job.info + assemble.plugin.info   one task; JobDependencies = the render job's id

Deadline hands out a job's id only when it is submitted, so the order is: submit the render job
(`deadlinecommand render.job.info render.plugin.info`), read `JobID=...` from its output, write that id into
assemble.job.info as JobDependencies, then submit the assemble job. `--launch` does exactly this when
`deadlinecommand` is on the PATH; by hand, the same two commands with the id pasted in between.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from vera.atomic import atomic_write_text
from vera.errors import BadInput, TransientError
from vera.farm import JobInfo, job_name, task_commands, vera_executable

WINDOW_TOKEN = "<STARTFRAME>"
TASK_ERRORS_BEFORE_FAILING = 3  # a task that failed this often stops being retried (bad input fails every time)
_JOB_ID = re.compile(r"^\s*JobID=(\S+)", re.M)


def check_options(priority: int = 50, pool: str = "", group: str = "", **_ignored) -> None:
    """Refuse what Deadline would reject or misread: a priority outside 0-100 (Deadline's range), and a pool
    or group that would break its key=value info file (a line break or other control character)."""
    if type(priority) is not int or not 0 <= priority <= 100:
        raise BadInput(f"--priority {priority!r}: Deadline priorities are 0-100")
    for option, value in (("--pool", pool), ("--group", group)):
        if any(ord(c) < 32 or ord(c) == 127 for c in str(value)):
            raise BadInput(f"{option} {value!r}: a Deadline {option[2:]} name cannot hold a line break or "
                           "other control character")


def _info_text(entries: dict) -> str:
    """Deadline's key=value info file (keys kept in order; values on one line)."""
    for key, value in entries.items():
        if "\n" in str(value) or "\r" in str(value):
            raise BadInput(f"Deadline info value for {key} spans lines: {value!r}")
    return "".join(f"{key}={value}\n" for key, value in entries.items())


def read_info(path: str | Path) -> dict:
    """Parse a key=value info file (the inverse of what write_job writes)."""
    entries = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            entries[key.strip()] = value
    return entries


def _arguments(args: list[str]) -> str:
    """Deadline's Arguments string: paths in double quotes (they may hold spaces), tokens bare.

    The CommandLine plugin's task splits it by Windows' CommandLineToArgvW rules, where '"' ends a quoted
    argument and backslashes before a '"' escape it: a path holding '"' is refused (no path needs one), and
    one ending in '\\' would escape its closing quote, so those backslashes are doubled.
    """
    for arg in args:
        if '"' in arg:
            raise BadInput(f"{arg}: holds a double quote (\"), which Deadline's CommandLine plugin would split "
                           "the task's arguments at; rename the file or folder without it")
    return " ".join(f'"{_closing_backslashes(a)}"' if ("/" in a or " " in a or "\\" in a) else a for a in args)


def _closing_backslashes(arg: str) -> str:
    """`arg` with its trailing backslashes doubled, so that the closing quote stays a quote."""
    bare = arg.rstrip("\\")
    return bare + "\\" * 2 * (len(arg) - len(bare))


def gpu_entries(gpus: int | None, gpu_memory_gib: float | None) -> tuple[dict, dict]:
    """(job info, plugin info) entries for GPUs per render task.

    Deadline 10 has no job-level GPU count that its scheduler matches against a Worker: GPUs per task are the
    plugin info key `GPUsPerTask`, which GPU renderer plugins read together with the Worker's GPU affinity (the
    CommandLine plugin does not), so machines with enough GPUs are chosen by `Group`. The request is also
    written as job extra info (`ExtraInfoKeyValueN=key=value`, shown in the Monitor) for event plugins and
    people; `--devices N` in the task's command is what makes the task use them."""
    job, plugin, extra = {}, {}, []
    if gpus:
        plugin["GPUsPerTask"] = int(gpus)
        extra.append(f"GPUsPerTask={int(gpus)}")
    if gpu_memory_gib:
        extra.append(f"GPUMemoryGiB={gpu_memory_gib:g}")
    for i, entry in enumerate(extra):
        job[f"ExtraInfoKeyValue{i}"] = entry
    return job, plugin


def build_files(shot, executable: str, priority: int = 50, pool: str = "", group: str = "", gpus: int | None = None,
                gpu_memory_gib: float | None = None) -> dict[str, dict]:
    """The four info files as {file name: {key: value}}; assemble's JobDependencies is filled in at submission."""
    render, assemble = task_commands(shot, executable, "deadline", WINDOW_TOKEN, gpus or 1)
    gpu_job, gpu_plugin = gpu_entries(gpus, gpu_memory_gib)
    name = job_name(shot)
    common = {"Plugin": "CommandLine", "BatchName": name, "Priority": priority}
    if pool:
        common["Pool"] = pool
    if group:
        common["Group"] = group
    common.update({"OverrideTaskFailureDetection": "True", "FailureDetectionTaskErrors": TASK_ERRORS_BEFORE_FAILING,
                   "OutputDirectory0": str(shot.out_dir)})
    last = len(shot.windows) - 1
    startup = str(shot.spec_path.parent)
    return {
        "render.job.info": {"Name": f"{name} render", **common, "Frames": f"0-{last}" if last else "0",
                            "ChunkSize": 1,
                            "Comment": f"{len(shot.windows)} window(s) of frames "
                                       f"{shot.spec.plate.first}-{shot.spec.plate.last}", **gpu_job},
        "render.plugin.info": {"Executable": render[0], "Arguments": _arguments(render[1:]),
                               "StartupDirectory": startup, "Shell": "default", "ShellExecute": "False",
                               **gpu_plugin},
        "assemble.job.info": {"Name": f"{name} assemble", **common, "Frames": "0", "ChunkSize": 1,
                              "Comment": "cross-fade the windows into the final frames"},
        "assemble.plugin.info": {"Executable": assemble[0], "Arguments": _arguments(assemble[1:]),
                                 "StartupDirectory": startup, "Shell": "default", "ShellExecute": "False"},
    }


def _deadlinecommand(*args: str) -> str:
    """Run deadlinecommand; returns the submitted job's id."""
    result = subprocess.run(["deadlinecommand", *args], capture_output=True, text=True)
    found = _JOB_ID.search(result.stdout)
    if result.returncode or not found:
        detail = (result.stdout + result.stderr).strip().splitlines()
        raise TransientError(f"deadlinecommand {' '.join(args)} failed (exit {result.returncode}): "
                             f"{detail[-1] if detail else 'no output'}")
    return found.group(1)


def write_job(shot, jobdir: Path, launch: bool = False, executable: str | None = None, priority: int = 50,
              pool: str = "", group: str = "", gpus: int | None = None, gpu_memory: float | None = None,
              **_ignored) -> JobInfo:
    check_options(priority, pool, group)
    executable = vera_executable(executable)
    files = build_files(shot, executable, priority, pool, group, gpus, gpu_memory)
    paths = {name: jobdir / name for name in files}
    for name, entries in files.items():
        atomic_write_text(paths[name], _info_text(entries))
    render, assemble = task_commands(shot, executable, "deadline", WINDOW_TOKEN, gpus or 1)
    info = JobInfo("deadline", str(jobdir), shot.spec.name, str(shot.spec_path), len(shot.windows),
                   [str(p) for p in paths.values()], render, assemble,
                   ["deadlinecommand", str(paths["render.job.info"]), str(paths["render.plugin.info"])],
                   gpus=gpus or 1, gpu_memory_gib=gpu_memory)
    if launch:
        if not shutil.which("deadlinecommand"):
            raise BadInput("--launch needs deadlinecommand on the PATH (Deadline client's bin folder); the job "
                           f"files are in {jobdir}")
        render_id = _deadlinecommand(str(paths["render.job.info"]), str(paths["render.plugin.info"]))
        # The dependency can only name the render job now that it exists.
        files["assemble.job.info"]["JobDependencies"] = render_id
        atomic_write_text(paths["assemble.job.info"], _info_text(files["assemble.job.info"]))
        assemble_id = _deadlinecommand(str(paths["assemble.job.info"]), str(paths["assemble.plugin.info"]))
        info.launched = True
        info.job_ids = {"render": render_id, "assemble": assemble_id}
    return info
