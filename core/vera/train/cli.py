"""`vera-train`: training data and training. `synth` and `check-data` live here; other areas add subcommands
from their own modules (SUBCOMMAND_MODULES, each with `register(subparsers)` setting `func(args) -> int`),
as `vera-render` does. A listed module that is not installed yet is skipped."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from vera import __version__
from vera.cli import frame_size, guarded, run_command, working_directory_gone
from vera.errors import EXIT_BAD_INPUT, EXIT_OK, BadInput
from vera.progress import Progress, add_progress_argument
from vera.shot import TASKS
from vera.train.data import check_dataset, find_samples
from vera.train.loader import cache_prompts, dataset_prompts, open_text_encoder
from vera.train.synth import generate, generate_public_test

SUBCOMMAND_MODULES = [
    "vera.train.fit_cmd",   # fit (the training loop)
    "vera.train.eval_cmd",  # eval
    "vera.train.plan_cmd",  # plan (the same planner as `vera-render plan`)
    "vera.train.distill_cmd",  # distill, distill-export (a few-step student for speed turbo)
]


def register_data_commands(sub) -> None:
    synth = sub.add_parser("synth", help="write procedural layered clips (layered EXR format)",
                           description="Write N procedural layered clips as layered EXR sample folders "
                                       "(docs/training.md). Sample i depends only on (seed, i).")
    synth.add_argument("--out", required=True, help="dataset folder to write (sample_#####/ folders)")
    synth.add_argument("--n", type=int, required=True, help="number of samples")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=frame_size, default=(128, 96), help="WIDTHxHEIGHT (default 128x96)")
    synth.add_argument("--frames", type=int, default=9, help="frames per clip, 4k+1 (default 9)")
    synth.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                       help="tasks to alternate between (default: all)")
    synth.add_argument("--format", choices=("exr", "public-test"), default="exr",
                       help="exr: layered EXR sample folders for training and `eval` (default); public-test: "
                            "the public test split (test.jsonl + MP4s) for `eval --metrics paper`")
    synth.add_argument("--jobs", type=int, default=1,
                       help="processes writing samples in parallel (exr format; default 1; the files are the same)")
    add_progress_argument(synth)
    synth.set_defaults(func=run_synth)

    check = sub.add_parser("check-data", help="validate a dataset and list every bad sample",
                           description="Validate a dataset (layered EXR or JSONL+MP4, detected). Every bad "
                                       "sample is reported by path with its reasons; exit 2 if any is bad.")
    check.add_argument("dataset", help="dataset folder, a sample folder, or a .jsonl file")
    check.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    check.add_argument("--full", action="store_true",
                       help="MP4s: decode every frame (default: headers and the first frame)")
    check.set_defaults(func=run_check_data)

    cache = sub.add_parser("cache-prompts", help="embed every prompt of a dataset into the prompt cache",
                           description="Encode each distinct prompt of a dataset (and the empty prompt of "
                                       "prompt drop) once with the bundle's text encoder into the prompt cache, "
                                       "so `vera-train fit` with `prompt_cache` set to the same folder never "
                                       "loads the text encoder. Prompts already cached are skipped.")
    cache.add_argument("--bundle", required=True, help='bundle folder or "demo": its text encoder is used')
    cache.add_argument("--data", required=True, help="dataset folder or .jsonl file (as for fit)")
    cache.add_argument("--cache", help="prompt cache folder, the run config's prompt_cache (default: "
                                       "$VERA_CACHE/prompts, the cache vera-render reads)")
    cache.add_argument("--device", default="auto", help="auto | cpu | cuda: the device type fit runs on "
                                                        "(the cache key holds the compute dtype)")
    add_progress_argument(cache)
    cache.set_defaults(func=run_cache_prompts)


def run_synth(args) -> int:
    if args.frames < 1 or (args.frames - 1) % 4:
        raise BadInput(f"--frames must be 4k+1 (1, 5, 9, 13, ...), got {args.frames}")
    with Progress(args.n, "synth", args.progress) as progress:
        if args.format == "public-test":
            path = generate_public_test(args.out, args.n, args.seed, args.size, args.frames, args.tasks,
                                        progress=progress)
            print(f"wrote {args.n} test records to {path}", file=sys.stderr)
            return EXIT_OK
        folders = generate(args.out, args.n, args.seed, args.size, args.frames, args.tasks, progress=progress,
                           jobs=args.jobs)
    print(f"wrote {len(folders)} samples to {args.out}", file=sys.stderr)
    return EXIT_OK


def run_check_data(args) -> int:
    report = check_dataset(args.dataset, full=args.full)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for bad in report["bad"]:
            print(f"{bad['path']}: {'; '.join(bad['problems'])}")
        print(f"{report['format']}: {report['samples']} samples, {len(report['bad'])} bad", file=sys.stderr)
    return EXIT_BAD_INPUT if report["bad"] else EXIT_OK


def run_cache_prompts(args) -> int:
    _, samples, problems = find_samples(args.data)
    if problems:
        where, what = problems[0]
        raise BadInput(f"{where}: {what} (run `vera-train check-data {args.data}`)")
    encoder = open_text_encoder(args.bundle, args.device, args.cache)
    prompts = dataset_prompts(samples)
    with Progress(len(prompts), "cache-prompts", args.progress) as progress:
        done = cache_prompts(encoder, prompts, progress=progress)
    print(f"{done['prompts']} prompts: {done['encoded']} encoded, {done['prompts'] - done['encoded']} already "
          f"cached in {encoder.cache_dir}", file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vera-train", description="Vera training data and training.")
    parser.add_argument("--version", action="version", version=f"vera {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_data_commands(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but something it imports is missing: a real error
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return working_directory_gone("vera-train") or guarded("vera-train", lambda: run_command(build_parser(), argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
