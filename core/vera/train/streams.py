"""Deterministic streams: which sample, noise and prompt drop each step and rank gets, as pure functions of
(seed, step, global stream position), so a resumed or multi-process run sees what one straight run sees.
"""

from __future__ import annotations

import numpy as np
import torch


def sample_seed(seed: int, step: int, index: int, purpose: int) -> int:
    """A seed for one sample's randomness at one step: independent of rank count, batch split and resume."""
    return int(np.random.SeedSequence([seed, step, index, purpose]).generate_state(1, dtype=np.uint64)[0]
               % (2**63 - 1))


def dataset_index(seed: int, position: int, size: int, stream: int = 0) -> int:
    """The dataset index at `position` of the endless stream of per-epoch shuffles (`stream`: one such
    stream per data bucket, vera.train.loader)."""
    epoch, offset = divmod(position, size)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(sample_seed(seed, epoch, stream, 7)))
    return int(order[offset])


def rank_positions(step: int, batch: int, rank: int, world: int) -> list[int]:
    """The global stream positions this rank trains on at `step` (rank r takes the r-th slice)."""
    start = step * batch * world + rank * batch
    return list(range(start, start + batch))


def shifted(s: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * s / (1 + (shift - 1) * s)


def batch_noise(cfg, step: int, positions: list[int], clean: torch.Tensor) -> tuple:
    """Noise, noise levels and prompt-drop flags for each sample, from (seed, step, stream position)."""
    noise, sigma, drop = [], [], []
    for pos in positions:
        gen = torch.Generator().manual_seed(sample_seed(cfg.seed, step, pos, 1))
        noise.append(torch.randn(clean.shape[1:], generator=gen))
        u = torch.rand((2,), generator=gen)
        sigma.append(shifted(u[0], cfg.timestep_shift))
        drop.append(bool(u[1] < cfg.prompt_drop))
    return (torch.stack(noise).to(clean.device), torch.stack(sigma).to(clean.device), drop)
