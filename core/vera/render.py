"""The farm-facing runner: render a shot as windows, assemble them, and keep a manifest of what is done.

Layout of a shot's output folder (`output.dir` of the spec):

    OUT/<name>.####.exr            final frames (edit layer + matte), written by `assemble`
    OUT/manifest.json              settings, input fingerprints, per-window / per-frame status and sha256
    OUT/.vera/manifest.lock        flock'd for every read-modify-write of the manifest
    OUT/.vera/cache/w###/          one window's frames (private to the task rendering that window)
    OUT/.vera/locks/               one lock per window task and one for assemble

Every file is written atomically (temp file beside it, then rename), so a task killed at any moment leaves
either the old file or the new one. A re-run skips the windows and frames whose files exist and match the
checksums in the manifest, and redoes the rest. A manifest written with different settings (anything that
changes pixels) is never mixed with new work unless `force=True`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vera.atomic import atomic_write_text
from vera.errors import BadInput, VeraError, read_json_object
from vera.progress import Progress
from vera.plates import compact_frames
from vera.shot import ShotSpec, fitted_overlap, load_valid
from vera.windows import Window, blend_weights, cross_fade, plan_windows, window_seed

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
_PARTIAL_HEAD_TAIL = 1 << 20  # bytes of a big weight file that go into the bundle identity (head and tail)
_SMALL_FILE = 4 << 20  # bundle files up to this size are hashed whole


# ---------------------------------------------------------------------------------------------------------
# The shot: a valid spec plus everything derived from it.

@dataclass
class Shot:
    spec: ShotSpec
    spec_path: Path
    window_frames: int
    windows: list[Window]

    @property
    def out_dir(self) -> Path:
        return Path(self.spec.resolve(self.spec.output.dir))

    @property
    def frames(self) -> list[int]:
        return list(range(self.spec.plate.first, self.spec.plate.last + 1))

    def frame_name(self, frame: int) -> str:
        return frame_file_name(self.spec.output.name, self.spec.output.padding, frame)

    def frame_path(self, frame: int) -> Path:
        return self.out_dir / self.frame_name(frame)

    def cache_dir(self, index: int) -> Path:
        return self.out_dir / ".vera" / "cache" / f"w{index:03d}"

    def cache_path(self, index: int, frame: int) -> Path:
        return self.cache_dir(index) / self.frame_name(frame)

    def window(self, index: int) -> Window:
        if not 0 <= index < len(self.windows):
            raise BadInput(f"{self.spec_path}: window {index} does not exist "
                           f"(this shot has windows 0-{len(self.windows) - 1})")
        return self.windows[index]


def frame_file_name(name: str, padding: int, frame: int) -> str:
    return f"{name}.{frame:0{padding}d}.exr"


def output_files(out_dir: Path, name: str, padding: int, frames) -> tuple[list[Path], list[Path]]:
    """(files, folders) a render of `frames` writes in `out_dir`: the final frames and the manifest, and the
    `.vera` folder (window cache, locks) that it fills whole. What `vera.files.refuse_overwrite` checks."""
    out_dir = Path(out_dir)
    files = [out_dir / frame_file_name(name, padding, frame) for frame in frames] + [out_dir / MANIFEST_NAME]
    return files, [out_dir / ".vera"]


def load_shot(spec_path: str | Path) -> Shot:
    """Validate the spec (every problem at once) and plan its windows."""
    spec_path = Path(spec_path).resolve()
    spec = load_valid(spec_path)
    frames = spec.window.frames or _bundle_window_frames(spec)
    overlap = spec.window.overlap if spec.window.frames else fitted_overlap(spec.window.overlap, frames)
    try:
        windows = plan_windows(spec.plate.first, spec.plate.last, frames, overlap)
    except BadInput as exc:  # only reachable with the bundle's default window; validate checked the rest
        raise BadInput(f"{spec_path}: window: {exc} (the model's default window is {frames} frames)") from None
    return Shot(spec, spec_path, frames, windows)


def _bundle_path(spec: ShotSpec) -> str:
    return "demo" if spec.model.bundle == "demo" else spec.resolve(spec.model.bundle)


def _load_bundle(spec: ShotSpec, strategy=None, mesh=None, compile: bool = False):
    from vera.model.bundle import load_bundle

    bundle = load_bundle(_bundle_path(spec), device=spec.model.device, strategy=strategy, mesh=mesh,
                         student=spec.speed == "turbo")
    if compile:
        from vera.speed import compile_blocks

        compile_blocks(bundle.transformer)
    return bundle


def _bundle_window_frames(spec: ShotSpec) -> int:
    """The bundle's default window (from bundle.json; no weights loaded), for specs without window.frames."""
    from vera.model.bundle import read_manifest as read_bundle_manifest

    return int(read_bundle_manifest(_bundle_path(spec))["defaults"]["window"])


