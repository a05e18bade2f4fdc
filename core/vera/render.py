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
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vera.atomic import atomic_write_text
from vera.errors import BadInput, VeraError, read_json_object
from vera.progress import Progress
from vera.plates import compact_frames
from vera.shot import ShotSpec, load_valid
from vera.windows import Window, blend_weights, plan_windows, window_seed

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
        return f"{self.spec.output.name}.{frame:0{self.spec.output.padding}d}.exr"

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


def load_shot(spec_path: str | Path) -> Shot:
    """Validate the spec (every problem at once) and plan its windows."""
    spec_path = Path(spec_path).resolve()
    spec = load_valid(spec_path)
    frames = spec.window.frames or _bundle_window_frames(spec)
    try:
        windows = plan_windows(spec.plate.first, spec.plate.last, frames, spec.window.overlap)
    except BadInput as exc:  # only reachable with the bundle's default window; validate checked the rest
        raise BadInput(f"{spec_path}: window: {exc} (the model's default window is {frames} frames)") from None
    return Shot(spec, spec_path, frames, windows)


def _bundle_path(spec: ShotSpec) -> str:
    return "demo" if spec.model.bundle == "demo" else spec.resolve(spec.model.bundle)


def _load_bundle(spec: ShotSpec, compile: bool = False):
    from vera.model.bundle import load_bundle

    bundle = load_bundle(_bundle_path(spec), device=spec.model.device)
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
    """Size and mtime of every plate (and mask) file the shot reads: a changed plate invalidates renders."""
    spec = shot.spec
    sources = {"plate": spec.open_plate}
    if spec.mask is not None:
        sources["mask"] = spec.open_mask
    result = {}
    for kind, open_source in sources.items():
        seq = open_source(spec.plate.first, spec.plate.last)
        entries = {}
        for frame in seq.frames:
            try:
                st = os.stat(seq.path(frame))
            except FileNotFoundError:
                raise BadInput(f"{seq.path(frame)}: input file disappeared (frame {frame})") from None
            entries[str(frame)] = [st.st_size, st.st_mtime_ns]
        result[kind] = entries
    return result


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


