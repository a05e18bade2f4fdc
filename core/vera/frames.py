"""Frame numbers as people read them in messages and reports: runs of consecutive frames."""

from __future__ import annotations


def compact_frames(frames) -> str:
    """'1003-1005,1010' for [1003, 1004, 1005, 1010]: runs of consecutive frames (no 'x2' steps, which read
    less plainly in an error message)."""
    runs: list[list[int]] = []
    for f in sorted(set(int(f) for f in frames)):
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
