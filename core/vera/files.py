"""What vera may read and where it may write: the two file-level rules every command shares.

- Inputs are regular files. A FIFO, socket, device or folder named like a frame is refused by its `stat`,
  before anything opens it (opening a FIFO for reading blocks until a writer comes: a farm task would hang).
- No command writes over its own inputs. An output path is compared with every input file after symlinks are
  resolved (`realpath`) and by inode (hard links, case-insensitive filesystems), so `link/plate.####.exr`,
  `plate.%04d.exr` and `plate.@@@@.exr` are all caught as the plate `plate.####.exr`: callers expand patterns
  to the frame files first. A folder a command owns whole (the render cache `.vera/`, the demo's output folder)
  may hold no input at all. Refusals are BadInput (exit 2), raised before anything is written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from vera.errors import BadInput, frame_error

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def regular_file(path, frame=None) -> os.stat_result:
    """The stat of `path` when it is a regular file (symlinks followed); BadInput naming file and frame if not."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise frame_error(path, "file not found", frame) from None
    except OSError as exc:
        raise frame_error(path, f"cannot read it ({exc.strerror})", frame) from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise frame_error(path, f"is {kind}, not an image file; refused without opening it", frame)
    return st


def refuse_overwrite(inputs: Iterable[tuple[str, int | None]], outputs: Iterable[str | Path],
                     owned_folders: Iterable[str | Path] = ()) -> None:
    """BadInput if any output path is one of the input files, or an input lies in a folder the command owns.

    `inputs`: (path, frame or None) of every file the command reads; `outputs`: every file it may write,
    frame patterns already expanded; `owned_folders`: folders whose whole content the command writes.
    """
    message = overwrite_problem(inputs, outputs, owned_folders)
    if message:
        raise BadInput(message)


def overwrite_problem(inputs: Iterable[tuple[str, int | None]], outputs: Iterable[str | Path],
                      owned_folders: Iterable[str | Path] = ()) -> str | None:
    """The one-line reason `refuse_overwrite` would give, or None (for `validate`, which lists problems)."""
    by_path, by_inode = {}, {}
    for path, frame in inputs:
        path = str(path)
        by_path.setdefault(os.path.realpath(path), (path, frame))
        try:
            st = os.stat(path)
        except OSError:
            continue
        by_inode.setdefault((st.st_dev, st.st_ino), (path, frame))
    for output in outputs:
        real = os.path.realpath(output)
        hit = by_path.get(real)
        if hit is None:
            try:
                st = os.stat(output)
            except OSError:
                st = None
            hit = by_inode.get((st.st_dev, st.st_ino)) if st is not None else None
        if hit is not None:
            return _refusal(output, *hit)
    for folder in owned_folders:
        root = os.path.realpath(folder)
        for real, (path, frame) in by_path.items():
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return (f"{folder}: the output folder this command fills holds its input {path}"
                        f"{_frame(frame)}; refused before writing anything (choose another output folder)")
    return None


def _frame(frame) -> str:
    return "" if frame is None else f" (frame {frame})"


def _refusal(output, path, frame) -> str:
    same = "" if os.path.abspath(output) == os.path.abspath(path) else f" (the same file as {output})"
    return (f"{path}{_frame(frame)}: the output would write over this input{same}; refused before writing "
            "anything (choose another output path or name)")
