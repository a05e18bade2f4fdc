"""`vera-train fit` and `vera-train eval`: registered into vera-train (vera.train.cli) like every subcommand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vera.atomic import atomic_write_text

from vera.errors import BadInput

from vera.progress import add_progress_argument

from vera.train.checkpoints import list_checkpoints

from vera.train.config import load_config

from vera.train.evaluate import evaluate, format_report

from vera.train.export import export

from vera.train.fit import fit

from vera.train.paper_metrics import evaluate_paper, format_markdown, to_json


def register(subparsers) -> None:
    fit = subparsers.add_parser(
        "fit", help="train a Vera bundle on a layered dataset (flow matching on edit, alpha and composite)",
        description="Train a Vera bundle. Under torchrun every process trains on its own slice of each global "
                    "batch (DDP). Re-running with the same --out resumes from the last checkpoint exactly.")
    fit.add_argument("--config", required=True, help="run config, JSON or YAML (docs/training.md)")
    fit.add_argument("--data", required=True, help="dataset folder (vera-train synth output, layered EXR shots "
                                                   "or a public JSONL set)")
    fit.add_argument("--out", required=True, help="run folder: config.json, log.jsonl, checkpoints/, bundle/")
    fit.add_argument("--bundle-out", help="where to write the trained bundle (default OUT/bundle)")
    fit.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    fit.add_argument("--max-minutes", type=float, help="wall-clock budget: stop, checkpoint and export when "
                                                      "it is spent")
    fit.add_argument("--max-steps", type=int, help="stop at this step (a shorter run of the same schedule)")
    fit.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in OUT")
    add_progress_argument(fit)
    fit.set_defaults(func=run_fit)

    export = subparsers.add_parser(
        "export", help="turn a training checkpoint into an inference bundle that vera-render loads",
        description="Write a bundle (safetensors transformer, the run's VAE and text encoder, its sampler "
                    "defaults) from a checkpoint of `vera-train fit`: a sharded step_N/ folder or a "
                    "step_N.safetensors file, or the newest one of a run folder.")
    export.add_argument("checkpoint", help="a checkpoint (OUT/checkpoints/step_N[/.safetensors]) or a run folder")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    export.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                        help="weights' dtype (default: the run's export_dtype)")
    export.set_defaults(func=run_export)

    ev = subparsers.add_parser(
        "eval", help="measure a bundle on held-out synthetic shots through the render pipeline",
        description="Render each held-out shot with vera.pipeline.render_frames and measure matte IoU against "
                    "the ground truth, the added object's colour against the instruction, and whether every "
                    "untouched pixel is the plate's own.")
    ev.add_argument("--bundle", default="demo", help='bundle folder or "demo" (default)')
    ev.add_argument("--data", required=True, help="held-out dataset folder (vera-train synth, seeds not trained on)")
    ev.add_argument("--limit", type=int, help="evaluate only the first N shots")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the bundle's)")
    ev.add_argument("--speed", choices=("quality", "balanced", "preview", "turbo"), default="quality",
                    help="vera.presets preset to render with (default quality: the full recipe)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    ev.add_argument("--out", help="also write the report (JSON) here")
    ev.add_argument("--metrics", choices=("demo", "paper"), default="demo",
                    help="demo: matte IoU / colour / untouched pixels on layered EXR shots (default); paper: "
                         "PSNR / SSIM / LPIPS content preservation on public test-split records (.jsonl)")
    ev.add_argument("--lpips-weights", help="paper metrics: folder with local LPIPS weights (else LPIPS is "
                                            "skipped with a note)")
    ev.add_argument("--markdown", help="paper metrics: also write the table as Markdown here")
    add_progress_argument(ev)
    ev.set_defaults(func=run_eval)


def run_fit(args) -> int:
    cfg = load_config(args.config)
    summary = fit(cfg, args.data, args.out, device=args.device, max_minutes=args.max_minutes,
                  max_steps=args.max_steps, resume=not args.no_resume, bundle_out=args.bundle_out,
                  progress=args.progress)
    loss = "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.4f}"
    if summary.get("bundle") and summary["trained_steps"] == 0:
        print(f"already finished at step {summary['steps']}: nothing trained (raise `steps` to train on), final "
              f"loss {loss}; bundle: {summary['bundle']}", file=sys.stderr)
    elif summary.get("bundle"):
        print(f"trained {summary['steps']} steps in {summary['wall_s']} s, final loss {loss}; "
              f"bundle: {summary['bundle']}", file=sys.stderr)
    return 0


def run_export(args) -> int:
    checkpoint = Path(args.checkpoint)
    if (checkpoint / "config.json").is_file():  # a run folder: its newest checkpoint
        found = list_checkpoints(checkpoint)
        if not found:
            raise BadInput(f"{checkpoint}: no checkpoints in this run folder")
        checkpoint = found[-1]
    folder = export(checkpoint, args.out, use_ema=not args.raw, dtype=args.dtype)
    print(f"wrote bundle {folder} from {checkpoint}", file=sys.stderr)
    return 0


def run_eval(args) -> int:
    if args.metrics == "paper":
        report = evaluate_paper(args.bundle, args.data, limit=args.limit, seed=args.seed, steps=args.steps,
                                lpips_weights=args.lpips_weights, progress=args.progress)
        text, table = to_json(report), format_markdown(report)
        if args.markdown:
            atomic_write_text(args.markdown, table + "\n")
        if args.out:
            atomic_write_text(args.out, text)
        sys.stdout.write(text if args.json else table + "\n")
        return 0
    report = evaluate(args.bundle, args.data, limit=args.limit, seed=args.seed, steps=args.steps,
                      progress=args.progress, speed=args.speed)
    text = json.dumps(report, indent=2) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    if args.json:
        sys.stdout.write(text)
    else:
        print(format_report(report))
    return 0
