"""Training-data benchmark: reading public-format records (JSONL + MP4) with DataLoader workers against reading
them in the training process, in the same run.

    python benchmarks/loader_bench.py [--records 8] [--size 256x160] [--frames 17] [--steps 8] [--batch 2]
                                      [--workers 2] [--step-ms 0] [--repeat 3]

What is timed (median of --repeat runs, interleaved so machine load hits both rows alike): the wall time of
`--steps` steps of `vera.train.loader.training_batches` (one bucket, decoded samples not kept), each step
followed by `--step-ms` of sleep standing for the model's step on an accelerator (0: reading alone). The
decode is PyAV (H.264 4:4:4) of five videos per record, then the resize to the model size. Prints seconds per
step for 0 and N workers and their ratio.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--step-ms", type=float, default=0.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from vera.train.data import open_dataset
    from vera.train.loader import BatchPlan, Bucket

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_records(root, args.records, (width, height), args.frames)
        dataset = open_dataset(root, width=width, height=height, frames=args.frames)
        plan = BatchPlan(0, [Bucket(args.frames, width, height)], [0] * len(dataset), args.batch)
        times = {0: [], args.workers: []}
        for _ in range(args.repeat):
            for workers in times:
                times[workers].append(time_read(dataset, plan, args.steps, args.batch, workers,
                                                args.step_ms / 1000))
    in_process, with_workers = statistics.median(times[0]), statistics.median(times[args.workers])
    print(f"{args.records} records {width}x{height}x{args.frames}, batch {args.batch}, {args.steps} steps, "
          f"step {args.step_ms:g} ms")
    print(f"in-process (0 workers): {in_process:.3f} s/step")
    print(f"{args.workers} workers:            {with_workers:.3f} s/step")
    print(f"ratio in-process / workers: {in_process / with_workers:.2f}x")


if __name__ == "__main__":
    main()
