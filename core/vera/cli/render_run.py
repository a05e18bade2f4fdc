"""The handlers of `vera-render run`, `assemble` and `calibrate` (declared in vera.cli.render_cmds): they load
the model, so the CLI imports this module only when one of them runs (vera.cli.later; `run` through
vera.cli.launch_run, which starts the workers of --devices N without it)."""

from __future__ import annotations

import sys

from vera.calibrate import calibrate
from vera.calibration_target import calibration_folder
from vera.layout import load_shot
from vera.presets import CALIBRATION_FILE, write_calibration
from vera.progress import Progress
from vera.render import assemble
from vera.workers import run_shot


def run(args) -> int:
    shot = load_shot(args.spec)
    if args.speed:
        shot.spec.speed = args.speed
    if args.attention:
        shot.spec.model.attention = args.attention
    result = run_shot(shot, window=args.window, force=args.force, progress=args.progress, memory=args.memory,
                      fp8=args.fp8, compile=args.compile)
    if result is None:  # a worker that served rank 0, which reports
        return 0
    if args.window is not None:
        print(f"{shot.spec.name}: window {args.window} {result['result']}", file=sys.stderr)
    else:
        rendered = sum(1 for r in result["windows"].values() if r == "rendered")
        counts = result["assemble"]
        print(f"{shot.spec.name}: {rendered} of {len(shot.windows)} windows rendered, "
              f"{counts['written']} frames written, {counts['skipped']} kept -> {shot.out_dir}", file=sys.stderr)
    return 0


def calibrate_bundle(args) -> int:
    folder = calibration_folder(args.specs, args.out)  # never a shipped or read-only bundle
    with Progress(len(args.specs), "calibrate", args.progress) as bar:
        _, data = calibrate(args.specs, steps=args.steps, seed=args.seed, progress=bar)
    write_calibration(folder, data)
    print(f"{folder}/{CALIBRATION_FILE}: step-cache curve from {len(args.specs)} shot(s) at "
          f"{data['calibrated']['steps']} steps", file=sys.stderr)
    return 0


def assemble_shot(args) -> int:
    shot = load_shot(args.spec)
    counts = assemble(shot, force=args.force, progress=args.progress)
    print(f"{shot.spec.name}: {counts['written']} frames written, {counts['skipped']} kept -> {shot.out_dir}",
          file=sys.stderr)
    return 0
