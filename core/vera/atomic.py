"""Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

A reader (Nuke, a compositor, another farm task) sees either the old file or the whole new one, never half.
Temporary names start with '.' and end with '.tmp' so sequence globbing never picks them up.
The file gets the permissions an ordinary open() would (0666 less the umask), not mkstemp's private 0600, so
frames written on one farm node are readable by artists and other nodes.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside `target`; on success it is renamed onto `target`, on error removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        make_public(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno and not exc.filename:  # a write() failure: name the file
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def make_public(path: str | Path) -> None:
    """Give a file or folder made by mkstemp / mkdtemp (private 0600 / 0700) the mode an ordinary open() or
    mkdir() would: 0666 / 0777 less the umask."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask
