"""Takes: one render's settings over one output folder. When `run --force` starts a take with other settings or
inputs, the previous take's final frames leave the sequence (a Nuke Read of OUT/<name>.####.exr must never show two
prompts mixed) and go, whole and never deleted, to

    OUT/superseded/<take>/<name>.####.exr   the earlier take's final frames, as they were
    OUT/superseded/<take>/manifest.json     its manifest (settings, inputs, sha256 of every frame)

<take> is the first 16 hex digits of the earlier take's settings fingerprint (`-2`, `-3`, ... when that folder is
already taken). Each frame moves by rename (atomic, same filesystem); a move cut short leaves every frame either
in the sequence or in the take folder, and the next --force moves the rest.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.frames import compact_frames
from vera.jsonio import read_json_object
from vera.outputs import MANIFEST_NAME, final_frames_on_disk, frame_file_name

SUPERSEDED = "superseded"


def supersede(out_dir: Path, manifest: dict) -> tuple[Path, list[int]] | None:
    """Move the final frames of `manifest`'s take out of `out_dir`'s sequence into a new take folder, with a copy
    of the manifest. (folder, frames moved), or None when no frame of it is on disk. Call under the manifest lock."""
    out_dir = Path(out_dir)
    name, padding = manifest["output_name"], manifest["output_padding"]
    frames = final_frames_on_disk(out_dir, name, padding)
    if not frames:
        return None
    folder = _new_take_folder(out_dir / SUPERSEDED, str(manifest.get("settings_fingerprint") or "unknown")[:16])
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for frame in frames:
        file_name = frame_file_name(name, padding, frame)
        os.rename(out_dir / file_name, folder / file_name)  # the folder is new: nothing there to replace
    return folder, frames


def _new_take_folder(parent: Path, take: str) -> Path:
    parent.mkdir(exist_ok=True)
    for n in range(1, 10_000):
        folder = parent / (take if n == 1 else f"{take}-{n}")
        try:
            folder.mkdir()  # exclusive: an existing take is never written into
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: too many superseded takes named {take}")


def superseded_takes(out_dir: Path) -> dict[str, str]:
    """{take: its frames as text} of the takes set aside in `out_dir` (read from their manifests' output names)."""
    parent = Path(out_dir) / SUPERSEDED
    try:
        folders = sorted(p for p in parent.iterdir() if p.is_dir())
    except OSError:
        return {}
    takes = {}
    for folder in folders:
        stem = _output_name(folder)
        frames = final_frames_on_disk(folder, *stem) if stem else []
        takes[folder.name] = compact_frames(frames)
    return takes


def _output_name(folder: Path) -> tuple[str, int] | None:
    """(output name, padding) of a take folder: from its manifest, read only for these two fields."""
    try:
        manifest = read_json_object(folder / MANIFEST_NAME, "superseded take's manifest")
    except (BadInput, OSError):
        return None
    name, padding = manifest.get("output_name"), manifest.get("output_padding")
    if not (isinstance(name, str) and re.fullmatch(r"[\w.-]+", name) and type(padding) is int and 0 < padding < 16):
        return None
    return name, padding
