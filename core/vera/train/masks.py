"""The conditioning mask a training sample gets (none, the dataset's, or the placement box around the element) and
the element weight map of the loss.
"""

from __future__ import annotations

import numpy as np
import torch

from vera.train.config import FitConfig
from vera.train.streams import sample_seed


PLACEMENT_TASK = "object_addition"


PLACEMENT_THRESHOLD = 0.5  # the element's solid part: the object (and its shadow's core), not the soft tail


def placement_mask(alpha: np.ndarray, margin: int, threshold: float = PLACEMENT_THRESHOLD) -> np.ndarray:
    """(F, H, W) element alpha -> (F, H, W) float32 mask: 1 inside each frame's element bounding box grown by
    `margin` pixels, 0 elsewhere (all 0 on a frame without element). The object-addition "where" hint."""
    alpha = np.asarray(alpha)
    boxes = np.zeros(alpha.shape, np.float32)
    for i, frame in enumerate(alpha):
        rows, cols = np.nonzero(np.any(frame > threshold, axis=1)), np.nonzero(np.any(frame > threshold, axis=0))
        if rows[0].size == 0:
            continue
        top, bottom = max(0, rows[0][0] - margin), min(frame.shape[0], rows[0][-1] + 1 + margin)
        left, right = max(0, cols[0][0] - margin), min(frame.shape[1], cols[0][-1] + 1 + margin)
        boxes[i, top:bottom, left:right] = 1.0
    return boxes


def element_weight_map(cfg: "FitConfig", items: list[dict]) -> torch.Tensor | None:
    """(B, 1, F, H, W) per-pixel loss weights 1 + element_weight * element box, or None when not weighted."""
    if not cfg.element_weight:
        return None
    boxes = [placement_mask(torch.as_tensor(item["alpha"]).float()[0].numpy(), cfg.placement_margin)
             for item in items]
    return 1.0 + cfg.element_weight * torch.from_numpy(np.stack(boxes))[:, None]


def conditioning_mask(cfg: "FitConfig", item: dict, step: int, position: int) -> torch.Tensor:
    """The (1, F, H, W) user mask a sample is trained with, per `cfg.mask` (see FitConfig)."""
    mask = torch.as_tensor(item["mask"]).float()
    if cfg.mask == "dataset":
        return mask
    if cfg.mask == "none" or item.get("task") != PLACEMENT_TASK:
        return torch.zeros_like(mask)
    gen = torch.Generator().manual_seed(sample_seed(cfg.seed, step, position, 2))
    if float(torch.rand((), generator=gen)) < cfg.placement_drop:
        return torch.zeros_like(mask)
    alpha = torch.as_tensor(item["alpha"]).float()[0].numpy()
    return torch.from_numpy(placement_mask(alpha, cfg.placement_margin))[None]