def _render_frames(bundle, spec: ShotSpec, frames: list[int], seed: int, progress):
    """The model's work for one window (vera.pipeline); a seam tests replace with a cheap renderer."""
    from vera.pipeline import render_frames

    return render_frames(bundle, spec, frames, seed, progress)


# ---------------------------------------------------------------------------------------------------------
# Fingerprints: what decides the pixels, and what the inputs were.

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundle_identity(spec: ShotSpec) -> str:
    """A stable id of the model bundle's contents, cheap enough to compute in every task.

    Small files (configs, tokenizer) are hashed whole; big weight files by name, size and their first and
    last MiB: weights retrained in place change those bytes, while copies on other machines (other mtimes)
    keep the same id.
    """
    from vera.model.bundle import bundle_folder

    root = bundle_folder(_bundle_path(spec))
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        h.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= _SMALL_FILE:
                h.update(f.read())
            else:
                h.update(f.read(_PARTIAL_HEAD_TAIL))
                f.seek(-_PARTIAL_HEAD_TAIL, os.SEEK_END)
                h.update(f.read())
    label = "demo" if spec.model.bundle == "demo" else root.name
    return f"{label}:{h.hexdigest()[:16]}"


def settings_of(shot: Shot) -> dict:
    """Everything that changes pixels: the spec without where/how outputs are stored, plus model identity.

    The device is left out on purpose: farm nodes resolve `auto` differently, and a shot may mix them. The
    bundle's path is replaced by its content identity, so a moved bundle is still the same model.
    """
    import vera

    spec = shot.spec.to_dict()
    for key in ("output", "name"):
        spec.pop(key)
    for key in ("device", "bundle"):
        spec["model"].pop(key)
    spec["window"]["frames"] = shot.window_frames
    return {"spec": spec, "bundle": bundle_identity(shot.spec), "vera": vera.__version__}