def read_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json_object(path, "manifest")
    except BadInput as exc:
        raise BadInput(f"{exc}; move it away to start the shot afresh") from None
    version = manifest.get("vera_manifest")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise BadInput(f"{path}: manifest version {version!r} is not one this vera reads ({MANIFEST_VERSION})")
    return manifest


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    manifest["updated"] = _now()
    atomic_write_text(Path(out_dir) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def manifest_transaction(out_dir: Path):
    """Read-modify-write of the manifest under an exclusive lock. Yields [manifest or None]; whatever is in
    the list when the block ends (without an exception) is written."""
    out_dir = Path(out_dir)
    with _flock(out_dir / ".vera" / "manifest.lock"):
        _remove_temps(out_dir, f".{MANIFEST_NAME}.")
        box = [read_manifest(out_dir)]
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
    return _new_manifest(shot, settings, inputs)


def prepare_manifest(shot: Shot, force: bool = False) -> tuple[dict, dict]:
    """Settings and inputs of this shot, registered in the manifest (refusing to mix unless forced)."""
    settings, inputs = settings_of(shot), inputs_of(shot)
    with manifest_transaction(shot.out_dir) as box:
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
    """(rgba (H,W,4) float32 over the display window, display window) of a cached frame."""
    from vera.exr import read_layer

    layer = read_layer(path, "rgba", frame)
    return layer.pixels, layer.display_window


def _write_final_frame(path: Path, rgba: np.ndarray, display_window, attributes: dict, compression: str) -> str:
    from vera.exr import write_layers

    write_layers(path, rgba, display_window, attributes, compression)
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
    before = _layer_evaluations(bundle)
    with Progress(len(window), f"{shot.spec.name} window {window.index}", progress) as bar:
        layers = _render_frames(bundle, shot.spec, window.frames, seed, bar)
    after = _layer_evaluations(bundle)
    evaluations = None if before is None else {k: after[k] - before[k] for k in before}
    missing = [f for f in window.frames if f not in layers]
    if missing:
        raise VeraError(f"the pipeline returned no layers for frames {compact_frames(missing)}")
    spec = shot.spec
    display_window = spec.open_plate(window.first, window.last).display_window
    attributes = dict(layer_attributes(bundle, spec, seed), shot=spec.name, window=window.index)
    hashes = {}
    for frame in window.frames:
        rgba, matte = layers[frame]
        hashes[str(frame)] = _write_cache_frame(shot.cache_path(window.index, frame), rgba, matte,
                                                display_window, attributes)
    return hashes, attributes, evaluations


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
                    digest = _assemble_frame(shot, frame, weights, sources, made_with, fingerprint, path)
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


def _assemble_frame(shot: Shot, frame: int, weights, sources, made_with, fingerprint: str, path: Path) -> str:
    blended = display_window = None
    for index, weight in weights:
        cached = shot.cache_path(index, frame)
        if _sha256_file(cached) != sources[index][str(frame)]:
            raise BadInput(f"{cached}: cached frame changed since window {index} recorded it (frame {frame}); "
                           f"re-run window {index}")
        rgba, display_window = _read_cache_frame(cached, frame)
        # A linear blend of premultiplied colour is a correct cross-fade; the weights sum to 1.
        blended = weight * rgba if blended is None else blended + weight * rgba
    rgba = blended.astype(np.float32)
    # The output is half: where alpha rounds to 0 there, the edit must add nothing (premultiplied RGB 0).
    rgba[rgba[..., 3].astype(np.float16) == 0] = 0.0
    # How the layer was made (prompt, model, sampler...), as the window recorded it; seeds of every window used.
    attributes = dict(made_with[weights[0][0]])
    attributes.update(seed=",".join(str(made_with[i].get("seed", "")) for i, _ in weights),
                      window=",".join(str(i) for i, _ in weights), settings=fingerprint)
    return _write_final_frame(path, rgba, display_window, attributes, shot.spec.output.compression)


def run(shot: Shot, window: int | None = None, force: bool = False, progress: str = "auto",
        compile: bool = False) -> dict:
    """`vera-render run`: one window (a farm task), or every window then assemble (a whole shot).
    `compile`: torch.compile the joint layer (vera.speed.compile_blocks) once the model is loaded."""
    loaded = []

    def get_bundle():  # loaded once, and only if some window needs rendering
        if not loaded:
            loaded.append(_load_bundle(shot.spec, compile))
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
    """Done, missing and failed frames and windows of a shot's output folder (from its manifest)."""
    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST_NAME).is_file():
        raise BadInput(f"{out_dir}: no {MANIFEST_NAME} (nothing rendered here yet, or not a shot output folder)")
    with _flock(out_dir / ".vera" / "manifest.lock", shared=True):
        manifest = read_manifest(out_dir)
    host = socket.gethostname()
    windows = {"done": [], "running": [], "failed": [], "missing": []}
    errors = {}
    failed_frames: set[int] = set()
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
            failed_frames.update(range(entry["first"], entry["last"] + 1))
    stem, pad = manifest["output_name"], manifest["output_padding"]
    done, frame_errors = [], {}
    for key, entry in manifest["frames"].items():
        path = out_dir / f"{stem}.{int(key):0{pad}d}.exr"
        if entry.get("status") == "failed":
            failed_frames.add(int(key))
            frame_errors[key] = entry.get("error") or "failed"
        elif entry.get("status") == "done" and path.is_file():
            if verify and _sha256_file(path) != entry["sha256"]:
                failed_frames.add(int(key))
                frame_errors[key] = "checksum mismatch (the file changed or is damaged)"
            else:
                done.append(int(key))
    all_frames = set(range(manifest["first"], manifest["last"] + 1))
    failed = (failed_frames & all_frames) - set(done)
    missing = all_frames - set(done) - failed
    return {
        "shot": manifest["shot"], "out_dir": str(out_dir), "complete": len(done) == len(all_frames),
        "frames": {"total": len(all_frames), "done": compact_frames(done), "missing": compact_frames(missing),
                   "failed": compact_frames(failed), "done_count": len(done), "missing_count": len(missing),
                   "failed_count": len(failed), "errors": frame_errors},
        "windows": {"total": len(manifest["windows"]), **windows, "errors": {str(k): v for k, v in errors.items()}},
        "layer_evaluations": evaluations,
        "settings_fingerprint": manifest["settings_fingerprint"], "updated": manifest.get("updated"),
    }


def format_status(report: dict) -> str:
    f, w = report["frames"], report["windows"]
    lines = [f"shot {report['shot']} in {report['out_dir']}: "
             f"{'complete' if report['complete'] else 'incomplete'}",
             f"frames  {f['done_count']}/{f['total']} done" + (f": {f['done']}" if f["done"] else ""),
             f"        missing {f['missing_count']}" + (f": {f['missing']}" if f["missing"] else ""),
             f"        failed {f['failed_count']}" + (f": {f['failed']}" if f["failed"] else ""),
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
