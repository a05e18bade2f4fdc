"""`vera-train distill` and `vera-train distill-export`: registered into vera-train (vera.train.cli)."""

from __future__ import annotations

import sys
from pathlib import Path

from vera.errors import BadInput
from vera.progress import add_progress_argument
from vera.train.checkpoints import list_checkpoints
from vera.train.distill import DistillConfig, distill, export_student, load_config, report


def register(subparsers) -> None:
    d = subparsers.add_parser(
        "distill", help="distill a bundle into a few-step student (guidance folded in) for speed turbo",
        description="Train a few-step student of a bundle against the teacher's guided sampling trajectory "
                    "(docs/training.md) and write it into a bundle (student.safetensors + bundle.json's student "
                    "entry), which `--speed turbo` samples with. Under torchrun every process takes its slice of "
                    "each global batch (DDP or FSDP2). Re-running with the same --out resumes exactly.")
    d.add_argument("--config", help="distill config, JSON or YAML (default: every default, teacher the demo)")
    d.add_argument("--data", required=True, help="dataset folder: the clips, masks and prompts to condition on")
    d.add_argument("--out", required=True, help="run folder: config.json, log.jsonl, checkpoints/, bundle/")
    d.add_argument("--bundle-out", help="bundle folder to write the student into (default OUT/bundle, a copy of "
                                        "the teacher; the teacher's own folder adds the student to it)")
    d.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    d.add_argument("--max-minutes", type=float, help="wall-clock budget: stop, checkpoint and export")
    d.add_argument("--max-steps", type=int, help="stop at this step (a shorter run of the same schedule)")
    d.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in OUT")
    add_progress_argument(d)
    d.set_defaults(func=run_distill)

    e = subparsers.add_parser("distill-export", help="write the student of a distill checkpoint into a bundle",
                              description="A bundle with the student of a `vera-train distill` checkpoint (a "
                                          "step_N/ folder or step_N.safetensors, or the newest of a run folder).")
    e.add_argument("checkpoint", help="a checkpoint or a distill run folder")
    e.add_argument("--out", required=True, help="bundle folder to write (a copy of the teacher plus the student)")
    e.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA (when the run kept one)")
    e.set_defaults(func=run_export)


def run_distill(args) -> int:
    cfg = load_config(args.config) if args.config else DistillConfig()
    report(distill(cfg, args.data, args.out, device=args.device, max_minutes=args.max_minutes,
                   max_steps=args.max_steps, resume=not args.no_resume, bundle_out=args.bundle_out,
                   progress=args.progress))
    return 0


def run_export(args) -> int:
    checkpoint = Path(args.checkpoint)
    if (checkpoint / "config.json").is_file():
        found = list_checkpoints(checkpoint)
        if not found:
            raise BadInput(f"{checkpoint}: no checkpoints in this run folder")
        checkpoint = found[-1]
    folder = export_student(checkpoint, args.out, use_ema=not args.raw)
    print(f"wrote bundle {folder} with the student of {checkpoint}", file=sys.stderr)
    return 0
