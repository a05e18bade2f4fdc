"""Subcommands about the network: `model-info` (sizes, on the meta device) and `convert` (Wan2.1 -> Vera)."""

from __future__ import annotations

from vera.cli import later
from vera.model.configs import CONFIGS

DTYPES = {"keep": None, "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}  # --dtype


def register(subparsers) -> None:
    info = subparsers.add_parser(
        "model-info", help="parameters per stream and in total for a named configuration (nothing is allocated)")
    info.add_argument("--config", required=True, metavar="NAME", help=f"one of: {', '.join(CONFIGS)}")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=later("vera.cli.model_run:print_model_info"))

    convert = subparsers.add_parser(
        "convert", help="build a Vera checkpoint from a Wan2.1 T2V transformer checkpoint (all three streams)")
    convert.add_argument("--from-wan", required=True, metavar="SOURCE",
                         help="a .safetensors/.pth file, an index JSON of shards, or a folder holding either")
    convert.add_argument("--out", required=True, metavar="FILE", help="the Vera checkpoint to write (.safetensors)")
    convert.add_argument("--config", metavar="NAME", help="configuration (default: inferred from the weights)")
    convert.add_argument("--dtype", choices=sorted(DTYPES), default="keep",
                         help="store the weights in this dtype (default: as the source)")
    convert.set_defaults(func=later("vera.cli.model_run:convert"))


