"""The handler of `vera-render demo` (declared in vera.cli.demo_cmd): it renders with the embedded model, so the
CLI imports this module only when the demo runs (vera.cli.later)."""

from __future__ import annotations

import sys

from vera.demo import DEFAULT_PROMPT, run_demo


def run(args) -> int:
    result = run_demo(out=args.out, prompt=args.prompt or DEFAULT_PROMPT, plate=args.plate,
                      colorspace=args.colorspace, seed=args.seed, frames=args.frames, bundle=args.bundle,
                      progress=args.progress, speed=args.speed, compile=args.compile)
    print(f"{result['task']}: {result['prompt']!r}, {result['frames']} frames in {result['seconds']} s; "
          f"QC {'passed' if result['qc_passed'] else 'FAILED'}; contact sheet: {result['out']}/contact_sheet.png",
          file=sys.stderr)
    return 0 if result["qc_passed"] else 4
