"""Schemas of the files Vera writes and later reads back: the render manifest and the model bundle.

Each file is checked once, where it is loaded, so a damaged or hand-edited file is one line naming the file and
the field (BadInput, exit 2) instead of a KeyError or TypeError deep inside a render. The schemas are pydantic
models (pydantic comes with openjd-model) in strict mode: no strings for numbers, no floats for ints, no
booleans for numbers, no NaN or infinity. Fields the code does not read are allowed (extra="allow") in the
render manifest, which carries notes for people (hosts, times, errors); the bundle's `defaults` are closed.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

from vera.errors import BadInput

_OPEN = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")
_CLOSED = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


def describe(exc: ValidationError) -> str:
    """The first problem of a pydantic error as 'field a.b.c: what is wrong (got X)', plus how many more."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "(the whole file)"
    message = first["msg"]
    if first["type"] not in ("missing", "extra_forbidden") and "input" in first:
        shown = json.dumps(first["input"]) if _jsonable(first["input"]) else repr(first["input"])
        message += f", got {shown[:60]}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"field {field}: {message}{more}"


def _jsonable(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def check(schema, data, where: str, hint: str = ""):
    """`data` validated against `schema` (a pydantic model or a TypeAdapter); BadInput '<where>: field ...'."""
    try:
        if isinstance(schema, TypeAdapter):
            # strict pydantic wants a dataclass instance in Python mode; JSON mode takes the plain data
            return schema.validate_json(json.dumps(data))
        return schema.model_validate(data)
    except ValidationError as exc:
        raise BadInput(f"{where}: {describe(exc)}{hint}") from None


# ------------------------------------------------------------------------------------------ render manifest

FrameKey = Annotated[str, StringConstraints(pattern=r"^-?[0-9]+$")]    # JSON keys are strings; these are ints
WindowKey = Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class WindowEntry(BaseModel):
    model_config = _OPEN
    first: int
    last: int
    status: Literal["missing", "running", "done", "failed"] = "missing"
    frames: dict[FrameKey, Sha256] = {}
    attributes: dict = {}
    error: str | None = None


class FrameEntry(BaseModel):
    model_config = _OPEN
    status: Literal["done", "failed"]
    sha256: Sha256 | None = None
    sources: dict[WindowKey, Sha256] = {}
    error: str | None = None

    @model_validator(mode="after")
    def _done_has_checksum(self):
        if self.status == "done" and self.sha256 is None:
            raise ValueError("a done frame needs its sha256")
        return self


class RenderManifest(BaseModel):
    model_config = _OPEN
    vera_manifest: Annotated[int, Field(ge=1)]
    shot: str
    first: int
    last: int
    output_name: Annotated[str, StringConstraints(min_length=1)]
    output_padding: Annotated[int, Field(ge=1, le=16)]
    settings_fingerprint: str
    settings: dict = {}                # read only to name what changed (vera.render._reconcile)
    inputs_fingerprint: str | None = None
    inputs: dict = {}
    windows: Annotated[dict[WindowKey, WindowEntry], Field(min_length=1)]
    frames: dict[FrameKey, FrameEntry]

    @model_validator(mode="after")
    def _windows_cover_the_range(self):
        # The windows tile first..last: a 'last' that no window reaches is damage, not a longer shot.
        if self.first > self.last:
            raise ValueError(f"first {self.first} is after last {self.last}")
        for key, w in self.windows.items():
            if not self.first <= w.first <= w.last <= self.last:
                raise ValueError(f"window {key} ({w.first}-{w.last}) is not inside {self.first}-{self.last}")
        if min(w.first for w in self.windows.values()) != self.first or \
                max(w.last for w in self.windows.values()) != self.last:
            raise ValueError(f"the windows do not cover {self.first}-{self.last}")
        outside = [k for k in self.frames if not self.first <= int(k) <= self.last]
        if outside:
            raise ValueError(f"frame {outside[0]} is outside {self.first}-{self.last}")
        return self


# ------------------------------------------------------------------------------------------------- bundle

Positive = Annotated[int, Field(ge=1)]


class BundleDefaults(BaseModel):
    model_config = _CLOSED
    resolution: Annotated[list[Positive], Field(min_length=2, max_length=2)]
    window: Positive
    steps: Positive
    guidance: float
    shift: Annotated[float, Field(gt=0)]
    sampler: Literal["unipc", "euler"]  # vera.sampling.SAMPLERS (not imported: it would load torch for `status`)
    negative_prompt: str


class PatchVAEEntry(BaseModel):
    model_config = _CLOSED
    type: Literal["patch"]
    patch: Positive = 4


class WanVAEEntry(BaseModel):
    model_config = _CLOSED
    type: Literal["wan"]
    path: Annotated[str, StringConstraints(min_length=1)] = "vae"
    tiling: Literal["auto", "always", "never"] = "auto"  # vera.model.vae: tile only when a frame does not fit


class LoraEntry(BaseModel):
    model_config = _CLOSED
    path: Annotated[str, StringConstraints(min_length=1)]  # adapter file (vera.model.lora), merged at load
    scale: float = 1.0
    # a Wan2.1 LoRA (vera.model.wan_lora): the streams it is merged into (null: all three)
    streams: list[Literal["edit", "alpha", "composite"]] | None = None


class StudentEntry(BaseModel):
    model_config = _OPEN  # the teacher recipe and training notes ride along
    path: Annotated[str, StringConstraints(min_length=1)]  # the distilled student (vera.model.student)
    kind: Literal["lora", "full"]
    steps: Positive
    shift: Annotated[float, Field(gt=0)]


class BundleManifest(BaseModel):
    model_config = _OPEN
    name: str | None = None
    config: dict
    transformer: Annotated[str, StringConstraints(min_length=1)]
    vae: Annotated[Union[PatchVAEEntry, WanVAEEntry], Field(discriminator="type")]
    text_encoder: Annotated[str, StringConstraints(min_length=1)]
    defaults: dict | None = None
    lora: LoraEntry | list[LoraEntry] | None = None
    student: StudentEntry | None = None
    fp8_storage: bool = False  # the transformer's weights may be float8 (F8_E4M3 / F8_E5M2): vera.model.bundle_check
