"""Subcommands of the farm side: validate, run, assemble, status, calibrate, submit (docs/farm.md,
docs/shot-spec.md). Declarations only: each handler is imported when its subcommand runs (vera.cli.later): validate and submit
(vera.cli.shot_run) and status (vera.cli.status_run) without torch; run, assemble and calibrate load the model
(vera.cli.render_run; `run --devices N` first goes through vera.cli.launch_run, whose parent process only starts
the workers)."""

from __future__ import annotations

from vera.cli import later
from vera.farm import BACKENDS
from vera.model.attention_names import CHOICES as ATTENTION_CHOICES
from vera.plan import MEMORY_CHOICES
from vera.presets import PRESETS
from vera.progress import add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser("validate", help="check a shot spec and report every problem at once")
    p.add_argument("spec", metavar="SHOT.json")
    p.add_argument("--json", action="store_true", help="print {valid, problems} as JSON")
    p.set_defaults(func=later("vera.cli.shot_run:validate_spec"))

    p = subparsers.add_parser("run", help="render a shot (every window, then assemble) or one window (--window)")
    p.add_argument("spec", metavar="SHOT.json")
    p.add_argument("--window", type=int, metavar="N", help="render only window N (what one farm task does)")
    add_speed_arguments(p, "the spec's speed")
    add_attention_argument(p, "the spec's model.attention")
    _add_force(p)
    add_progress_argument(p)
    _add_device_options(p)
    p.set_defaults(func=later("vera.cli.launch_run:run"))

    p = subparsers.add_parser("assemble", help="cross-fade the rendered windows into the final frames")
    p.add_argument("spec", metavar="SHOT.json")
    _add_force(p)
    add_progress_argument(p)
    p.set_defaults(func=later("vera.cli.render_run:assemble_shot"))

    p = subparsers.add_parser("status", help="done, missing and failed frames and windows of an output folder")
    p.add_argument("out_dir", metavar="OUTDIR", help="the shot's output folder, its shot spec, or a folder holding "
                                                     "shot.json (e.g. vera-render demo's --out)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--verify", action="store_true", help="also check every final frame's sha256")
    p.set_defaults(func=later("vera.cli.status_run:report_status"))

    p = subparsers.add_parser("calibrate", help="measure a bundle's step-cache curve on shots and write speed.json",
                              description="Render the first window of each shot at the full recipe, measure how "
                                          "much the joint layers change the residual at each step, and write the "
                                          "curve to speed.json beside the shots' bundle.json (the balanced and "
                                          "preview speeds use it; the farm never calibrates).")
    p.add_argument("specs", metavar="SHOT.json", nargs="+")
    p.add_argument("--steps", type=int, help="sampler steps for the calibration (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--out", metavar="BUNDLE", help="write speed.json into this bundle folder, made as a copy of the "
                                                   "shots' bundle if it does not exist (needed for a bundle that "
                                                   "ships with Vera or is read-only)")
    add_progress_argument(p)
    p.set_defaults(func=later("vera.cli.render_run:calibrate_bundle"))

    p = subparsers.add_parser("submit", help="write (and optionally launch) a farm job for a shot")
    p.add_argument("spec", metavar="SHOT.json")
    p.add_argument("--farm", required=True, choices=sorted(BACKENDS), help="job format")
    p.add_argument("--out", required=True, metavar="JOBDIR", help="folder for the job files")
    p.add_argument("--launch", action="store_true", help="also submit the job to the farm")
    p.add_argument("--executable", metavar="PATH",
                   help="vera-render as the farm nodes see it (default: this one, by absolute path)")
    p.add_argument("--priority", type=int, default=50, help="job priority (Deadline 0-100, OpenCue)")
    p.add_argument("--pool", default="", help="Deadline pool")
    p.add_argument("--group", default="", help="Deadline group")
    p.add_argument("--show", default="", help="OpenCue show (default: $SHOW or 'vera')")
    p.add_argument("--gpus", type=int, metavar="N",
                   help="GPUs per render task, asked of the farm in its own terms; N > 1 runs --devices N")
    p.add_argument("--gpu-memory", type=float, metavar="GiB",
                   help="memory per GPU to ask for; the planner (vera-render plan) must fit a window into it")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    _add_force(p)
    p.set_defaults(func=later("vera.cli.shot_run:submit_job"))


def add_speed_arguments(p, default: str) -> None:
    p.add_argument("--speed", choices=PRESETS,
                   help=f"quality: the full recipe; balanced: step caching with a negligible measured loss; "
                        f"preview: fewer steps, guidance schedule, stronger caching; turbo: the bundle's distilled "
                        f"few-step student, one forward per step (`vera-train distill`) (default: {default})")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the joint layer once (regional) and reuse it at every depth; the first "
                        "forward's time, compile included, is printed")


def add_attention_argument(p, default: str) -> None:
    p.add_argument("--attention", choices=ATTENTION_CHOICES, metavar="KERNEL",
                   help=f"the joint attention's kernel, through diffusers' dispatcher: auto (the fastest exact one "
                        f"this device runs; native on a CPU), native, _native_cudnn, _native_flash, flash, sage, "
                        f"... (one of: {', '.join(ATTENTION_CHOICES)}; default: {default})")


def _add_force(p) -> None:
    p.add_argument("--force", "--overwrite", dest="force", action="store_true",
                   help="discard outputs rendered with other settings or inputs, and re-render")


def _add_device_options(p) -> None:
    p.add_argument("--devices", type=int, default=1, metavar="N",
                   help="worker processes, one GPU each (gloo processes on a CPU); rank 0 writes the files")
    p.add_argument("--memory", choices=MEMORY_CHOICES, default="auto",
                   help="where weights live on each device: resident; parts (VAE on the device only while it "
                        "runs); layers (also the transformer's blocks streamed from CPU memory); auto asks the "
                        "planner (resident without a GPU). See docs/gpus.md")
    p.add_argument("--fp8", action="store_true", help="store the transformer's weights as float8, compute in bf16")


