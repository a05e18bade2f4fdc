"""Numbers in the docs, generated from the benchmarks' JSON: no figure is copied by hand.

    python scripts/docs_numbers.py                 rewrite every marked block in docs/*.md and README.md
    python scripts/docs_numbers.py --run NAME ...  first run NAME's command (below), saving its JSON there
    python scripts/docs_numbers.py --check         exit 1 if a block differs from what its JSON renders

A block is the text between `<!-- numbers:NAME -->` and `<!-- /numbers -->` in a page; it is replaced by
SOURCES[NAME] rendered from docs/numbers/NAME.json (or, for a part of another source's run, that source's
JSON), headed by the command that made the JSON. The renderer is the benchmark's own `markdown` function (the
table it prints), so a table's layout lives in one place. `--run` adds how the run went to the JSON (date,
wall time, CPUs, load average at the start; the block says it). Run benchmarks with `nice` on a shared
machine. A block whose JSON is missing is an error naming the command to run, unless its source is
`awaiting` a run by someone else (then it is kept as written, and each run says so).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NUMBERS = DOCS / "numbers"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]  # where blocks may stand
BLOCK = re.compile(r"(<!-- numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers -->)", re.S)


@dataclass
class Source:
    command: str                     # shell command; {json} is the JSON file it writes, {work} a scratch folder
    render: Callable[[dict], str]    # JSON -> markdown (without the command line, added by render_block)
    of: str = ""                     # another part of that source's JSON (its command makes it; no --run of its own)
    needs_cuda: bool = False         # --run refuses on a machine without a CUDA GPU
    awaiting: str = ""               # why the JSON may not exist yet: until it does, the block is kept as written


def bench(module: str, function: str = "markdown", **kwargs) -> Callable[[dict], str]:
    """The benchmark's own renderer, benchmarks/MODULE.py's FUNCTION (the table it prints), imported when a
    block is rendered: one layout per table, in the benchmark."""
    def render(result: dict) -> str:
        name = f"benchmarks_{module}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{module}.py")
            sys.modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(sys.modules[name])
        return getattr(sys.modules[name], function)(result, **kwargs)
    return render


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def render_demo_eval(report: dict) -> str:
    s = report["summary"]
    shots = s["shots"]
    bars = s["bars"]

    def verdict(name):
        return "met" if bars[name]["met"] else "NOT met"

    shapes = ", ".join(f"{k} {v:.3f}" for k, v in s.get("object_addition_iou_by_shape", {}).items())
    rows = [
        "| measure | result | bar |",
        "|---|---|---|",
        f"| object addition matte IoU ({s['object_addition_shots']} shots) | **{s['object_addition_iou']:.3f}** "
        f"mean | {bars['object_addition_iou']['bar']}: {verdict('object_addition_iou')} |",
        f"| by shape | {shapes} | |",
        f"| background change matte IoU ({s['background_change_shots']} shots) | "
        f"**{s['background_change_iou']:.3f}** mean | {bars['background_change_iou']['bar']}: "
        f"{verdict('background_change_iou')} |",
        f"| object matte on its box's border (largest alpha, all shots) | **{s['object_box_edge_alpha']:.3f}** | "
        f"{bars['object_box_edge_alpha']['bar']}: {verdict('object_box_edge_alpha')} |",
        f"| added object's colour = instruction's | **{_pct(s['colour_match'])}** | "
        f"{_pct(bars['colour_match']['bar'])}: {verdict('colour_match')} |",
        f"| untouched pixels bit-exact | **{s['untouched_exact_shots']} / {shots} shots** | every shot: "
        f"{verdict('untouched_exact')} |",
        "",
        f"Wall time: {report['wall_s']} s for the {shots} shots, {report['wall_s'] / shots:.2f} s a shot "
        f"(speed preset {report['speed']}, {report['steps']} steps).",
    ]
    return "\n".join(rows)


SOURCES: dict[str, Source] = {
    # the evaluation step of the retraining that made the shipped bundle (its JSON is that run's eval.json)
    "demo-eval-retrain": Source("scripts/retrain_demo.sh {work} 30 && cp {work}/eval.json {json}", render_demo_eval),
    "demo-eval": Source(
        "(test -d {work}/heldout || vera-train synth --out {work}/heldout --n 100 --seed 1000 --size 128x96 "
        "--frames 5 --progress none) && vera-train eval --bundle core/vera/assets/demo --data {work}/heldout --out {json} --progress none",
        render_demo_eval),
    "demo-eval-before": Source(
        "git archive 519a291 core/vera/assets/demo | tar -x -C {work} && "
        "(test -d {work}/heldout || vera-train synth --out {work}/heldout --n 100 --seed 1000 --size 128x96 "
        "--frames 5 --progress none) && vera-train eval --bundle {work}/core/vera/assets/demo --data {work}/heldout --out {json} --progress none",
        render_demo_eval),
    "demo-time": Source("python benchmarks/demo_bench.py --repeat 3 --json {json}", bench("demo_bench")),
    "io": Source("python benchmarks/io_bench.py --repeat 7 --json {json}", bench("io_bench")),
    "resample-limit": Source("python benchmarks/resample_limit_bench.py --repeat 5 --json {json}",
                             bench("resample_limit_bench")),
    "cli-startup": Source("python benchmarks/cli_startup_bench.py --rounds 5 --json {json}", bench("cli_startup_bench")),
    "model": Source("python benchmarks/model_bench.py --json {json}", bench("model_bench", "markdown_measured")),
    "model-analytic": Source("", bench("model_bench", "markdown_analytic"), of="model"),
    "parallel": Source("python benchmarks/parallel_bench.py --json {json}", bench("parallel_bench")),
    "plan-render": Source("python benchmarks/plan_table.py --json {json}", bench("plan_table")),
    "plan-train": Source("python benchmarks/plan_table.py --train --json {json}", bench("plan_table")),
    "sampling": Source("python benchmarks/sampling_bench.py --clips 8 --presets quality,balanced,preview --json {json}",
                       bench("sampling_bench", "markdown_presets")),
    "sampling-compile": Source("", bench("sampling_bench", "markdown_compile"), of="sampling"),
    "sampling-ablation": Source("python benchmarks/sampling_bench.py --clips 3 --ablation 3 --json {json}",
                                bench("sampling_bench", "markdown_ablation")),
    "matte-ceiling": Source("python benchmarks/matte_ceiling.py --shots 100 --resolutions 64x48,96x72,128x96 "
                            "--json {json}", bench("matte_ceiling", "markdown")),
    "sampling-turbo": Source(
        'python benchmarks/sampling_bench.py --clips 8 --recipes "paper-like,demo default" --presets quality,turbo '
        "--no-compile --seed 11 --json {json}", bench("sampling_bench", "markdown_presets")),
    "loader": Source("python benchmarks/loader_bench.py --step-ms 0,300 --json {json}", bench("loader_bench")),
    "vae-tiling": Source("python benchmarks/vae_tiling_bench.py --size 384x256 --latent-frames 2 --json {json}",
                         bench("vae_tiling_bench")),
    "bundle-check": Source("python benchmarks/bundle_check_bench.py --rounds 9 --json {json}",
                           bench("bundle_check_bench")),
    # the whole CI run on a fresh clone of HEAD, and the inner loop (README.md); commit first
    "suite": Source("python benchmarks/suite_bench.py --json {json}", bench("suite_bench")),
    # one H100/H200-class GPU; the JSON is the run's gpu_proof.json (docs/performance.md, "GPU proof")
    "gpu-proof": Source("python benchmarks/gpu_proof.py --out {work}/proof && cp {work}/proof/gpu_proof.json {json}",
                        bench("gpu_proof", level=3), needs_cuda=True),
}


def shown_command(name: str) -> str:
    """The command as a reader types it: the JSON goes to a file of their choice, the scratch folder to DIR."""
    return SOURCES[name].command.replace("{json}", "OUT.json").replace("{work}", "DIR")


def data_name(name: str) -> str:
    """The JSON (and the command) a block's figures come from: its own, or those of the source it is part of."""
    return SOURCES[name].of or name


