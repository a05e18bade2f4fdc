"""The shot spec: one JSON file describing one shot's edit (schema in docs/shot-spec.md).

This module holds the data shape and its (de)serialisation. Validation that reports every problem at once
lives in `validate()` (farm issue). Relative paths are resolved against the spec file's folder, so a shot
folder can move between machines.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
TASKS = ("object_addition", "background_change")


@dataclass
class PlateSpec:
    path: str                      # fileseq pattern: plate.####.exr, plate.%04d.exr, plate.1001-1100#.exr, or a movie
    first: int
    last: int
    colorspace: str                # OCIO colour space name of the plate (e.g. "ACEScg", "sRGB - Texture")
    layer: str = "rgba"            # EXR layer to read


@dataclass
class MaskSpec:
    path: str                      # garbage matte sequence: edits may only appear where it is > 0
    channel: str = "A"


@dataclass
class ModelSpec:
    bundle: str = "demo"           # "demo" (embedded) or a model bundle folder (docs/model.md)
    device: str = "auto"           # auto | cpu | cuda | cuda:N


@dataclass
class SamplerSpec:
    name: str = "unipc"            # unipc | euler
    steps: int | None = None       # None: the bundle's default
    guidance: float | None = None
    shift: float | None = None


@dataclass
class WindowSpec:
    frames: int | None = None      # None: the bundle's window; must be 4k+1
    overlap: int = 8


@dataclass
class OutputSpec:
    dir: str                       # where edit.####.exr, manifest.json and the window cache go
    name: str = "edit"             # file name stem: <name>.####.exr
    compression: str = "zip"
    padding: int = 4


@dataclass
class MatteSpec:
    threshold: float = 1.0 / 255.0  # alpha below this becomes exactly 0 (untouched pixels stay the plate's)


@dataclass
class ShotSpec:
    name: str
    plate: PlateSpec
    task: str
    instruction: str
    output: OutputSpec
    negative_prompt: str = ""
    mask: MaskSpec | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    seed: int = 0
    window: WindowSpec = field(default_factory=WindowSpec)
    matte: MatteSpec = field(default_factory=MatteSpec)
    vera_shot: int = SCHEMA_VERSION
    base_dir: str = field(default=".", repr=False, compare=False)  # not serialised: where relative paths start

    def resolve(self, path: str) -> str:
        """An absolute path for a path written in the spec (relative ones start at the spec's folder)."""
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (Path(self.base_dir) / p))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("base_dir")
        return d

    def save(self, path: str | Path) -> None:
        from vera.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict, base_dir: str = ".") -> "ShotSpec":
        d = dict(d)
        sub = {"plate": PlateSpec, "mask": MaskSpec, "model": ModelSpec, "sampler": SamplerSpec,
               "window": WindowSpec, "output": OutputSpec, "matte": MatteSpec}
        for key, typ in sub.items():
            if isinstance(d.get(key), dict):
                d[key] = typ(**d[key])
        return cls(**d, base_dir=base_dir)

    @classmethod
    def load(cls, path: str | Path) -> "ShotSpec":
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text()), base_dir=str(path.resolve().parent))
