"""Small file helpers shared by vera_nuke modules (standard library only).

`atomic_write_text` mirrors `vera.atomic` (temp file beside the target, 0666 less the umask, fsync, rename): vera_nuke may not
import the engine, and a half-written jobs/prefs/spec file read by another process must never happen.
"""

from __future__ import annotations

import os
import re
import tempfile


def atomic_write_text(target: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
    try:
        # what open() would give (0666 less the umask), not mkstemp's private 0600: a shot.json must be
        # readable by the farm's user (as vera.atomic does)
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)  # the portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def frame_path(pattern: str, frame: int) -> str:
    """The file of one frame of a Nuke/fileseq pattern: `####`, `%04d`, `@@@@` or `1001-1100#`."""
    pattern = re.sub(r"\d+-\d+(#+|@+)", r"\1", pattern)  # fileseq's explicit range: the padding stays
    if re.search(r"%0?\d*d", pattern):
        return re.sub(r"%0?(\d*)d", lambda m: f"{frame:0{int(m.group(1) or 1)}d}", pattern)
    # fileseq: a single '#' means 4 digits; '@' one digit each.
    def pad(m):
        token = m.group(0)
        width = 4 if token == "#" else len(token)
        return f"{frame:0{width}d}"

    return re.sub(r"#+|@+", pad, pattern)


def to_nuke_path(path: str) -> str:
    """Nuke wants forward slashes on every OS."""
    return path.replace("\\", "/")