def render_block(name: str) -> str:
    source = data_name(name)
    data = json.loads((NUMBERS / f"{source}.json").read_text())
    run = data.get("numbers_run") if isinstance(data, dict) else None
    when = ""
    if run:
        nice = f", at nice {run['nice']}" if run.get("nice") else ""
        load = run.get("load_average_at_start")
        load = "not recorded" if load is None else f"{load} at the start"
        when = f" Run {run['date']}, {run['wall_s']} s, {run['cpus']} CPUs, load average {load}{nice}."
    return (f"Generated by `python scripts/docs_numbers.py` from docs/numbers/{source}.json, made by "
            f"`{shown_command(source)}`.{when}\n\n{SOURCES[name].render(data)}\n")


def rewrite(text: str, where: str = "doc") -> str:
    def one(match):
        name = match.group("name")
        if name not in SOURCES:
            raise SystemExit(f"{where}: unknown numbers block {name!r}; known: {', '.join(SOURCES)}")
        if not (NUMBERS / f"{data_name(name)}.json").is_file():
            if SOURCES[data_name(name)].awaiting:  # kept as written, said on every run
                print(f"{where}: block {name} kept as written: no docs/numbers/{data_name(name)}.json yet "
                      f"({SOURCES[data_name(name)].awaiting}; python scripts/docs_numbers.py --run {data_name(name)})",
                      file=sys.stderr)
                return match.group(0)
            raise SystemExit(f"{where}: block {name} has no docs/numbers/{data_name(name)}.json: run "
                             f"python scripts/docs_numbers.py --run {data_name(name)}")
        return match.group(1) + render_block(name) + match.group(4)

    return BLOCK.sub(one, text)


