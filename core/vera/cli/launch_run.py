"""The handler of `vera-render run` (declared in vera.cli.render_cmds). With --devices N > 1, outside a worker,
this process only starts the N workers (vera.launch: torch's launcher, none of the model's libraries); each
worker, and every other `run`, renders through vera.cli.render_run, imported only then (vera.cli.later)."""

from __future__ import annotations

from vera.cli import later
from vera.launch import is_worker, launch_workers
from vera.layout import load_shot

render = later("vera.cli.render_run:run")


def worker_argv(args) -> list[str]:
    """The same `run` for each worker of --devices."""
    argv = ["run", args.spec, "--devices", str(args.devices), "--memory", args.memory, "--progress", args.progress]
    if args.window is not None:
        argv += ["--window", str(args.window)]
    argv += ["--speed", args.speed] if args.speed else []
    argv += ["--attention", args.attention] if args.attention else []
    return argv + ["--force"] * args.force + ["--fp8"] * args.fp8


def run(args) -> int:
    if args.devices > 1 and not is_worker():
        load_shot(args.spec)  # a bad spec: one line and exit 2 before any worker starts
        return launch_workers(args.devices, worker_argv(args))
    return render(args)
