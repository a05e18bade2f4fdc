"""The render manifest: what decides the pixels (settings, bundle identity), what the inputs were (their
sha256), and every change to manifest.json as a read-modify-write under an exclusive flock, written atomically.

A manifest written with different settings (anything that changes pixels) or inputs is never mixed with new
work unless `force=True`. Reading it (and the output names) lives below the shot spec, in vera.outputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import vera
from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.jsonio import read_json_object
from vera.layout import Shot, bundle_path
from vera.model.bundle_manifest import bundle_files
from vera.outputs import MANIFEST_NAME, MANIFEST_VERSION, DamagedManifest, read_manifest, sha256_file
from vera.frames import compact_frames
from vera.shot import ShotSpec
from vera.takes import SUPERSEDED, supersede

_PARTIAL_HEAD_TAIL = 1 << 20  # bytes of a big weight file that go into the bundle identity (head and tail)
_SMALL_FILE = 4 << 20  # bundle files up to this size are hashed whole


def bundle_identity(spec: ShotSpec) -> str:
    """A stable id of the model bundle's contents (its folder and the files bundle.json names outside it),
    cheap enough to compute in every task.

    Small files (configs, tokenizer) are hashed whole; big weight files by name, size and their first and
    last MiB: weights retrained in place change those bytes, while copies on other machines (other mtimes)
    keep the same id. Contents only: a bundle folder moved or renamed on a file server is the same model (each
    frame's `vera/model` names the bundle for people).
    """
    _, files = bundle_files(bundle_path(spec))
    h = hashlib.sha256()
    for name, path in files:
        size = path.stat().st_size
        h.update(f"{name}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= _SMALL_FILE:
                h.update(f.read())
            else:
                h.update(f.read(_PARTIAL_HEAD_TAIL))
                f.seek(-_PARTIAL_HEAD_TAIL, os.SEEK_END)
                h.update(f.read())
    return f"sha256:{h.hexdigest()[:16]}"


def settings_of(shot: Shot) -> dict:
    """Everything that changes pixels: the spec without where/how outputs are stored, plus model identity.

    The device is left out on purpose: farm nodes resolve `auto` differently, and a shot may mix them. The
    bundle's path is replaced by its content identity, so a moved bundle is still the same model.
    """
    spec = shot.spec.to_dict()
    for key in ("output", "name"):
        spec.pop(key)
    for key in ("device", "bundle", "attention"):  # the kernel, like the device, is how, not what
        spec["model"].pop(key)
    spec["window"]["frames"] = shot.window_frames
    return {"spec": spec, "bundle": bundle_identity(shot.spec), "vera": vera.__version__}


def fingerprint_of(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def inputs_of(shot: Shot) -> dict:
    """Size and sha256 of every plate (and mask) file the shot reads, by frame: a changed plate invalidates
    renders, a copied or re-mounted shot folder (same bytes, other paths and mtimes) does not."""
    spec = shot.spec
    sources = {"plate": spec.open_plate}
    if spec.mask is not None:
        sources["mask"] = spec.open_mask
    known = _InputHashes(shot.out_dir / ".vera" / "input_hashes.json")
    result = {}
    for kind, open_source in sources.items():
        seq = open_source(spec.plate.first, spec.plate.last)
        entries = {}
        for frame in seq.frames:
            try:
                entries[str(frame)] = known.size_and_hash(seq.path(frame))
            except FileNotFoundError:
                raise BadInput(f"{seq.path(frame)}: input file disappeared (frame {frame})") from None
        result[kind] = entries
    known.save()
    return result


class _InputHashes:
    """A local cache of input files' sha256 keyed by path, size, mtime, ctime and inode, so a task re-hashes
    only files that changed (or that it sees at a new path: a copied folder is hashed once, then resumes).
    Every write to a file sets its ctime to the clock, and no call sets it back (utime sets mtime, not ctime),
    so a plate changed in place with its mtime restored is hashed again.
    Only a cache: losing it (or a concurrent task's update) costs a re-hash, never a wrong answer."""

    def __init__(self, path: Path):
        self.path, self.changed = path, False
        try:
            self.entries = read_json_object(path, "input-hash cache")
        except BadInput:  # missing or damaged: hash afresh
            self.entries = {}

    def size_and_hash(self, file_path: str) -> list:
        st = os.stat(file_path)
        key = os.path.realpath(file_path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self.entries.get(key)
        if not (isinstance(entry, list) and entry[:4] == stamp and len(entry) == 5):
            entry = self.entries[key] = stamp + [sha256_file(Path(file_path))]
            self.changed = True
        return [st.st_size, entry[4]]

    def save(self) -> None:
        if self.changed:
            with contextlib.suppress(OSError):  # a read-only output folder: nothing cached, nothing lost
                atomic_write_text(self.path, json.dumps(self.entries) + "\n")


def _flat(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _changed_keys(old: dict, new: dict) -> list[str]:
    a, b = dict(_flat(old)), dict(_flat(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def remove_temps(folder: Path, prefix: str = ".") -> None:
    """Remove temp files of atomic writes that a killed process left behind (only called by their owner)."""
    if folder.is_dir():
        for tmp in folder.glob(f"{prefix}*.tmp"):
            tmp.unlink(missing_ok=True)


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    manifest["updated"] = utc_now()
    atomic_write_text(Path(out_dir) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def manifest_transaction(out_dir: Path, set_aside_damaged: bool = False):
    """Read-modify-write of the manifest under an exclusive lock. Yields [manifest or None]; whatever is in
    the list when the block ends (without an exception) is written. `set_aside_damaged` (--force) renames a
    damaged manifest to manifest.json.damaged (kept for a person to read) and starts from None."""
    out_dir = Path(out_dir)
    with file_lock(out_dir / ".vera" / "manifest.lock"):
        remove_temps(out_dir, f".{MANIFEST_NAME}.")
        try:
            box = [read_manifest(out_dir)]
        except DamagedManifest:
            if not set_aside_damaged:
                raise
            os.replace(out_dir / MANIFEST_NAME, out_dir / f"{MANIFEST_NAME}.damaged")
            box = [None]
        before = json.dumps(box[0], sort_keys=True)
        yield box
        if box[0] is not None and json.dumps(box[0], sort_keys=True) != before:
            _write_manifest(out_dir, box[0])


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _new_manifest(shot: Shot, settings: dict, inputs: dict) -> dict:
    return {
        "vera_manifest": MANIFEST_VERSION,
        "shot": shot.spec.name,
        "spec_path": str(shot.spec_path),
        "first": shot.spec.plate.first,
        "last": shot.spec.plate.last,
        "output_name": shot.spec.output.name,
        "output_padding": shot.spec.output.padding,
        "settings_fingerprint": fingerprint_of(settings),
        "settings": settings,
        "inputs_fingerprint": fingerprint_of(inputs),
        "inputs": inputs,
        "windows": {str(w.index): {"first": w.first, "last": w.last, "status": "missing"} for w in shot.windows},
        "frames": {},
        "created": utc_now(),
    }


def _reconcile(manifest: dict | None, shot: Shot, settings: dict, inputs: dict, force: bool) -> dict:
    """The manifest to work with: a new one, the existing one, or (force) a fresh one replacing stale work."""
    if manifest is None:
        return _new_manifest(shot, settings, inputs)
    where = shot.out_dir / MANIFEST_NAME
    reasons = []
    if manifest.get("settings_fingerprint") != fingerprint_of(settings):
        keys = _changed_keys(manifest.get("settings", {}), settings)
        reasons.append(f"settings differ ({', '.join(keys[:6]) or 'unknown'})")
    if manifest.get("inputs_fingerprint") != fingerprint_of(inputs):
        changed = _changed_keys(manifest.get("inputs", {}), inputs)  # "plate.1007", "mask.1010", ...
        frames = sorted({int(k.rpartition(".")[2]) for k in changed if k.rpartition(".")[2].isdigit()})
        reasons.append(f"input files changed ({compact_frames(frames) or ', '.join(changed[:4])})")
    if not reasons:
        return manifest
    if not force:
        raise BadInput(f"{where}: the outputs there were rendered differently: {'; '.join(reasons)}. "
                       "Use --force to discard them and re-render, or set another output.dir")
    _set_aside(shot, manifest)
    return _new_manifest(shot, settings, inputs)


def _set_aside(shot: Shot, manifest: dict) -> None:
    """--force starts a new take: the old take's final frames leave the sequence (a Read must not mix two
    takes) for OUT/superseded/<take>/ (vera.takes), never deleted: they may be someone's delivered frames."""
    moved = supersede(shot.out_dir, manifest)
    if moved:
        folder, frames = moved
        print(f"vera-render: --force: the earlier take's {len(frames)} frames ({compact_frames(frames)}) moved "
              f"out of the sequence to {SUPERSEDED}/{folder.name} in {shot.out_dir}", file=sys.stderr)


def prepare_manifest(shot: Shot, force: bool = False) -> tuple[dict, dict]:
    """Settings and inputs of this shot, registered in the manifest (refusing to mix unless forced)."""
    settings, inputs = settings_of(shot), inputs_of(shot)
    with manifest_transaction(shot.out_dir, set_aside_damaged=force) as box:
        box[0] = _reconcile(box[0], shot, settings, inputs, force)
    return settings, inputs
