"""Errors that reach the user as one line and an exit code.

Exit codes are part of the farm contract (docs/farm.md):
0 done, 1 internal error, 2 bad input (do not retry), 3 transient resource failure (retry),
4 QC failed (`vera-render qc`: an untouched pixel changed).
"""

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


def read_json_object(path, what: str) -> dict:
    """The JSON object in the file `path` (a `what`: "bundle manifest", "sample.json", ...); anything else there
    (unreadable, not UTF-8, not JSON, not an object) is the user's file and a BadInput naming it."""
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # the reason keeps a JSON error's line/column
        raise BadInput(f"{path}: not a valid {what} ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a valid {what} (expected a JSON object, got {type(data).__name__})")
    return data
