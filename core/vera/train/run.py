"""The start and the end that `vera-train fit` and `vera-train distill` share: the process group, device, seeds and
the checkpoints to resume from; then whole tensors for the export, the bundle and summary.json, and the process
group closed. Safe under torchrun."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as tdist

from vera.atomic import atomic_write_text
from vera.train import sharded as sharded_checkpoints
from vera.train.checkpoints import list_checkpoints
from vera.train.distributed import Dist, init_distributed, pick_device


@dataclass
class RunStart:
    out_dir: Path
    dist: Dist
    device: torch.device
    existing: list[Path]  # the run's checkpoints, oldest first: the last one resumes (none with resume=False)


def start_run(seed: int, out_dir: str | Path, device: str, resume: bool) -> RunStart:
    """Join the process group (under torchrun), pick this rank's device, seed every generator, make the folder."""
    out_dir = Path(out_dir)
    dist = init_distributed(pick_device(device))
    dev = pick_device(device, dist.local_rank)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    return RunStart(out_dir, dist, dev, list_checkpoints(out_dir) if resume else [])


def finish_run(run: RunStart, state: dict, sharded: bool, summary: dict, bundle_out: str | Path | None,
               write: Callable[[Path, dict], None]) -> dict:
    """Gather the trained state (a collective when sharded: every rank takes part), let rank 0 `write` the bundle
    (to bundle_out, default OUT/bundle) and summary.json, and close the process group. Returns the summary."""
    if sharded:
        state = sharded_checkpoints.full_state(state)
    if run.dist.main:
        target = Path(bundle_out) if bundle_out else run.out_dir / "bundle"
        write(target, state)
        summary["bundle"] = str(target)
        atomic_write_text(run.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if run.dist.world > 1:
        tdist.barrier()
    if run.dist.owns_group:
        tdist.destroy_process_group()
    return summary
