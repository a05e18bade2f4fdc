"""The farm-facing runner: render a shot (vera.layout) as windows, assemble them, and record each step in the
manifest (vera.manifest).

Every file is written atomically (temp file beside it, then rename), so a task killed at any moment leaves
either the old file or the new one. A re-run skips the windows and frames whose files exist and match the
checksums in the manifest, and redoes the rest. A manifest written with different settings (anything that
changes pixels) is never mixed with new work unless `force=True`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np

from vera.errors import BadInput, VeraError
from vera.exr import read_layer, vera_attributes, write_exr, write_layers
from vera.layout import Shot, bundle_path
from vera.manifest import (file_lock, fingerprint_of, manifest_transaction, prepare_manifest, remove_temps,
                           utc_now)
from vera.loading import load_placed_bundle
from vera.outputs import MANIFEST_NAME, sha256_file
from vera.pipeline import NonFiniteOutput, layer_attributes, render_frames
from vera.frames import compact_frames
from vera.progress import Progress
from vera.rebuild import cross_fade
from vera.shot import ShotSpec
from vera.stepcache import compile_blocks, layer_count
from vera.windows import Window, blend_weights, window_seed


# ---------------------------------------------------------------------------------------------------------
# The model: loaded once per task, and the seam tests replace with a cheap renderer.

def _load_bundle(spec: ShotSpec, strategy=None, mesh=None, compile: bool = False):
    bundle = load_placed_bundle(bundle_path(spec), device=spec.model.device, strategy=strategy, mesh=mesh,
                                attention=spec.model.attention, student=spec.speed == "turbo")
    if compile:
        compile_blocks(bundle.transformer)
    return bundle


def _render_frames(bundle, spec: ShotSpec, frames: list[int], seed: int, progress):
    """The model's work for one window (vera.pipeline); a seam tests replace with a cheap renderer."""
    return render_frames(bundle, spec, frames, seed, progress)


# ---------------------------------------------------------------------------------------------------------
# Frame files: the cache holds each window's layers, assemble blends them into the final frames.

def _write_cache_frame(path: Path, rgba: np.ndarray, matte: np.ndarray, display_window, attributes: dict) -> str:
    """One window's frame: R,G,B,A premultiplied + matte.A in float (assemble then rounds to half only once),
    written atomically; returns the file's sha256."""
    channels = {"R": rgba[..., 0], "G": rgba[..., 1], "B": rgba[..., 2], "A": rgba[..., 3], "matte.A": matte}
    write_exr(path, channels, display_window, pixel_type="float", attributes=vera_attributes(attributes),
              compression="zip")
    return sha256_file(path)


def _read_cache_frame(path: Path, frame: int):
    """(rgba (H,W,4) float32 over the display window, display window, header attributes) of a cached frame."""
    layer = read_layer(path, "rgba", frame)
    return layer.pixels, layer.display_window, layer.attributes


def _write_final_frame(path: Path, rgba: np.ndarray, display_window, attributes: dict, compression: str,
                       plate_data_window=None) -> str:
    write_layers(path, rgba, display_window, attributes, compression, plate_data_window)
    return sha256_file(path)


def _window_done(entry: dict, shot: Shot, index: int) -> bool:
    """True when the manifest says the window is done and every cached frame still matches its checksum."""
    if entry.get("status") != "done":
        return False
    window = shot.windows[index]
    recorded = entry.get("frames", {})
    for frame in window.frames:
        path = shot.cache_path(index, frame)
        if str(frame) not in recorded or not path.is_file() or sha256_file(path) != recorded[str(frame)]:
            return False
    return True


