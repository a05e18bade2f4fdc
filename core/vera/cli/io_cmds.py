"""Subcommands `comp` (edit over plate) and `qc` (prove the untouched pixels are the plate's)."""

from __future__ import annotations

import argparse

from vera.cli import later
from vera.progress import add_progress_argument

QC_EPILOG = """exit codes: 0 QC passed, 4 QC failed (an untouched pixel changed), 2 bad input, 1 internal error.
--json - prints the report on stdout (the summary line goes to stderr)."""


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plate", required=True, help="plate pattern: plate.####.exr, plate.%%04d.dpx, clip.mov ...")
    p.add_argument("--edit", required=True, help="edit layer pattern written by vera (edit.####.exr)")
    p.add_argument("--first", type=int, help="first frame (default: the plate's first)")
    p.add_argument("--last", type=int, help="last frame (default: the plate's last)")
    p.add_argument("--layer", default="rgba", help="EXR layer of the plate to use (default: rgba)")
    p.add_argument("--view", help="view of a multi-view (stereo) EXR plate (default: the file's default view; "
                                  "the shot spec's plate.view)")
    p.add_argument("--start-frame", type=int, default=1,
                   help="a movie plate's first frame number (default 1; the shot spec's plate.start_frame)")
    p.add_argument("--nonfinite", choices=("error", "zero"), default="error",
                   help="NaN/inf pixels in the inputs: refuse (default) or replace with 0")
    add_progress_argument(p)


def register(subparsers) -> None:
    comp = subparsers.add_parser(
        "comp", help="composite the edit layer over the plate (A + B(1-a)) into EXR files",
        description="Edit over plate, A + B(1 - a) in float32, written as EXR in the plate's pixel type and "
                    "display window (data window: the union of both). Agrees with "
                    "`oiiotool EDIT --ch R,G,B,A PLATE --ch R,G,B,A=1.0 --over`.",
        epilog="exit codes: 0 ok, 2 bad input, 1 internal error.")
    _add_inputs(comp)
    comp.add_argument("--out", required=True, help="output pattern, e.g. comp.####.exr")
    comp.add_argument("--compression", default="zip", help="EXR compression: none, rle, zips, zip (default), piz")
    comp.set_defaults(func=later("vera.cli.io_run:run_comp"))

    qc = subparsers.add_parser(
        "qc", help="check that every pixel the edit leaves untouched (alpha 0) stays the plate's, bit for bit",
        description="Per frame: the fraction of pixels touched (alpha > 0) and the largest |composite - plate| "
                    "where alpha is 0, which must be exactly 0.",
        epilog=QC_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inputs(qc)
    qc.add_argument("--comp", help="also check an existing composite sequence (e.g. rendered by Nuke) against the "
                                   "plate where alpha is 0")
    qc.add_argument("--json", metavar="PATH", help="write the report as JSON to PATH ('-': stdout)")
    qc.set_defaults(func=later("vera.cli.io_run:run_qc"))


