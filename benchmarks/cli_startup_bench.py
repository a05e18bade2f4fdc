"""Start-up time of the light `vera-render` commands against bare Python, measured in the same run.

    python benchmarks/cli_startup_bench.py            # 7 rounds, Markdown table
    python benchmarks/cli_startup_bench.py --rounds 15 --json FILE

The commands the Nuke node and the farm wrappers call all the time: `--help`, `status` of a rendered output
folder, `validate` of a shot with a local bundle, `plan` of a bundle, and `submit` (job files, no launch). Each
round runs every command once, in turn, so a busy machine slows them alike; the table gives the median wall
time, the difference to `python -c pass` and the ratio. Each row also says whether the command imported torch
(`python -X importtime`, one extra run).

The shot is made first: a random vera-tiny bundle, a 9-frame EXR plate, rendered once on the CPU (the status
command needs a manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from vera.exr import write_exr  # noqa: E402
from vera.model.bundle import create_random_bundle  # noqa: E402

FIRST, LAST = 1001, 1009
HEAVY = ("torch", "diffusers", "transformers")


def vera_render() -> list[str]:
    """The console script beside this Python (what the Nuke node runs), else `python -m vera.cli`."""
    script = Path(sys.executable).with_name("vera-render")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vera.cli"]


def make_shot(root: Path) -> tuple[Path, Path, Path]:
    """(shot.json, bundle folder, rendered output folder) of a tiny shot."""
    bundle = create_random_bundle(root / "bundle", "vera-tiny", seed=0, resolution=(64, 48), window=9)
    (root / "plate").mkdir()
    rng = np.random.default_rng(0)
    for frame in range(FIRST, LAST + 1):
        pixels = rng.random((48, 64, 3), dtype=np.float32)
        write_exr(root / "plate" / f"plate.{frame:04d}.exr", {c: pixels[..., i] for i, c in enumerate("RGB")},
                  (0, 0, 63, 47), pixel_type="half")
    spec = {"vera_shot": 1, "name": "bench", "task": "object_addition", "instruction": "add a red ball",
            "plate": {"path": "plate/plate.####.exr", "first": FIRST, "last": LAST, "colorspace": "sRGB - Texture"},
            "output": {"dir": "out"}, "model": {"bundle": "bundle", "device": "cpu"},
            "sampler": {"name": "unipc", "steps": 2}, "seed": 1}
    shot = root / "shot.json"
    shot.write_text(json.dumps(spec, indent=1))
    subprocess.run(vera_render() + ["run", str(shot), "--progress", "none"], check=True)
    return shot, bundle, root / "out"


def commands(shot: Path, bundle: Path, out: Path, jobs: Path) -> dict[str, list[str]]:
    cli = vera_render()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "vera-render --help": cli + ["--help"],
        "vera-render status OUT": cli + ["status", str(out)],
        "vera-render validate SHOT.json": cli + ["validate", str(shot)],
        "vera-render plan --bundle DIR": cli + ["plan", "--bundle", str(bundle)],
        "vera-render submit SHOT.json --farm openjd": cli + ["submit", str(shot), "--farm", "openjd", "--out",
                                                             str(jobs), "--force"],
    }


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_imports(argv: list[str]) -> list[str]:
    """Which of torch, diffusers, transformers the command imported (from `python -X importtime`)."""
    if argv[0] == sys.executable:
        args = argv[1:]
    else:  # the console script: run the same entry point under -X importtime
        args = ["-m", "vera.cli"] + argv[1:]
    log = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True).stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in log.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY if name in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="vera-cli-bench-"))
    try:
        shot, bundle, out = make_shot(root)
        table = commands(shot, bundle, out, root / "jobs")
        for argv_ in table.values():  # warm the file cache
            run_once(argv_)
        times: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(args.rounds):
            for name, argv_ in table.items():
                times[name].append(run_once(argv_))
        heavy = {name: heavy_imports(argv_) for name, argv_ in table.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    bare = statistics.median(times["python -c pass"])
    rows = [{"command": name, "median_s": statistics.median(t), "min_s": min(t),
             "minus_bare_s": statistics.median(t) - bare, "ratio": statistics.median(t) / bare,
             "heavy_imports": heavy[name]} for name, t in times.items()]
    result = {"rounds": args.rounds, "rows": rows, "cpus": os.cpu_count(), "load_average_at_start": round(load, 1)}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def markdown(result: dict) -> str:
    """The table main prints and the docs show (scripts/docs_numbers.py)."""
    lines = [f"Median wall time of {result['rounds']} rounds; {result.get('cpus', '?')} CPUs, load average "
             f"{result.get('load_average_at_start', '?')} at the start:", "",
             "| command | median s | min s | minus bare Python s | x bare Python | imports |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['minus_bare_s']:+.3f} | "
                     f"{r['ratio']:.1f} | {', '.join(r['heavy_imports']) or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
