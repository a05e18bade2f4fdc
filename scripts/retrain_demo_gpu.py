"""Retrain the embedded demo model on one GPU inside a wall-clock budget, then distil its `turbo` student.

Usage: python scripts/retrain_demo_gpu.py WORK [--budget SECONDS] [--bundle-out DIR]   (docs/demo-model.md)

The whole recipe in one command, sized to the time it is given (a lent GPU is held for minutes, not hours):
1. synthetic data: training clips drawn at the model's own 64x48 (the loader then only reads, no resize),
   held-out clips at 128x96 (seed 1000, as `vera-train eval` documents), `--jobs` processes each;
2. a warm start from the shipped bundle (scripts/demo_warm_start.py);
3. a short calibration run of `vera-train fit` measures steps per second on this machine, so the real run's
   cosine schedule ends exactly when the budget for it does (a run stopped by the clock mid-schedule would
   ship weights from a high learning rate);
4. `vera-train fit`, exported as float16 into BUNDLE_OUT (the shipped demo by default);
5. the same calibration for `vera-train distill` (scripts/demo_distill.json), then the run, which writes the
   student into BUNDLE_OUT;
6. `vera-train eval` on held-out shots, quality and turbo (`--eval-n 0` leaves it to a later run).
Every stage's command, time and result go to WORK/summary.json. The CPU recipe is scripts/retrain_demo.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "core" / "vera" / "assets" / "demo"

FIT = {
    "width": 64, "height": 48, "frames": 5,
    "batch": 64, "lr": 5e-4, "warmup": 100, "min_lr_ratio": 0.02, "grad_clip": 1.0, "ema": 0.999,
    "loss_weights": {"edit": 1.0, "alpha": 2.0, "composite": 1.0}, "element_weight": 4.0,
    "mask": "placement", "placement_margin": 2, "placement_drop": 0.1, "prompt_drop": 0.1,
    "seed": 3, "log_every": 50, "checkpoint_every": 1000, "cache_data": False,
    "export_dtype": "float16",
    "defaults": {"resolution": [64, 48], "window": 5, "steps": 12, "sampler": "euler", "guidance": 1.0, "shift": 2.0},
}
DISTILL = {"batch": 16, "log_every": 5, "checkpoint_every": 1000, "cache_data": False}
CALIBRATION_STEPS = {"fit": 100, "distill": 15}
# seconds kept back after each stage for what follows it (start-up, export, evaluation), measured on an H200
RESERVE = {"fit_overhead": 30, "distill_calibration": 30, "distill_overhead": 25, "eval": 60}
DISTILL_SHARE = 0.3  # of the training time left after the fit's calibration


class Stages:
    def __init__(self, work: Path, budget: float):
        self.work, self.started, self.budget = work, time.monotonic(), budget
        self.summary: dict = {"budget_s": budget, "stages": []}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def run(self, name: str, command: list[str], timeout: float | None = None) -> float:
        began = time.monotonic()
        print(f"[{time.monotonic() - self.started:6.1f}s] {name}: {' '.join(command)}", flush=True)
        with open(self.work / f"{name}.log", "w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        took = time.monotonic() - began
        self.summary["stages"].append({"stage": name, "command": command, "seconds": round(took, 1),
                                       "returncode": done.returncode})
        self.save()
        if done.returncode:
            tail = (self.work / f"{name}.log").read_text().splitlines()[-15:]
            raise SystemExit(f"{name} failed with exit {done.returncode}:\n" + "\n".join(tail))
        return took

    def save(self) -> None:
        (self.work / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")


def vera_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "vera.train.cli", *args]


def steps_per_second(log: Path, skip: int) -> float:
    """Steady-state training speed from a run's log.jsonl: steps over seconds after the first `skip` steps."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    late = [r for r in records if r["step"] >= skip]
    if len(late) < 2:
        raise SystemExit(f"{log}: too few log records to measure the speed")
    return (late[-1]["step"] - late[0]["step"]) / (late[-1]["elapsed_s"] - late[0]["elapsed_s"])