def _fingerprint(data) -> str:
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
    """A local cache of input files' sha256 keyed by path, size, mtime and inode, so a task re-hashes only
    files that changed (or that it sees at a new path: a copied folder is hashed once, then resumes).
    Only a cache: losing it (or a concurrent task's update) costs a re-hash, never a wrong answer."""

    def __init__(self, path: Path):
        self.path, self.changed = path, False
        try:
            self.entries = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(self.entries, dict):
                self.entries = {}
        except (OSError, ValueError):
            self.entries = {}

    def size_and_hash(self, file_path: str) -> list:
        st = os.stat(file_path)
        key = os.path.realpath(file_path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(key)
        if not (isinstance(entry, list) and entry[:3] == stamp and len(entry) == 4):
            entry = self.entries[key] = stamp + [_sha256_file(Path(file_path))]
            self.changed = True
        return [st.st_size, entry[3]]

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


# ---------------------------------------------------------------------------------------------------------
# The manifest: one JSON file, changed only under an exclusive flock, written atomically.

@contextlib.contextmanager
def _flock(path: Path, shared: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove_temps(folder: Path, prefix: str = ".") -> None:
    """Remove temp files of atomic writes that a killed process left behind (only called by their owner)."""
    if folder.is_dir():
        for tmp in folder.glob(f"{prefix}*.tmp"):
            tmp.unlink(missing_ok=True)


class DamagedManifest(BadInput):
    """manifest.json is unreadable or does not fit its schema (vera.schemas.RenderManifest)."""


_RECOVER = ("; the files it lists are left as they are: `vera-render run SHOT.json --force` sets it aside as "
            f"{MANIFEST_NAME}.damaged and renders the shot afresh")


def read_manifest(out_dir: Path) -> dict | None:
    """The manifest, checked against its schema (one line naming the file and field if it is damaged)."""
    from vera.schemas import RenderManifest, check

    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json_object(path, "manifest")
    except BadInput as exc:
        raise DamagedManifest(f"{exc}{_RECOVER}") from None
    version = manifest.get("vera_manifest")
    if type(version) is int and version > MANIFEST_VERSION:  # written by a newer vera: not damaged, not ours
        raise BadInput(f"{path}: field vera_manifest: version {version} is newer than this vera reads "
                       f"({MANIFEST_VERSION}); use a newer vera")
    try:
        check(RenderManifest, manifest, str(path))
    except BadInput as exc:
        raise DamagedManifest(f"{exc}{_RECOVER}") from None
    return manifest


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    manifest["updated"] = _now()
    atomic_write_text(Path(out_dir) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def manifest_transaction(out_dir: Path, set_aside_damaged: bool = False):
    """Read-modify-write of the manifest under an exclusive lock. Yields [manifest or None]; whatever is in
    the list when the block ends (without an exception) is written. `set_aside_damaged` (--force) renames a
    damaged manifest to manifest.json.damaged (kept for a person to read) and starts from None."""
    out_dir = Path(out_dir)
    with _flock(out_dir / ".vera" / "manifest.lock"):
        _remove_temps(out_dir, f".{MANIFEST_NAME}.")
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


def _now() -> str:
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
        "settings_fingerprint": _fingerprint(settings),
        "settings": settings,
        "inputs_fingerprint": _fingerprint(inputs),
        "inputs": inputs,
        "windows": {str(w.index): {"first": w.first, "last": w.last, "status": "missing"} for w in shot.windows},
        "frames": {},
        "created": _now(),
    }


def _reconcile(manifest: dict | None, shot: Shot, settings: dict, inputs: dict, force: bool) -> dict:
    """The manifest to work with: a new one, the existing one, or (force) a fresh one replacing stale work."""
    if manifest is None:
        return _new_manifest(shot, settings, inputs)
    where = shot.out_dir / MANIFEST_NAME
    reasons = []
    if manifest.get("settings_fingerprint") != _fingerprint(settings):
        keys = _changed_keys(manifest.get("settings", {}), settings)
        reasons.append(f"settings differ ({', '.join(keys[:6]) or 'unknown'})")
    if manifest.get("inputs_fingerprint") != _fingerprint(inputs):
        changed = _changed_keys(manifest.get("inputs", {}), inputs)  # "plate.1007", "mask.1010", ...
        frames = sorted({int(k.rpartition(".")[2]) for k in changed if k.rpartition(".")[2].isdigit()})
        reasons.append(f"input files changed ({compact_frames(frames) or ', '.join(changed[:4])})")
    if not reasons:
        return manifest
    if not force:
        raise BadInput(f"{where}: the outputs there were rendered differently: {'; '.join(reasons)}. "
                       "Use --force to discard them and re-render, or set another output.dir")
    _say_what_force_leaves(shot)
    return _new_manifest(shot, settings, inputs)


def final_frames_on_disk(out_dir: Path, name: str, padding: int) -> list[int]:
    """Frame numbers of the final frames (<name>.<frame>.exr, this padding) in `out_dir`."""
    pattern = re.compile(re.escape(name) + r"\.(-?\d+)\.exr$")
    try:
        names = os.listdir(out_dir)
    except OSError:
        return []
    frames = []
    for file_name in names:
        m = pattern.match(file_name)
        if m and frame_file_name(name, padding, int(m.group(1))) == file_name:
            frames.append(int(m.group(1)))
    return sorted(frames)


def _say_what_force_leaves(shot: Shot) -> None:
    """--force starts a new manifest: final frames outside the new range keep the old settings' layers. They
    are not deleted (they may be someone's delivered frames); `status` and `qc` flag them as other settings."""
    spec = shot.spec
    outside = [f for f in final_frames_on_disk(shot.out_dir, spec.output.name, spec.output.padding)
               if not spec.plate.first <= f <= spec.plate.last]
    if outside:
        print(f"vera-render: warning: --force leaves {len(outside)} frames made with other settings in "
              f"{shot.out_dir}, outside the new range {spec.plate.first}-{spec.plate.last}: "
              f"{compact_frames(outside)} (delete or re-render them; `status` and `qc` flag them)", file=sys.stderr)


def prepare_manifest(shot: Shot, force: bool = False) -> tuple[dict, dict]:
    """Settings and inputs of this shot, registered in the manifest (refusing to mix unless forced)."""
    settings, inputs = settings_of(shot), inputs_of(shot)
    with manifest_transaction(shot.out_dir, set_aside_damaged=force) as box:
        box[0] = _reconcile(box[0], shot, settings, inputs, force)
    return settings, inputs


# ---------------------------------------------------------------------------------------------------------
# Frame files: the cache holds each window's layers, assemble blends them into the final frames.

def _write_cache_frame(path: Path, rgba: np.ndarray, matte: np.ndarray, display_window, attributes: dict) -> str:
    """One window's frame: R,G,B,A premultiplied + matte.A in float (assemble then rounds to half only once),
    written atomically; returns the file's sha256."""
    from vera.exr import vera_attributes, write_exr

    channels = {"R": rgba[..., 0], "G": rgba[..., 1], "B": rgba[..., 2], "A": rgba[..., 3], "matte.A": matte}
    write_exr(path, channels, display_window, pixel_type="float", attributes=vera_attributes(attributes),
              compression="zip")
    return _sha256_file(path)


def _read_cache_frame(path: Path, frame: int):
    """(rgba (H,W,4) float32 over the display window, display window, header attributes) of a cached frame."""
    from vera.exr import read_layer

    layer = read_layer(path, "rgba", frame)
    return layer.pixels, layer.display_window, layer.attributes


def _write_final_frame(path: Path, rgba: np.ndarray, display_window, attributes: dict, compression: str,
                       plate_data_window=None) -> str:
    from vera.exr import write_layers

    write_layers(path, rgba, display_window, attributes, compression, plate_data_window)
    return _sha256_file(path)


def _window_done(entry: dict, shot: Shot, index: int) -> bool:
    """True when the manifest says the window is done and every cached frame still matches its checksum."""
    if entry.get("status") != "done":
        return False
    window = shot.windows[index]
    recorded = entry.get("frames", {})
    for frame in window.frames:
        path = shot.cache_path(index, frame)
        if str(frame) not in recorded or not path.is_file() or _sha256_file(path) != recorded[str(frame)]:
            return False
    return True


def render_window(shot: Shot, index: int, force: bool = False, progress: str = "auto", get_bundle=None) -> str:
    """Render one window into its cache folder (what one farm task does). Returns 'rendered' or 'skipped'.

    `get_bundle()` returns the loaded model (lets `run` load it once for every window).
    """
    window = shot.window(index)
    settings, _ = prepare_manifest(shot, force)
    fingerprint = _fingerprint(settings)
    # One task per window at a time: a duplicate attempt waits here, then finds the window done. While this
    # lock is held nobody else writes this window's cache or its manifest entry.
    with _flock(shot.out_dir / ".vera" / "locks" / f"w{index:03d}.lock"):
        with manifest_transaction(shot.out_dir) as box:
            entry = dict(box[0]["windows"].get(str(index), {}))
        if _window_done(entry, shot, index):
            return "skipped"
        with manifest_transaction(shot.out_dir) as box:
            _check_unchanged(box[0], fingerprint, shot, f"window {index} started")
            entry = box[0]["windows"].setdefault(str(index), {"first": window.first, "last": window.last})
            entry.update(status="running", host=socket.gethostname(), pid=os.getpid(), started=_now(),
                         attempts=entry.get("attempts", 0) + 1, error=None, frames={})
        try:
            hashes, attributes, evaluations = _render_window_files(shot, window, progress,
                                                                   get_bundle or (lambda: _load_bundle(shot.spec)))
        except BaseException as exc:
            with manifest_transaction(shot.out_dir) as box:
                if box[0] is not None and box[0]["settings_fingerprint"] == fingerprint:
                    box[0]["windows"][str(index)].update(
                        status="failed", finished=_now(),
                        error=(f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300])
            raise
        with manifest_transaction(shot.out_dir) as box:
            _check_unchanged(box[0], fingerprint, shot, f"window {index} rendered; its frames were not recorded")
            box[0]["windows"][str(index)].update(status="done", finished=_now(), frames=hashes,
                                                 attributes=attributes)
            if evaluations is not None:
                box[0]["windows"][str(index)]["layer_evaluations"] = evaluations
    return "rendered"


def _check_unchanged(manifest: dict | None, fingerprint: str, shot: Shot, what: str) -> None:
    if manifest is None or manifest.get("settings_fingerprint") != fingerprint:
        raise BadInput(f"{shot.out_dir / MANIFEST_NAME}: the shot was reset with other settings (--force) "
                       f"while {what}")


def _layer_evaluations(bundle) -> dict | None:
    """The model's running count of joint-layer evaluations {"full", "skipped"} (vera.speed), if it has one."""
    from vera.speed import layer_count

    model = getattr(bundle, "transformer", None)
    return None if model is None else layer_count(model).as_dict()


def _render_window_files(shot: Shot, window: Window, progress: str, get_bundle) -> tuple[dict, dict, dict]:
    """Render and cache one window's frames: ({frame: sha256}, the header attributes they carry, the
    joint-layer evaluations {"full", "skipped"} of the window, or None when the renderer has no model)."""
    from vera.pipeline import layer_attributes

    cache = shot.cache_dir(window.index)
    _remove_temps(cache)  # this task owns the folder (window lock held)
    bundle = get_bundle()
    seed = window_seed(shot.spec.seed, window.index)
    from vera.pipeline import NonFiniteOutput

    before = _layer_evaluations(bundle)
    with Progress(len(window), f"{shot.spec.name} window {window.index}", progress) as bar:
        try:
            layers = _render_frames(bundle, shot.spec, window.frames, seed, bar)
        except NonFiniteOutput as exc:
            raise _non_finite(shot, window, str(exc)) from None
    after = _layer_evaluations(bundle)
    evaluations = None if before is None else {k: after[k] - before[k] for k in before}
    missing = [f for f in window.frames if f not in layers]
    if missing:
        raise VeraError(f"the pipeline returned no layers for frames {compact_frames(missing)}")
    _refuse_non_finite(shot, window, layers)
    spec = shot.spec
    plate = spec.open_plate(window.first, window.last)
    display_window = plate.display_window
    attributes = dict(layer_attributes(bundle, spec, seed), shot=spec.name, window=window.index)
    hashes = {}
    for frame in window.frames:
        rgba, matte = layers[frame]
        hashes[str(frame)] = _write_cache_frame(shot.cache_path(window.index, frame), rgba, matte, display_window,
                                                dict(attributes, source=plate.path(frame)))
    return hashes, attributes, evaluations


def _refuse_non_finite(shot: Shot, window: Window, layers: dict) -> None:
    """Never write a layer holding NaN/inf (NaN weights, a sampler blow-up). The same model, seed and settings
    give the same values again, so this is bad input (exit 2: fix the bundle or the sampler), not a retry."""
    counts = {}
    for frame in window.frames:
        rgba, matte = layers[frame]
        count = int(np.count_nonzero(~np.isfinite(rgba)) + np.count_nonzero(~np.isfinite(matte)))
        if count:
            counts[frame] = count
    if counts:
        raise _non_finite(shot, window, f"{sum(counts.values())} NaN/inf values in the layers of frames "
                                        f"{compact_frames(counts)}")


def _non_finite(shot: Shot, window: Window, what: str) -> BadInput:
    return BadInput(f"{shot.spec_path}: window {window.index} ({window.first}-{window.last}): the model output "
                    f"{what}; refused to write them (check the model bundle's weights and sampler.guidance / "
                    "sampler.shift)")


def assemble(shot: Shot, force: bool = False, progress: str = "auto") -> dict:
    """Blend the windows' cached frames into the final frames. Returns counts {'written', 'skipped'}."""
    settings, _ = prepare_manifest(shot, force)
    fingerprint = _fingerprint(settings)
    with _flock(shot.out_dir / ".vera" / "locks" / "assemble.lock"):
        _remove_temps(shot.out_dir, f".{shot.spec.output.name}.")  # left by a killed assemble
        with manifest_transaction(shot.out_dir) as box:
            windows = dict(box[0]["windows"])
            recorded = dict(box[0]["frames"])
        not_done = [i for i in range(len(shot.windows)) if not _window_done(windows.get(str(i), {}), shot, i)]
        if not_done:
            states = {i: windows.get(str(i), {}).get("status", "missing") for i in not_done}
            listed = ", ".join(f"{i} ({'cached frames missing or changed' if state == 'done' else state})"
                               for i, state in states.items())
            raise BadInput(f"{shot.spec_path}: cannot assemble, windows not rendered: {listed}; run "
                           f"`vera-render run {shot.spec_path} --window N` for each")
        sources = {i: dict(windows[str(i)]["frames"]) for i in range(len(shot.windows))}
        made_with = {i: windows[str(i)].get("attributes", {}) for i in range(len(shot.windows))}
        counts = {"written": 0, "skipped": 0}
        plate = shot.spec.open_plate(shot.frames[0], shot.frames[-1])  # each frame's overscan (data window)
        with Progress(len(shot.frames), f"{shot.spec.name} assemble", progress) as bar:
            for frame in shot.frames:
                weights = blend_weights(shot.windows, frame)
                used = {str(i): sources[i][str(frame)] for i, _ in weights}
                path = shot.frame_path(frame)
                entry = recorded.get(str(frame), {})
                if (entry.get("status") == "done" and entry.get("sources") == used and path.is_file()
                        and _sha256_file(path) == entry.get("sha256")):
                    counts["skipped"] += 1
                    bar.advance(1, f"frame {frame} (kept)")
                    continue
                try:
                    digest = _assemble_frame(shot, frame, weights, sources, made_with, fingerprint, path,
                                             plate.data_window(frame))
                except Exception as exc:
                    with manifest_transaction(shot.out_dir) as box:
                        if box[0] is not None and box[0]["settings_fingerprint"] == fingerprint:
                            box[0]["frames"][str(frame)] = {"status": "failed", "finished": _now(),
                                                            "error": f"{type(exc).__name__}: {exc}"[:300]}
                    raise
                with manifest_transaction(shot.out_dir) as box:
                    _check_unchanged(box[0], fingerprint, shot, "assembling")
                    box[0]["frames"][str(frame)] = {"status": "done", "sha256": digest, "sources": used,
                                                    "finished": _now()}
                counts["written"] += 1
                bar.advance(1, f"frame {frame}")
    return counts


def _assemble_frame(shot: Shot, frame: int, weights, sources, made_with, fingerprint: str, path: Path,
                    plate_data_window=None) -> str:
    terms, seeds, display_window, header = [], [], None, {}
    for index, weight in weights:
        cached = shot.cache_path(index, frame)
        if _sha256_file(cached) != sources[index][str(frame)]:
            raise BadInput(f"{cached}: cached frame changed since window {index} recorded it (frame {frame}); "
                           f"re-run window {index}")
        rgba, display_window, header = _read_cache_frame(cached, frame)
        terms.append((weight, rgba))
        seed = header.get("vera/seed")  # the seed recorded with the window's pixels
        seeds.append(seed if isinstance(seed, int) else window_seed(shot.spec.seed, index))
    rgba = cross_fade(terms, shot.spec.matte.threshold)
    # The output is half: where alpha rounds to 0 there, the edit must add nothing (premultiplied RGB 0).
    rgba[rgba[..., 3].astype(np.float16) == 0] = 0.0
    # How the layer was made (prompt, model, sampler...), as the window recorded it. Seed and window are ints,
    # an int pair (EXR V2i) on a cross-faded frame; source is this frame's plate file (docs/output-format.md).
    attributes = dict(made_with[weights[0][0]])
    indices = [int(i) for i, _ in weights]
    pair = len(weights) > 1
    attributes.update(seed=np.array(seeds, np.int32) if pair else seeds[0],
                      window=np.array(indices, np.int32) if pair else indices[0], settings=fingerprint)
    if "vera/source" in header:
        attributes["source"] = header["vera/source"]
    return _write_final_frame(path, rgba, display_window, attributes, shot.spec.output.compression,
                              plate_data_window)


def run(shot: Shot, window: int | None = None, force: bool = False, progress: str = "auto",
        load_bundle=None, compile: bool = False) -> dict:
    """`vera-render run`: one window (a farm task), or every window then assemble (a whole shot).
    `load_bundle()` loads the model (default: the spec's bundle, resident; vera.launch passes its strategy's);
    `compile`: torch.compile the joint layer (vera.speed.compile_blocks) once the model is loaded."""
    load_bundle = load_bundle or (lambda: _load_bundle(shot.spec, compile=compile))
    loaded = []

    def get_bundle():  # loaded once, and only if some window needs rendering
        if not loaded:
            loaded.append(load_bundle())
        return loaded[0]

    if window is not None:
        return {"window": window, "result": render_window(shot, window, force, progress, get_bundle)}

    results = {}
    for w in shot.windows:
        results[w.index] = render_window(shot, w.index, force, progress, get_bundle)
        force = False  # the first window reset a stale manifest; later ones must not reset it again
    return {"windows": results, "assemble": assemble(shot, force, progress)}


# ---------------------------------------------------------------------------------------------------------
# Status

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
    done, frame_errors = [], {}
    for key, entry in manifest["frames"].items():
        path = out_dir / f"{stem}.{int(key):0{pad}d}.exr"
        if entry.get("status") == "failed":
            failed_runs.append((int(key), int(key)))
            frame_errors[key] = entry.get("error") or "failed"
        elif entry.get("status") == "done" and path.is_file():
            if verify and _sha256_file(path) != entry["sha256"]:
                failed_runs.append((int(key), int(key)))
                frame_errors[key] = "checksum mismatch (the file changed or is damaged)"
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
                   "other_settings": compact_frames(other), "other_settings_count": len(other)},
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
    import bisect

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


def format_status(report: dict) -> str:
    f, w = report["frames"], report["windows"]
    lines = [f"shot {report['shot']} in {report['out_dir']}: "
             f"{'complete' if report['complete'] else 'incomplete'}",
             f"frames  {f['done_count']}/{f['total']} done" + (f": {f['done']}" if f["done"] else ""),
             f"        missing {f['missing_count']}" + (f": {f['missing']}" if f["missing"] else ""),
             f"        failed {f['failed_count']}" + (f": {f['failed']}" if f["failed"] else ""),
             *([f"        other settings {f['other_settings_count']}: {f['other_settings']} (files here not made "
                "by this render: an earlier one with other settings)"] if f.get("other_settings") else []),
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