def run(name: str, work: str | None = None) -> None:
    """Run NAME's command, its scratch folder `work` (default: a new temporary one, removed after), and keep
    the JSON free of this machine's paths (the scratch folder becomes DIR, the checkout '.')."""
    if SOURCES[name].needs_cuda:
        import torch  # only here: the other commands do not need it in this process

        if not torch.cuda.is_available():
            raise SystemExit(f"{name}: needs a CUDA GPU and this machine has none; run `{shown_command(name)}` on "
                             f"one and copy the JSON to docs/numbers/{name}.json")
    with tempfile.TemporaryDirectory(prefix="docs-numbers-") as scratch:
        work = work or scratch
        out = NUMBERS / f"{name}.json"
        command = SOURCES[name].command.format(json=out, work=work)
        print(f"{name}: {command}", file=sys.stderr)
        load, start = os.getloadavg()[0], time.time()
        done = subprocess.run(command, shell=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(f"{name}: the command failed (exit {done.returncode}): {command}")
        data = json.loads(out.read_text())
        if isinstance(data, dict):  # how the run went: the docs say it beside the figures
            data["numbers_run"] = {"date": time.strftime("%Y-%m-%d", time.gmtime(start)),
                                   "wall_s": round(time.time() - start), "cpus": os.cpu_count(),
                                   "load_average_at_start": round(load, 1), "nice": os.nice(0)}
        text = json.dumps(data, indent=2) + "\n"
        text = text.replace(str(Path(work).resolve()), "DIR").replace(str(work), "DIR")
        out.write_text(text.replace(str(ROOT), "."))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs="+", choices=sorted(n for n, s in SOURCES.items() if not s.of), default=[],
                        help="run these benchmarks first")
    parser.add_argument("--work", help="scratch folder for the commands (kept; e.g. to reuse a held-out set)")
    parser.add_argument("--check", action="store_true", help="only check that the docs are up to date")
    args = parser.parse_args(argv)
    NUMBERS.mkdir(exist_ok=True)
    for name in args.run:
        run(name, args.work)
    stale = []
    for doc in PAGES:
        text = doc.read_text()
        new = rewrite(text, str(doc.relative_to(ROOT)))
        if new != text:
            stale.append(str(doc.relative_to(ROOT)))
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(f"numbers out of date in {', '.join(stale)}: run python scripts/docs_numbers.py", file=sys.stderr)
        return 1
    print(("up to date" if args.check else f"rewrote {', '.join(stale) or 'nothing'}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
