"""`vera-render demo`: a real edit by the embedded demo model on a procedural plate (vera.demo)."""

from __future__ import annotations

import argparse

from vera.cli import later
from vera.cli.render_cmds import add_speed_arguments
from vera.progress import add_progress_argument


def register(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="edit a procedural plate with the embedded demo model and write a contact sheet",
        description="Make a procedural plate (or take --plate), render it with the embedded demo model through "
                    "the same path as a real shot, and write DIR/shot.json, plate/, layers/, comp/, qc.json and "
                    "contact_sheet.png. The demo model understands the grammar in docs/demo-model.md.")
    demo.add_argument("--out", default="vera-demo", help="output folder (default ./vera-demo)")
    demo.add_argument("--prompt", default=None, help='the edit (default "add a red ball moving left")')
    demo.add_argument("--plate", help="a plate sequence pattern (e.g. plate.####.exr) instead of the procedural one")
    demo.add_argument("--colorspace", help="the plate's OCIO colour space (default sRGB - Texture)")
    demo.add_argument("--frames", type=int, help="number of frames (default: the model's window)")
    demo.add_argument("--seed", type=int, default=0, help="plate and sampling seed (default 0)")
    demo.add_argument("--bundle", default="demo", help=argparse.SUPPRESS)
    add_speed_arguments(demo, "balanced")
    add_progress_argument(demo)
    demo.set_defaults(func=later("vera.cli.demo_run:run"))
