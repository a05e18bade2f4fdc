"""Where a render's files go and how its manifest is read: below the shot spec, so validating a spec (vera.shot)
and reporting a render's state (vera.status) never need the renderer.

    OUT/<name>.####.exr            final frames (edit layer + matte), written by `assemble`
    OUT/manifest.json              settings, input fingerprints, per-window / per-frame status and sha256
    OUT/.vera/                     manifest lock, window caches, task locks (vera.render)
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from vera.errors import BadInput
from vera.jsonio import read_json_object
from vera.schemas import RenderManifest, check

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


def frame_file_name(name: str, padding: int, frame: int) -> str:
    return f"{name}.{frame:0{padding}d}.exr"


def output_files(out_dir: Path, name: str, padding: int, frames) -> tuple[list[Path], list[Path]]:
    """(files, folders) a render of `frames` writes in `out_dir`: the final frames and the manifest, and the
    `.vera` folder (window cache, locks) that it fills whole. What `vera.files.refuse_overwrite` checks."""
    out_dir = Path(out_dir)
    files = [out_dir / frame_file_name(name, padding, frame) for frame in frames] + [out_dir / MANIFEST_NAME]
    return files, [out_dir / ".vera"]


class DamagedManifest(BadInput):
    """manifest.json is unreadable or does not fit its schema (vera.schemas.RenderManifest)."""


_RECOVER = ("; the files it lists are left as they are: `vera-render run SHOT.json --force` sets it aside as "
            f"{MANIFEST_NAME}.damaged and renders the shot afresh")


def read_manifest(out_dir: Path) -> dict | None:
    """The manifest, checked against its schema (one line naming the file and field if it is damaged)."""
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# What a user may name when asking about a render: its output folder (holding the manifest), the shot's spec
# file, or the folder holding that spec as SPEC_NAME (what `vera-render demo --out DIR` writes). `status` and
# `qc` accept all three.
SPEC_NAME = "shot.json"


def shot_spec_file(path: str | Path) -> Path | None:
    """The shot spec `path` names: a spec file, or a folder with SPEC_NAME in it; None when it names neither."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json" and path.name != MANIFEST_NAME:
        return path
    if path.is_dir() and (path / SPEC_NAME).is_file():
        return path / SPEC_NAME
    return None


def output_folder(path: str | Path) -> Path:
    """The output folder of the render `path` names: the folder itself when it holds the manifest, else the
    output.dir of the shot spec it names. Anything else is returned as it is (the caller names what is missing)."""
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return path
    spec_file = shot_spec_file(path)
    if spec_file is None:
        return path
    # the spec's output.dir alone, read without the shot module (status stays light: no plate readers); a
    # relative dir starts at the spec's folder, as vera.shot.ShotSpec.resolve
    output = read_json_object(spec_file, "shot spec").get("output")
    folder = output.get("dir") if isinstance(output, dict) else None
    if not isinstance(folder, str) or not folder:
        raise BadInput(f"{spec_file}: field output.dir: a folder name is required")
    folder = Path(folder).expanduser()
    return folder if folder.is_absolute() else spec_file.resolve().parent / folder
