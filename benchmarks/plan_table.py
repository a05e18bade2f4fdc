"""The planner's table (vera.plan): the strategy `--memory auto` picks for vera-1.3b / vera-14b at 49 and 81 frames
of 832x480 on 1, 2, 4 and 8 GPUs of 80, 24 and 16 GiB, with the peak memory per GPU and the time per step.

    python benchmarks/plan_table.py            # Markdown (docs/performance.md)
    python benchmarks/plan_table.py --train    # training (full, FSDP2), same grid
    python benchmarks/plan_table.py --json FILE   # also the numbers as JSON

Analytic (nothing is allocated); times at vera.plan's assumed sustained throughput (`--tflops`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from vera.model.configs import CONFIGS  # noqa: E402
from vera.plan import DEFAULT_TFLOPS, plan  # noqa: E402


def rows(mode: str, tflops: float) -> list[dict]:
    out = []
    for name in ("vera-1.3b", "vera-14b"):
        for frames in (49, 81):
            for memory in (80, 24, 16):
                for gpus in (1, 2, 4, 8):
                    result = plan(CONFIGS[name], frames, 832, 480, gpus, memory, mode, tflops=tflops)
                    out.append({"config": name, "frames": frames, "gpu_memory_gib": memory, "gpus": gpus,
                                **{k: v for k, v in result.to_dict().items()
                                   if k in ("fits", "strategy_text", "memory", "seconds_per_step", "gpus_needed")}})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="full training instead of a render")
    parser.add_argument("--tflops", type=float, default=DEFAULT_TFLOPS)
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    mode = "full" if args.train else "inference"
    result = {"mode": mode, "tflops": args.tflops, "rows": rows(mode, args.tflops)}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def markdown(result: dict) -> str:
    """The table main prints and the docs show (scripts/docs_numbers.py)."""
    step = "s / step (one sample per rank)" if result["mode"] == "full" else "s / step (CFG)"
    lines = [f"| config | frames | GPU GiB | GPUs | strategy | peak GiB per GPU | {step} |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["fits"]:
            strategy = r["strategy_text"].split(", ", 1)[1] if ", " in r["strategy_text"] else r["strategy_text"]
            time = f"{r['seconds_per_step']:.1f}"
        else:
            needed = f"; {r['gpus_needed']} would fit" if r["gpus_needed"] else ""
            strategy, time = f"**does not fit**{needed}", "-"
        lines.append(f"| {r['config']} | {r['frames']} | {r['gpu_memory_gib']} | {r['gpus']} | {strategy} | "
                     f"{r['memory']['peak']:.1f} | {time} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
