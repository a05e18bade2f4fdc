"""Numbers in the docs, generated from the benchmarks' JSON: no figure is copied by hand.

    python scripts/docs_numbers.py                 rewrite every marked block in docs/*.md from docs/numbers/*.json
    python scripts/docs_numbers.py --run NAME ...  first run NAME's command (below), saving its JSON there
    python scripts/docs_numbers.py --check         exit 1 if a block differs from what its JSON renders

A block is the text between `<!-- numbers:NAME -->` and `<!-- /numbers -->` in a doc; it is replaced by
SOURCES[NAME] rendered from docs/numbers/NAME.json, which starts with the command that made the JSON. Run
benchmarks with `nice` on a shared machine; the JSON records the load average where the benchmark gives it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NUMBERS = DOCS / "numbers"
BLOCK = re.compile(r"(<!-- numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers -->)", re.S)


@dataclass
class Source:
    command: str                     # shell command; {json} is the JSON file it writes, {work} a scratch folder
    render: Callable[[dict], str]    # JSON -> markdown (without the command line, added by render_block)


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


def render_demo_time(result: dict) -> str:
    return (f"`vera-render demo` (default prompt, 5 frames), a fresh process each time: **{result['median_demo_s']} s** "
            f"median of {result['repeat']} (the interpreter's own start, `python -c pass`: "
            f"{result['median_python_start_s']} s), {result['cpus']} CPUs, load average "
            f"{result['load_average_at_start']} at the start.")


def render_io(result: dict) -> str:
    rows = ["| step | seconds | x its base | base |", "|---|---|---|---|"]
    for row in result["table"]:
        rows.append(f"| {row['step']} | {row['seconds']:.3f} | {row['ratio']:.2f} | {row['base']} |")
    post = result["post_model_ratio"]
    rows += ["", "| target | result |", "|---|---|",
             f"| our write within 1.3x of oiiotool's | **{result['write_ratio']:.2f}x** "
             f"({'met' if result['write_ratio'] <= 1.3 else 'NOT met'}) |",
             "| post-model step under 3x the plain write of the same layer | "
             + ", ".join(f"**{ratio:.2f}x** {case}" for case, ratio in post.items())
             + f" ({'met' if all(r < 3 for r in post.values()) else 'NOT met'}) |",
             f"| (read, no target) | {result['read_ratio']:.2f}x oiiotool's |",
             "", f"Median of {result['repeat']}; {result['cpus']} CPUs, load average {result['load_average']} at the "
                 "start of the run."]
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
    "demo-time": Source("python benchmarks/demo_bench.py --repeat 3 --json {json}", render_demo_time),
    "io": Source("python benchmarks/io_bench.py --repeat 7 --json {json}", render_io),
}


def shown_command(name: str) -> str:
    """The command as a reader types it: the JSON goes to a file of their choice, the scratch folder to DIR."""
    return SOURCES[name].command.replace("{json}", "OUT.json").replace("{work}", "DIR")


def render_block(name: str) -> str:
    data = json.loads((NUMBERS / f"{name}.json").read_text())
    return (f"Generated by `python scripts/docs_numbers.py` from docs/numbers/{name}.json, made by "
            f"`{shown_command(name)}`:\n\n{SOURCES[name].render(data)}\n")


def rewrite(text: str, where: str = "doc") -> str:
    def one(match):
        name = match.group("name")
        if name not in SOURCES:
            raise SystemExit(f"{where}: unknown numbers block {name!r}; known: {', '.join(SOURCES)}")
        return match.group(1) + render_block(name) + match.group(4)

    return BLOCK.sub(one, text)


def run(name: str, work: str | None = None) -> None:
    """Run NAME's command, its scratch folder `work` (default: a new temporary one, removed after), and keep
    the JSON free of this machine's paths (the scratch folder becomes DIR, the checkout '.')."""
    with tempfile.TemporaryDirectory(prefix="docs-numbers-") as scratch:
        work = work or scratch
        out = NUMBERS / f"{name}.json"
        command = SOURCES[name].command.format(json=out, work=work)
        print(f"{name}: {command}", file=sys.stderr)
        subprocess.run(command, shell=True, check=True, cwd=ROOT)
        text = out.read_text().replace(str(Path(work).resolve()), "DIR").replace(str(work), "DIR")
        out.write_text(text.replace(str(ROOT), "."))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs="+", choices=sorted(SOURCES), default=[], help="run these benchmarks first")
    parser.add_argument("--work", help="scratch folder for the commands (kept; e.g. to reuse a held-out set)")
    parser.add_argument("--check", action="store_true", help="only check that the docs are up to date")
    args = parser.parse_args(argv)
    NUMBERS.mkdir(exist_ok=True)
    for name in args.run:
        run(name, args.work)
    stale = []
    for doc in sorted(DOCS.glob("*.md")):
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
