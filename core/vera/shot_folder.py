"""What a user may name when asking about a shot's render: its output folder (holding manifest.json), the
shot's spec file, or the folder holding that spec as `shot.json` (what `vera-render demo --out DIR` writes).
`status` and `qc` accept all three."""

from __future__ import annotations

from pathlib import Path

from vera.errors import BadInput
from vera.shot import ShotSpec

SPEC_NAME = "shot.json"  # the spec file a shot folder holds (vera-render demo writes DIR/shot.json)
MANIFEST_NAME = "manifest.json"  # vera.render.MANIFEST_NAME: the render's record in its output folder


def shot_spec_file(path: str | Path) -> Path | None:
    """The shot spec `path` names: a spec file, or a folder with SPEC_NAME in it; None when it names neither."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json" and path.name != MANIFEST_NAME:
        return path
    if path.is_dir() and (path / SPEC_NAME).is_file():
        return path / SPEC_NAME
    return None


def output_folder(path: str | Path) -> Path:
    """The output folder of the render `path` names: the folder itself when it holds manifest.json, else the
    output.dir of the shot spec it names. Anything else is returned as it is (the caller names what is missing)."""
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return path
    spec_file = shot_spec_file(path)
    if spec_file is None:
        return path
    spec = ShotSpec.load(spec_file)
    return Path(spec.resolve(spec.output.dir))


def edit_pattern(spec: ShotSpec) -> str:
    """The spec's edit-layer sequence as a pattern: OUTPUT_DIR/<name>.####.exr (padding as the spec's)."""
    return str(Path(spec.resolve(spec.output.dir)) / f"{spec.output.name}.{'#' * spec.output.padding}.exr")


def load_spec(path: str | Path) -> ShotSpec:
    """The shot spec `path` names (file or shot folder); BadInput naming the path when it names none."""
    spec_file = shot_spec_file(path)
    if spec_file is None:
        raise BadInput(f"{path}: neither a shot spec (.json) nor a folder with {SPEC_NAME} in it")
    return ShotSpec.load(spec_file)
