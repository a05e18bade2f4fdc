"""How a shot is cut into overlapping windows of frames, and how the overlaps are blended back.

A window is what one farm task renders. Windows overlap by `overlap` frames; in the overlap the two renders
are cross-faded linearly (on premultiplied RGBA, where a linear blend is correct), then the matte threshold is
applied again (`vera.rebuild.cross_fade`). At most two windows cover any frame (overlap must be under half the
window), so each frame's blend has one or two terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from vera.errors import BadInput


@dataclass(frozen=True)
class Window:
    index: int
    first: int  # plate frame numbers, inclusive
    last: int

    @property
    def frames(self) -> list[int]:
        return list(range(self.first, self.last + 1))

    def __len__(self) -> int:
        return self.last - self.first + 1


def plan_windows(first: int, last: int, window: int, overlap: int) -> list[Window]:
    """Cover [first, last] with windows of `window` frames stepping by `window - overlap`.

    The last window is pulled back to end on `last`, so every window has full length when the shot is at
    least one window long (its overlap with the previous one may then be larger than `overlap`).
    """
    if last < first:
        raise BadInput(f"frame range {first}-{last} is empty")
    if window < 1:
        raise BadInput(f"window must be at least 1 frame, got {window}")
    if not 0 <= overlap < (window + 1) // 2:
        raise BadInput(f"overlap must be between 0 and {(window + 1) // 2 - 1} for a {window}-frame window, "
                       f"got {overlap}")
    total = last - first + 1
    if total <= window:
        return [Window(0, first, last)]
    step = window - overlap
    starts = list(range(0, total - window + 1, step))
    if starts[-1] + window < total:
        starts.append(total - window)
    windows = [Window(i, first + s, first + s + window - 1) for i, s in enumerate(starts)]
    # Pulling the last window back can make it overlap more than half of its neighbour's frames; a frame
    # must never be covered by three windows.
    for a, b in zip(windows, windows[2:]):
        if b.first <= a.last:
            raise BadInput(f"window {window} with overlap {overlap} covers frames more than twice; "
                           "lower the overlap")
    return windows


def blend_weights(windows: list[Window], frame: int) -> list[tuple[int, float]]:
    """The (window index, weight) pairs whose weighted sum makes `frame`. Weights sum to 1."""
    covering = [w for w in windows if w.first <= frame <= w.last]
    if not covering:
        raise ValueError(f"frame {frame} is in no window")
    if len(covering) == 1:
        return [(covering[0].index, 1.0)]
    a, b = covering  # a starts earlier
    n = a.last - b.first + 1  # frames in the overlap
    w_b = (frame - b.first + 1) / (n + 1)
    return [(a.index, 1.0 - w_b), (b.index, w_b)]


def window_seed(shot_seed: int, index: int) -> int:
    """Per-window seed derived from the shot seed: stable across machines and runs. Below 2**31, so that it
    fits the EXR int attribute `vera/seed` (EXR has no wider int); seeds that were already below keep their
    value."""
    return (int(shot_seed) * 1_000_003 + 7919 * int(index)) % (2**31)
