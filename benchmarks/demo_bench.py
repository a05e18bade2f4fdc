"""Wall time of the README's demo command (`vera-render demo`, default prompt, 5 frames), as a newcomer runs it.

    python benchmarks/demo_bench.py [--repeat 3] [--json FILE]

Each run is a fresh `vera-render demo --out DIR` process (interpreter start, imports, plate, render, comp, QC
and contact sheet), timed from outside; its peer in the same run is `python -c pass`, the interpreter start
alone. Prints the median and writes every run as JSON (scripts/docs_numbers.py renders docs from it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def markdown(result: dict) -> str:
    """The sentence main prints and the docs show (scripts/docs_numbers.py)."""
    return (f"`vera-render demo` (default prompt, 5 frames), a fresh process each time: **{result['median_demo_s']} s** "
            f"median of {result['repeat']} (the interpreter's own start, `python -c pass`: "
            f"{result['median_python_start_s']} s), {result['cpus']} CPUs, load average "
            f"{result['load_average_at_start']} at the start.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prompt", default="add a red ball moving left")
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    runs, starts = [], []
    with tempfile.TemporaryDirectory(prefix="vera-demo-bench-") as tmp:
        for i in range(args.repeat):
            starts.append(timed([sys.executable, "-c", "pass"]))
            runs.append(timed([sys.executable, "-m", "vera.cli", "demo", "--out", str(Path(tmp) / f"d{i}"),
                               "--prompt", args.prompt, "--progress", "none"]))
    result = {"command": f"vera-render demo --out DIR --prompt {args.prompt!r}", "repeat": args.repeat,
              "demo_seconds": runs, "python_start_seconds": starts, "median_demo_s": round(statistics.median(runs), 2),
              "median_python_start_s": round(statistics.median(starts), 3), "cpus": os.cpu_count(),
              "load_average_at_start": round(load, 1)}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
