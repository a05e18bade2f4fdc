"""Errors that reach the user as one line and an exit code.

Exit codes are part of the farm contract (docs/farm.md):
0 done, 1 internal error, 2 bad input (do not retry), 3 transient resource failure (retry),
4 QC failed (`vera-render qc`: an untouched pixel changed).

`machine_error` maps what the machine refuses (permissions, read-only filesystem, a name too long, full disk,
out of memory) to those codes, in this one place.
"""

import errno
import json
import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_TRANSIENT = 3
EXIT_QC_FAILED = 4


class VeraError(Exception):
    """An error with a one-line message meant for a person, and the exit code it maps to."""

    exit_code = EXIT_INTERNAL


class BadInput(VeraError):
    """The input is wrong (missing/corrupt frame, bad spec, bad option). Retrying will not help."""

    exit_code = EXIT_BAD_INPUT


class TransientError(VeraError):
    """A resource ran out (GPU memory, a lock held too long). The farm should retry the task."""

    exit_code = EXIT_TRANSIENT


def frame_error(path, message, frame=None) -> BadInput:
    """The standard shape of a bad-input message: names the file and, when known, the frame."""
    where = f"{path}" if frame is None else f"{path} (frame {frame})"
    return BadInput(f"{where}: {message}")


def unreadable_reason(path) -> str | None:
    """Why the system will not open `path` for reading ('permission denied', ...), or None if it opens.

    Asked after a library failed to read a file, so that its generic "corrupt" message never hides the real
    cause. O_NONBLOCK: a FIFO named like a frame must not make this wait for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    os.close(fd)
    return None


def unreadable_or(path, message: str, frame=None) -> BadInput:
    """The BadInput for a file a library could not read: the system's reason if it has one, else `message`."""
    reason = unreadable_reason(path)
    return frame_error(path, f"cannot open the file: {reason}" if reason else message, frame)


def read_json_object(path, what: str) -> dict:
    """The JSON object in the file `path` (a `what`: "bundle manifest", "sample.json", ...); anything else there
    (unreadable, not UTF-8, not JSON, not an object) is the user's file and a BadInput naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # the reason keeps a JSON error's line/column
        raise BadInput(f"{path}: not a valid {what} ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a valid {what} (expected a JSON object, got {type(data).__name__})")
    return data


# errno -> (exit code class, what to say). Permissions and names are the user's to fix (2); space and memory
# come back when other work finishes or on another node (3).
_MACHINE_ERRNOS = {
    errno.EACCES: ("bad", "permission denied for the user running vera (check the owner and mode of the file "
                          "and its folder)"),
    errno.EPERM: ("bad", "operation not permitted for the user running vera (check the owner and mode of the "
                         "file and its folder)"),
    errno.EROFS: ("bad", "read-only file system (send the output to a writable place)"),
    errno.ENAMETOOLONG: ("bad", "file name too long for the file system (shorten the name)"),
    errno.EISDIR: ("bad", "is a folder where a file belongs (name a file)"),
    errno.ENOTDIR: ("bad", "a part of this path is a file where a folder belongs"),
    errno.ENOSPC: ("transient", "no space left on the device (free some, then re-run: finished work is kept)"),
    errno.EDQUOT: ("transient", "disk quota exceeded (free some, then re-run: finished work is kept)"),
    errno.ENOMEM: ("transient", "out of memory (retry on a node with more memory, or render a smaller window)"),
}
# Allocators that say so only in words: torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory"),
# torch's CUDA allocator ("CUDA out of memory").
_OUT_OF_MEMORY_WORDS = ("can't allocate memory", "out of memory")


def machine_error(exc: BaseException) -> VeraError | None:
    """The error `exc` means if the machine refused (see _MACHINE_ERRNOS), else None.

    Libraries that flatten the OS error into their own message (OpenEXR: RuntimeError "... No space left on
    device.") are recognised by the system's own wording of the errno (os.strerror).
    """
    code = exc.errno if isinstance(exc, OSError) else None
    text = str(exc)
    if isinstance(exc, MemoryError) or _is_torch_out_of_memory(exc) or \
            any(words in text.lower() for words in _OUT_OF_MEMORY_WORDS):
        code = errno.ENOMEM
    if code is None:
        code = next((c for c in _MACHINE_ERRNOS if os.strerror(c) in text), None)
    if code not in _MACHINE_ERRNOS:
        return None
    kind, meaning = _MACHINE_ERRNOS[code]
    where = exc.filename if isinstance(exc, OSError) else None
    if where:
        message = f"{where}: {meaning}"
    else:  # the library's own line names the file
        message = f"{meaning}: {(text.splitlines() or [type(exc).__name__])[0][:300]}"
    return (BadInput if kind == "bad" else TransientError)(message)


def _is_torch_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # only if already loaded: a failure before torch cannot be torch's
    return torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ()))
