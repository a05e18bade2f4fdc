"""The shot as rendered: a valid spec (vera.shot), its windows (vera.windows) and where each of its files goes.

    OUT/.vera/manifest.lock        flock'd for every read-modify-write of the manifest (vera.manifest)
    OUT/.vera/cache/w###/          one window's frames (private to the task rendering that window)
    OUT/.vera/locks/               one lock per window task and one for assemble

Needs no model: the window length a spec leaves to the bundle is read from its bundle.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vera.errors import BadInput
from vera.model.bundle_manifest import read_manifest as read_bundle_manifest
from vera.outputs import MANIFEST_NAME, SPEC_NAME, frame_file_name, output_folder, shot_spec_file  # noqa: F401 (re-exported)
from vera.shot import ShotSpec, fitted_overlap, load_valid
from vera.windows import Window, plan_windows


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


def bundle_path(spec: ShotSpec) -> str:
    return "demo" if spec.model.bundle == "demo" else spec.resolve(spec.model.bundle)


def _bundle_window_frames(spec: ShotSpec) -> int:
    """The bundle's default window (from bundle.json; no weights loaded), for specs without window.frames."""
    return int(read_bundle_manifest(bundle_path(spec))["defaults"]["window"])


def edit_pattern(spec: ShotSpec) -> str:
    """The spec's edit-layer sequence as a pattern: OUTPUT_DIR/<name>.####.exr (padding as the spec's)."""
    return str(Path(spec.resolve(spec.output.dir)) / f"{spec.output.name}.{'#' * spec.output.padding}.exr")


def load_spec_named(path: str | Path) -> ShotSpec:
    """The shot spec `path` names (file or shot folder); BadInput naming the path when it names none."""
    spec_file = shot_spec_file(path)
    if spec_file is None:
        raise BadInput(f"{path}: neither a shot spec (.json) nor a folder with {SPEC_NAME} in it")
    return ShotSpec.load(spec_file)