def render_window(shot: Shot, index: int, force: bool = False, progress: str = "auto", get_bundle=None) -> str:
    """Render one window into its cache folder (what one farm task does). Returns 'rendered' or 'skipped'.

    `get_bundle()` returns the loaded model (lets `run` load it once for every window).
    """
    window = shot.window(index)
    settings, _ = prepare_manifest(shot, force)
    fingerprint = fingerprint_of(settings)
    # One task per window at a time: a duplicate attempt waits here, then finds the window done. While this
    # lock is held nobody else writes this window's cache or its manifest entry.
    with file_lock(shot.out_dir / ".vera" / "locks" / f"w{index:03d}.lock"):
        with manifest_transaction(shot.out_dir) as box:
            entry = dict(box[0]["windows"].get(str(index), {}))
        if _window_done(entry, shot, index):
            return "skipped"
        with manifest_transaction(shot.out_dir) as box:
            _check_unchanged(box[0], fingerprint, shot, f"window {index} started")
            entry = box[0]["windows"].setdefault(str(index), {"first": window.first, "last": window.last})
            entry.update(status="running", host=socket.gethostname(), pid=os.getpid(), started=utc_now(),
                         attempts=entry.get("attempts", 0) + 1, error=None, frames={})
        try:
            hashes, attributes, evaluations = _render_window_files(shot, window, progress,
                                                                   get_bundle or (lambda: _load_bundle(shot.spec)))
        except BaseException as exc:
            with manifest_transaction(shot.out_dir) as box:
                if box[0] is not None and box[0]["settings_fingerprint"] == fingerprint:
                    box[0]["windows"][str(index)].update(
                        status="failed", finished=utc_now(),
                        error=(f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300])
            raise
        with manifest_transaction(shot.out_dir) as box:
            _check_unchanged(box[0], fingerprint, shot, f"window {index} rendered; its frames were not recorded")
            box[0]["windows"][str(index)].update(status="done", finished=utc_now(), frames=hashes,
                                                 attributes=attributes)
            if evaluations is not None:
                box[0]["windows"][str(index)]["layer_evaluations"] = evaluations
    return "rendered"


def _check_unchanged(manifest: dict | None, fingerprint: str, shot: Shot, what: str) -> None:
    if manifest is None or manifest.get("settings_fingerprint") != fingerprint:
        raise BadInput(f"{shot.out_dir / MANIFEST_NAME}: the shot was reset with other settings (--force) "
                       f"while {what}")


def _layer_evaluations(bundle) -> dict | None:
    """The model's running count of joint-layer evaluations {"full", "skipped"} (vera.stepcache), if it has one."""
    model = getattr(bundle, "transformer", None)
    return None if model is None else layer_count(model).as_dict()


def _render_window_files(shot: Shot, window: Window, progress: str, get_bundle) -> tuple[dict, dict, dict]:
    """Render and cache one window's frames: ({frame: sha256}, the header attributes they carry, the
    joint-layer evaluations {"full", "skipped"} of the window, or None when the renderer has no model)."""
    cache = shot.cache_dir(window.index)
    remove_temps(cache)  # this task owns the folder (window lock held)
    bundle = get_bundle()
    seed = window_seed(shot.spec.seed, window.index)

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
    fingerprint = fingerprint_of(settings)
    with file_lock(shot.out_dir / ".vera" / "locks" / "assemble.lock"):
        remove_temps(shot.out_dir, f".{shot.spec.output.name}.")  # left by a killed assemble
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
                        and sha256_file(path) == entry.get("sha256")):
                    counts["skipped"] += 1
                    bar.advance(1, f"frame {frame} (kept)")
                    continue
                try:
                    digest = _assemble_frame(shot, frame, weights, sources, made_with, fingerprint, path,
                                             plate.data_window(frame))
                except Exception as exc:
                    with manifest_transaction(shot.out_dir) as box:
                        if box[0] is not None and box[0]["settings_fingerprint"] == fingerprint:
                            box[0]["frames"][str(frame)] = {"status": "failed", "finished": utc_now(),
                                                            "error": f"{type(exc).__name__}: {exc}"[:300]}
                    raise
                with manifest_transaction(shot.out_dir) as box:
                    _check_unchanged(box[0], fingerprint, shot, "assembling")
                    box[0]["frames"][str(frame)] = {"status": "done", "sha256": digest, "sources": used,
                                                    "finished": utc_now()}
                counts["written"] += 1
                bar.advance(1, f"frame {frame}")
    return counts


def _assemble_frame(shot: Shot, frame: int, weights, sources, made_with, fingerprint: str, path: Path,
                    plate_data_window=None) -> str:
    terms, seeds, display_window, header = [], [], None, {}
    for index, weight in weights:
        cached = shot.cache_path(index, frame)
        if sha256_file(cached) != sources[index][str(frame)]:
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
    `load_bundle()` loads the model (default: the spec's bundle, resident; vera.workers passes its strategy's);
    `compile`: torch.compile the joint layer (vera.stepcache.compile_blocks) once the model is loaded."""
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