def write_config(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole recipe (default 540)")
    parser.add_argument("--bundle-out", type=Path, default=DEMO, help="bundle folder to write (default: the demo)")
    parser.add_argument("--from-bundle", type=Path, default=DEMO, help="warm start (default: the demo)")
    parser.add_argument("--train-n", type=int, default=6000)
    parser.add_argument("--heldout-n", type=int, default=100)
    parser.add_argument("--eval-n", type=int, default=40, help="held-out shots evaluated at the end (0: none)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2),
                        help="DataLoader worker processes of fit and distill")
    parser.add_argument("--batch", type=int, default=FIT["batch"], help="fit batch (default %(default)s)")
    parser.add_argument("--distill-batch", type=int, default=DISTILL["batch"])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work, args.budget)
    device = ["--device", args.device]

    stages.run("synth_train", vera_train("synth", "--out", str(work / "train"), "--n", str(args.train_n), "--seed",
                                         "0", "--size", "64x48", "--frames", "5", "--jobs", str(args.jobs),
                                         "--progress", "none"))
    stages.run("synth_heldout", vera_train("synth", "--out", str(work / "heldout"), "--n", str(args.heldout_n),
                                           "--seed", "1000", "--size", "128x96", "--frames", "5", "--jobs",
                                           str(args.jobs), "--progress", "none"))
    shutil.rmtree(work / "warm", ignore_errors=True)
    stages.run("warm_start", [sys.executable, str(HERE / "demo_warm_start.py"), str(args.from_bundle),
                              str(work / "warm")])

    fit = dict(FIT, bundle={"from": str((work / "warm").resolve())}, num_workers=args.workers, batch=args.batch)
    calibration = CALIBRATION_STEPS["fit"]
    shutil.rmtree(work / "fit_calibration", ignore_errors=True)
    stages.run("fit_calibration", vera_train(
        "fit", "--config", str(write_config(work / "fit_calibration.json", dict(fit, steps=10_000, log_every=10))),
        "--data", str(work / "train"), "--out", str(work / "fit_calibration"), "--max-steps", str(calibration),
        "--progress", "none", *device))
    fit_rate = steps_per_second(work / "fit_calibration" / "log.jsonl", skip=calibration // 2)
    training_left = stages.left() - RESERVE["fit_overhead"] - RESERVE["distill_calibration"] \
        - RESERVE["distill_overhead"] - (RESERVE["eval"] if args.eval_n else 0)
    fit_seconds = training_left * (1 - DISTILL_SHARE)
    fit_steps = max(50, int(fit_rate * fit_seconds))
    stages.summary["fit"] = {"steps_per_s": round(fit_rate, 2), "planned_s": round(fit_seconds), "steps": fit_steps,
                             "batch": fit["batch"]}
    shutil.rmtree(work / "fit", ignore_errors=True)
    stages.run("fit", vera_train(
        "fit", "--config", str(write_config(work / "fit.json", dict(fit, steps=fit_steps))), "--data",
        str(work / "train"), "--out", str(work / "fit"), "--max-minutes",
        f"{(fit_seconds + RESERVE['fit_overhead']) / 60:.2f}", "--progress", "none", *device))
    fitted = json.loads((work / "fit" / "summary.json").read_text())
    stages.summary["fit"].update(trained_steps=fitted["trained_steps"], final_loss=fitted["final_loss"],
                                 stopped_by_clock=fitted["stopped_by_clock"])

    # the new teacher replaces the bundle; its old student belonged to the old teacher
    out = args.bundle_out
    for old in ("bundle.json", "transformer.safetensors", "transformer.json", "student.safetensors"):
        (out / old).unlink(missing_ok=True)
    shutil.rmtree(out / "text_encoder", ignore_errors=True)
    shutil.copytree(work / "fit" / "bundle", out, dirs_exist_ok=True)

    distill = dict(json.loads((HERE / "demo_distill.json").read_text()), **DISTILL)
    distill.update(num_workers=args.workers, batch=args.distill_batch, bundle=str(out.resolve()))
    calibration = CALIBRATION_STEPS["distill"]
    shutil.rmtree(work / "distill_calibration", ignore_errors=True)
    stages.run("distill_calibration", vera_train(
        "distill", "--config", str(write_config(work / "distill_calibration.json", dict(distill, log_every=3))),
        "--data", str(work / "train"), "--out", str(work / "distill_calibration"), "--max-steps",
        str(calibration), "--progress", "none", *device))
    distill_rate = steps_per_second(work / "distill_calibration" / "log.jsonl", skip=calibration // 3)
    distill_seconds = stages.left() - RESERVE["distill_overhead"] - (RESERVE["eval"] if args.eval_n else 0)
    distill_steps = max(20, int(distill_rate * distill_seconds))
    stages.summary["distill"] = {"steps_per_s": round(distill_rate, 3), "planned_s": round(distill_seconds),
                                 "steps": distill_steps, "batch": distill["batch"]}
    shutil.rmtree(work / "distill", ignore_errors=True)
    stages.run("distill", vera_train(
        "distill", "--config", str(write_config(work / "distill.json", dict(distill, steps=distill_steps))),
        "--data", str(work / "train"), "--out", str(work / "distill"), "--bundle-out", str(out),
        "--max-minutes", f"{(distill_seconds + RESERVE['distill_overhead']) / 60:.2f}", "--progress", "none",
        *device))

    for speed in ("quality", "turbo") if args.eval_n else ():
        stages.run(f"eval_{speed}", vera_train(
            "eval", "--bundle", str(out), "--data", str(work / "heldout"), "--limit", str(args.eval_n),
            "--speed", speed, "--out", str(work / f"eval_{speed}.json"), "--progress", "none"),
            )
        stages.summary[f"eval_{speed}"] = json.loads((work / f"eval_{speed}.json").read_text())["summary"]
    stages.summary["wall_s"] = round(time.monotonic() - stages.started, 1)
    stages.save()
    print(json.dumps({k: v for k, v in stages.summary.items() if k != "stages"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
