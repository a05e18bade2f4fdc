"""Cost of limiting the resampled edit colour to its 2x2 source range (vera.rebuild._sample_without_overshoot):
`rebuild_layer` for a full-frame matte (every pixel rebuilt, the worst case) with the limit, against the same
call with plain bicubic resampling, interleaved in one run.

    python benchmarks/resample_limit_bench.py [--repeat 5] [--width 4096 --height 2160] [--json FILE]

Prints the median seconds of each and their ratio (limited / plain).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args()
    load = os.getloadavg()[0]

    from vera import rebuild

    fit = rebuild.Fit.compute(args.width, args.height, 832, 480)
    rng = np.random.default_rng(0)
    plate = rng.random((args.height, args.width, 3), dtype=np.float32)
    edit = rng.random((480, 832, 3), dtype=np.float32)  # noise: the most edges, the most overshoot
    matte = np.ones((480, 832), np.float32)
    limited = rebuild._sample_without_overshoot
    variants = {"plain bicubic": lambda low, h, w, roi: rebuild._sample(low, h, w, roi, "bicubic"),
                "limited": limited}
    times = {name: [] for name in variants}
    try:
        for _ in range(args.repeat):
            for name, sample in variants.items():
                rebuild._sample_without_overshoot = sample
                t0 = time.perf_counter()
                rebuild.rebuild_layer(edit, matte, plate, fit)
                times[name].append(time.perf_counter() - t0)
    finally:
        rebuild._sample_without_overshoot = limited
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {"size": f"{args.width}x{args.height}", "repeat": args.repeat, "median_s": median,
              "ratio_limited_over_plain": median["limited"] / median["plain bicubic"],
              "cpus": os.cpu_count(), "load_average_at_start": round(load, 1)}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def markdown(result: dict) -> str:
    """What main prints and the docs show (scripts/docs_numbers.py)."""
    m = result["median_s"]
    return (f"`rebuild_layer` of a {result['size']} full-frame matte, median of {result['repeat']}: with the limit "
            f"**{result['ratio_limited_over_plain']:.2f}x** the time without it ({m['limited']:.2f} s vs "
            f"{m['plain bicubic']:.2f} s); {result['cpus']} CPUs, load average {result['load_average_at_start']} "
            f"at the start.")


if __name__ == "__main__":
    main()
