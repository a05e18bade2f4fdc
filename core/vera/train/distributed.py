"""The processes of a training run: one, or a torchrun group (DDP / FSDP2 over gloo or NCCL), and the few
collectives the loop needs (a barrier, a mean, the wall-clock stop every rank agrees on).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run created the process group, so it closes it at the end

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1), gloo on the CPU, nccl on CUDA. A group the caller
    already made (a script running several runs in one torchrun launch) is used and left open for it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def pick_device(name: str, dist_local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist_local_rank)
    return device


def clock_says_stop(started: float, max_minutes: float, dist: Dist) -> bool:
    """All ranks stop at the same step: rank 0's clock decides."""
    stop = torch.tensor([float(time.monotonic() - started >= 60.0 * max_minutes)])  # the budget is spent
    if dist.world > 1:
        tdist.broadcast(stop, src=0)
    return bool(stop.item())


def mean_across(values: list[float], dist: Dist) -> float:
    mean = torch.tensor([sum(values) / max(1, len(values))])
    if dist.world > 1:
        tdist.all_reduce(mean)
        mean /= dist.world
    return float(mean.item())


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        tdist.barrier()
