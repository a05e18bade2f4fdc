"""Training-data benchmark: reading public-format records (JSONL + MP4) with DataLoader workers against reading
them in the training process, in the same run.

    python benchmarks/loader_bench.py [--records 8] [--size 256x160] [--frames 17] [--steps 8] [--batch 2]
                                      [--workers 2] [--step-ms 0,300] [--repeat 3]
                                      [--json FILE]

What is timed (median of --repeat runs, interleaved so machine load hits both rows alike): the wall time of
`--steps` steps of `vera.train.loader.training_batches` (one bucket, decoded samples not kept), each step
followed by `--step-ms` of sleep standing for the model's step on an accelerator (0: reading alone). The
decode is PyAV (H.264 4:4:4) of five videos per record, then the resize to the model size. Prints seconds per
step for 0 and N workers and their ratio, for each --step-ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def write_records(root: Path, records: int, size: tuple[int, int], frames: int) -> None:
    from vera.train.synth import make_sample, write_public_train

    write_public_train(root, [make_sample(i, seed=0, size=size, frames=frames) for i in range(records)])


def time_read(dataset, plan, steps: int, batch: int, workers: int, step_s: float) -> float:
    from vera.train.loader import training_batches

    started = time.perf_counter()
    for _ in training_batches(dataset, plan, 0, steps, batch, 0, 1, workers, keep=False):
        time.sleep(step_s)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--size", default="256x160")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step-ms", default="0,300",
                        help="comma-separated pauses per step, ms (0: reading alone; 300: a GPU's step)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    pauses = [float(v) for v in args.step_ms.split(",")]
    width, height = (int(v) for v in args.size.split("x"))

    from vera.train.data import open_dataset
    from vera.train.loader import BatchPlan, Bucket

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_records(root, args.records, (width, height), args.frames)
        dataset = open_dataset(root, width=width, height=height, frames=args.frames)
        plan = BatchPlan(0, [Bucket(args.frames, width, height)], [0] * len(dataset), args.batch)
        rows = []
        for pause in pauses:
            times = {0: [], args.workers: []}
            for _ in range(args.repeat):
                for workers in times:
                    times[workers].append(time_read(dataset, plan, args.steps, args.batch, workers, pause / 1000))
            in_process, with_workers = statistics.median(times[0]), statistics.median(times[args.workers])
            rows.append({"step_ms": pause, "in_process_s": in_process, "workers_s": with_workers,
                         "speedup": in_process / with_workers})
    result = {"records": args.records, "size": args.size, "frames": args.frames, "batch": args.batch,
              "steps": args.steps, "workers": args.workers, "repeat": args.repeat, "rows": rows,
              "cpus": os.cpu_count(), "load_average_at_start": round(load, 1)}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def markdown(result: dict) -> str:
    """What main prints and the docs show (scripts/docs_numbers.py)."""
    lines = [f"{result['records']} public-format records of {result['size']}x{result['frames']}, batch "
             f"{result['batch']}, {result['steps']} steps, median of {result['repeat']}, worker start-up included; "
             f"{result['cpus']} CPUs, load average {result['load_average_at_start']} at the start:", "",
             f"| pause per step (ms) | in the training process (s / step) | {result['workers']} workers (s / step) "
             "| workers' speed-up |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['step_ms']:g} | {r['in_process_s']:.3f} | {r['workers_s']:.3f} | "
                     f"**{r['speedup']:.2f}x** |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
