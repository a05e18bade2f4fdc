"""`vera-render`: one entry point, one subcommand per job.

Each area of the engine registers its own subcommands from its own module (listed in COMMAND_MODULES), so
the CLI stays one thin layer. Errors become one line on stderr and an exit code (vera.errors).

Lazy dispatch, the one place vera imports a module inside a function: the modules that declare subcommands are
light (argparse, the spec, the manifest, the planner), and a subcommand whose work needs torch names its
handler as "module:function" (`later`), imported only when that subcommand runs. So `--help`, `validate`,
`status`, `plan` and `submit` start without torch (tests/engine/test_cli_light.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from vera import __version__
from vera.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_TRANSIENT, VeraError, machine_error

# Each module has `register(subparsers)` adding its subcommands; each subcommand sets `func(args) -> int`.
COMMAND_MODULES = [
    "vera.cli.io_cmds",      # comp, qc
    "vera.cli.model_cmds",   # model-info, convert
    "vera.cli.render_cmds",  # validate, run, assemble, status, submit
    "vera.cli.demo_cmd",     # demo
    "vera.cli.plan_cmd",     # plan
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vera-render",
        description="Vera: layered video edits (edit layer + alpha matte) over the untouched plate.",
    )
    parser.add_argument("--version", action="version", version=f"vera {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def later(target: str):
    """The handler "module:function" of a subcommand, imported when the subcommand runs (lazy dispatch)."""
    module, _, name = target.partition(":")

    def run(args) -> int:
        return getattr(importlib.import_module(module), name)(args)

    run.target = target
    return run


def frame_size(text: str) -> tuple[int, int]:
    """argparse type of a `WIDTHxHEIGHT` option (vera-render plan, vera-train synth/plan)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 832x480, got {text!r}") from None
    return width, height


def main(argv: list[str] | None = None) -> int:
    return working_directory_gone("vera-render") or run_command(build_parser(), argv)


def working_directory_gone(prog: str) -> int:
    """EXIT_TRANSIENT (after one line) when the current folder was deleted, else 0. Called before the parser is
    built, since a subcommand may load torch, whose MKL loader exits the process (code 2) from a deleted
    folder. Transient: the task's folder was removed under it; a retry starts in a fresh one."""
    try:
        os.getcwd()
    except FileNotFoundError:
        print(f"{prog}: error: the current working directory was deleted; start vera from an existing folder",
              file=sys.stderr)
        return EXIT_TRANSIENT
    return 0


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, run `args.func`, and turn every failure into one line on stderr and an exit code.

    Shared by every Vera console script (`vera-render`, `vera-train`) so they fail the same way.
    """
    prog = parser.prog
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VeraError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        refused = machine_error(exc)
        if refused is not None:
            print(f"{prog}: error: {refused}", file=sys.stderr)
            return refused.exit_code
        return _internal(prog, exc)


def _internal(prog: str, exc: BaseException) -> int:
    print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    if os.environ.get("VERA_DEBUG"):
        traceback.print_exc()
    else:
        print(f"{prog}: set VERA_DEBUG=1 for the traceback", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main", "build_parser", "run_command", "EXIT_BAD_INPUT"]
