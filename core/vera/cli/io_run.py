"""The handlers of `vera-render comp` and `qc` (declared in vera.cli.io_cmds), imported when one of them runs
(vera.cli.later)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vera.atomic import atomic_write_text
from vera.comp import Inputs, comp_sequence, qc_sequence
from vera.errors import EXIT_QC_FAILED, BadInput
from vera.files import refuse_overwrite
from vera.layout import edit_pattern, load_spec_named
from vera.plates import open_sequence
from vera.progress import Progress
from vera.status import superseded_lines
from vera.takes import superseded_takes


def _inputs(args):
    if args.shot is not None:  # the shot's own inputs; --plate, --edit, --first, --last, --view still win
        spec = load_spec_named(args.shot)
        plate = spec.plate
        return Inputs(args.plate or spec.resolve(plate.path), args.edit or edit_pattern(spec),
                      plate.first if args.first is None else args.first,
                      plate.last if args.last is None else args.last, plate.layer, args.nonfinite, plate.start_frame,
                      args.view or plate.view)
    if not args.plate or not args.edit:
        raise BadInput("give a SHOT (spec or folder with shot.json), or both --plate and --edit")
    return Inputs(args.plate, args.edit, args.first, args.last, args.layer, args.nonfinite, args.start_frame,
                  args.view)


def run_comp(args) -> int:
    inputs = _inputs(args)
    with Progress(len(inputs.frames), "comp", args.progress) as progress:
        written = comp_sequence(inputs, args.out, args.compression, progress)
    print(f"comp: wrote {len(written)} frames to {args.out}", file=sys.stderr)
    return 0


def run_qc(args) -> int:
    if args.json not in (None, "-") and Path(args.json).is_dir():  # refused before any frame is read
        raise BadInput(f"{args.json}: --json names a folder; give a file name for the report")
    inputs = _inputs(args)
    if args.json and args.json != "-":  # the report may not replace a plate, edit or composite frame

        read = inputs.files()
        if args.comp:
            comp = open_sequence(args.comp, inputs.frames[0], inputs.frames[-1])
            read += [(comp.path(f), f) for f in comp.frames]
        refuse_overwrite(read, [args.json])
    with Progress(len(inputs.frames), "qc", args.progress) as progress:
        report = qc_sequence(inputs, comp=args.comp, progress=progress)
    s = report["summary"]
    # takes a --force moved out of this sequence (vera.takes): not QC'd, named so nobody is surprised
    report["superseded"] = superseded_takes(Path(inputs.edit.pattern).parent)
    to_stdout = args.json == "-"
    human = sys.stderr if to_stdout else sys.stdout
    if not to_stdout:
        for f in report["frames"]:
            negative = f"  negative alpha in {f['negative_alpha']} pixels" if f["negative_alpha"] else ""
            print(f"frame {f['frame']}: touched {100 * f['touched']:.2f}%  max untouched diff "
                  f"{f['max_untouched_diff']:g}{negative}{_comp_text(f)}  {'ok' if f['passed'] else 'FAILED'}",
                  file=human)
    verdict = "passed" if s["passed"] else f"FAILED on frames {s['failed_frames']}" if s["failed_frames"] else \
        "FAILED: edit frames made with different settings: " + \
        ", ".join(f"{frames} ({key})" for key, frames in s["settings"].items())
    print(f"qc: {s['frames']} frames ({s['frame_range']}), touched mean {100 * s['touched_mean']:.2f}% "
          f"max {100 * s['touched_max']:.2f}%, max untouched diff {s['max_untouched_diff']:g}{_comp_text(s)}: "
          f"{verdict}",
          file=human)
    for line in superseded_lines(report["superseded"]):
        print(f"qc: {line.strip()}", file=human)
    text = json.dumps(report, indent=2) + "\n"
    if to_stdout:
        sys.stdout.write(text)
    elif args.json:
        atomic_write_text(args.json, text)
    return 0 if s["passed"] else EXIT_QC_FAILED


def _comp_text(result: dict) -> str:
    """The --comp check in words (frame or summary): how far the composite strays from the plate where the
    edit is untouched, and in how many pixels."""
    if result.get("comp_max_untouched_diff") is None:
        return ""
    return (f"  comp: max untouched diff {result['comp_max_untouched_diff']:g}, "
            f"{result['comp_changed_untouched']} untouched pixels differ from the plate")
