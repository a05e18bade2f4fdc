"""`vera-render status`: done, missing and failed frames and windows of a shot's output folder, read from its
manifest (vera.outputs) without the renderer, so the Nuke node and the farm wrappers can ask often.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import socket
from pathlib import Path

from vera.errors import BadInput
from vera.outputs import MANIFEST_NAME, final_frames_on_disk, read_manifest, sha256_file
from vera.frames import compact_frames
from vera.takes import SUPERSEDED, superseded_takes


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def status(out_dir: str | Path, verify: bool = False) -> dict:
    """Done, missing and failed frames and windows of a shot's output folder (from its manifest).

    Writes nothing (a finished render on a read-only filesystem can be inspected), and works on frame ranges,
    never on one entry per frame of first..last (a damaged `last` must not fill the memory).
    """
    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST_NAME).is_file():
        raise BadInput(f"{out_dir}: no {MANIFEST_NAME} (nothing rendered here yet, or not a shot output folder)")
    with _read_lock(out_dir / ".vera" / "manifest.lock"):
        manifest = read_manifest(out_dir)
    host = socket.gethostname()
    windows = {"done": [], "running": [], "failed": [], "missing": []}
    errors = {}
    failed_runs: list[tuple[int, int]] = []
    evaluations = {"full": 0, "skipped": 0, "windows": {}}  # joint-layer evaluations of the done windows
    for key, entry in sorted(manifest["windows"].items(), key=lambda kv: int(kv[0])):
        index, state = int(key), entry.get("status", "missing")
        if state == "done" and isinstance(entry.get("layer_evaluations"), dict):
            evaluations["windows"][key] = entry["layer_evaluations"]
            for kind in ("full", "skipped"):
                evaluations[kind] += int(entry["layer_evaluations"].get(kind, 0))
        if state == "running" and entry.get("host") == host and not _pid_alive(entry.get("pid")):
            state, entry = "failed", dict(entry, error="interrupted (its process is gone)")
        windows[state if state in windows else "missing"].append(index)
        if state == "failed":
            errors[index] = entry.get("error") or "failed"
            failed_runs.append((entry["first"], entry["last"]))
    stem, pad = manifest["output_name"], manifest["output_padding"]
    done, frame_errors, mismatches = [], {}, []
    for key, entry in manifest["frames"].items():
        path = out_dir / f"{stem}.{int(key):0{pad}d}.exr"
        if entry.get("status") == "failed":
            failed_runs.append((int(key), int(key)))
            frame_errors[key] = entry.get("error") or "failed"
        elif entry.get("status") == "done" and path.is_file():
            if verify and sha256_file(path) != entry["sha256"]:
                failed_runs.append((int(key), int(key)))
                frame_errors[key] = "checksum mismatch (the file changed or is damaged)"
                mismatches.append(int(key))
            else:
                done.append(int(key))
    done.sort()
    first, last = manifest["first"], manifest["last"]
    failed = _without(_merge_runs(failed_runs), done)
    missing = _gaps(first, last, _merge_runs(failed + [(f, f) for f in done]))
    total = last - first + 1
    # Final frames on disk this manifest did not record as done: left by a render with other settings.
    other = set(final_frames_on_disk(out_dir, stem, pad)) - set(done) - {int(k) for k in frame_errors}
    return {
        "shot": manifest["shot"], "out_dir": str(out_dir), "complete": len(done) == total,
        "frames": {"total": total, "done": compact_frames(done), "missing": _runs_text(missing),
                   "failed": _runs_text(failed), "done_count": len(done), "missing_count": _runs_count(missing),
                   "failed_count": _runs_count(failed), "errors": frame_errors,
                   "other_settings": compact_frames(other), "other_settings_count": len(other),
                   "checksum_mismatches": compact_frames(sorted(mismatches))},
        "superseded": superseded_takes(out_dir),  # earlier takes set aside by --force (vera.takes)
        "windows": {"total": len(manifest["windows"]), **windows, "errors": {str(k): v for k, v in errors.items()}},
        "layer_evaluations": evaluations,
        "settings_fingerprint": manifest["settings_fingerprint"], "updated": manifest.get("updated"),
    }


@contextlib.contextmanager
def _read_lock(path: Path):
    """A shared lock for reading the manifest, taken only if the lock file exists (status never creates one:
    the filesystem may be read-only). An unlocked read is still whole: the manifest is replaced atomically."""
    try:
        f = open(path, "rb")
    except OSError:
        yield
        return
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        yield


# Frame ranges as sorted (first, last) runs: status counts them without listing every frame.
def _merge_runs(runs) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for a, b in sorted(runs):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _without(runs, points: list[int]) -> list[tuple[int, int]]:
    """`runs` minus the sorted frame numbers `points`."""
    out = []
    for a, b in runs:
        for p in points[bisect.bisect_left(points, a):bisect.bisect_right(points, b)]:
            if a < p:
                out.append((a, p - 1))
            a = p + 1
        if a <= b:
            out.append((a, b))
    return out


def _gaps(first: int, last: int, runs) -> list[tuple[int, int]]:
    """The frames of first..last that no run holds."""
    out, at = [], first
    for a, b in runs:
        if a > at:
            out.append((at, a - 1))
        at = max(at, b + 1)
    if at <= last:
        out.append((at, last))
    return out


def _runs_text(runs) -> str:
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _runs_count(runs) -> int:
    return sum(b - a + 1 for a, b in runs)


def superseded_lines(takes: dict) -> list[str]:
    """The takes set aside beside a sequence, in words (status and qc)."""
    return [f"        superseded take {SUPERSEDED}/{take}: {frames or 'no frames'} (an earlier take, out of the "
            "sequence)" for take, frames in takes.items()]


def format_status(report: dict) -> str:
    f, w = report["frames"], report["windows"]
    lines = [f"shot {report['shot']} in {report['out_dir']}: "
             f"{'complete' if report['complete'] else 'incomplete'}",
             f"frames  {f['done_count']}/{f['total']} done" + (f": {f['done']}" if f["done"] else ""),
             f"        missing {f['missing_count']}" + (f": {f['missing']}" if f["missing"] else ""),
             f"        failed {f['failed_count']}" + (f": {f['failed']}" if f["failed"] else ""),
             *([f"        other settings {f['other_settings_count']}: {f['other_settings']} (files here not made "
                "by this render: an earlier one with other settings)"] if f.get("other_settings") else []),
             *superseded_lines(report.get("superseded", {})),
             f"windows {len(w['done'])}/{w['total']} done"
             + (f", running: {compact_frames(w['running'])}" if w["running"] else "")
             + (f", missing: {compact_frames(w['missing'])}" if w["missing"] else "")]
    layers = report.get("layer_evaluations")
    if layers and layers["windows"]:
        per_window = ", ".join(f"w{i} {e.get('full', 0)}/{e.get('skipped', 0)}" for i, e in layers["windows"].items())
        lines.append(f"layers  {layers['full']} evaluated, {layers['skipped']} skipped by the step cache "
                     f"(joint layers x CFG branches; full/skipped per window: {per_window})")
    for index, error in w["errors"].items():
        lines.append(f"        window {index} failed: {error}")
    for frame, error in f["errors"].items():
        lines.append(f"        frame {frame} failed: {error}")
    return "\n".join(lines)
