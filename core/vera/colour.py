"""Colour: the plate's space <-> the model's space, through OpenColorIO.

The config is `$OCIO` when set (as in every VFX tool), else the pinned built-in `PINNED_CONFIG`.
The model space is the config's **sRGB - Texture** colour space: Rec.709 primaries with the sRGB encoding,
display-referred, which is what web video (the base model's training data) is. It is an exact, invertible
encoding (no tone mapping), so a plate that already is sRGB passes through unchanged.

`to_model` clamps to [0, 1]: superwhites (> 1.0 after the conversion, e.g. a sun or a sky at 4.0 in ACEScg) and
out-of-gamut negatives reach the model as 1.0 / 0.0. `from_model` is the exact inverse on [0, 1], so the edit
layer comes back in the plate's space (scene-linear for ACEScg plates) and merges in Nuke's linear working
space; generated pixels can reach at most the value that display white maps to (1.0 in linear Rec.709).
Untouched pixels never take this round trip: where alpha is 0 the composite is the plate itself.
See docs/colour.md.
"""

from __future__ import annotations

import difflib
import functools
import os

import numpy as np
import PyOpenColorIO as ocio

from vera.errors import BadInput

PINNED_CONFIG = "ocio://cg-config-v2.1.0_aces-v1.3_ocio-v2.3"
# The model's space, by the names configs use for it (ACES configs, older ACES 1.x configs, plain configs).
MODEL_SPACE_NAMES = ("sRGB - Texture", "srgb_tx", "Utility - sRGB - Texture", "sRGB", "srgb")


def config_source() -> str:
    """Where the config comes from: $OCIO if set, else the pinned built-in config."""
    return os.environ.get("OCIO") or PINNED_CONFIG


@functools.lru_cache(maxsize=4)
def _load_config(source: str):
    try:
        return ocio.Config.CreateFromFile(source)
    except Exception as exc:  # noqa: BLE001 - OCIO raises its own Exception type for unreadable configs
        origin = "$OCIO" if source == os.environ.get("OCIO") else "built-in config"
        raise BadInput(f"{source}: cannot load the OpenColorIO config ({origin}): {' '.join(str(exc).split())}") \
            from None


def config():
    return _load_config(config_source())


def _all_names(cfg) -> list[str]:
    names = []
    for cs in cfg.getColorSpaces(ocio.SEARCH_REFERENCE_SPACE_ALL, ocio.COLORSPACE_ALL):
        names.append(cs.getName())
        names.extend(cs.getAliases())
    names.extend(name for name, _ in cfg.getRoles())
    return names


def resolve_colorspace(name: str, cfg=None) -> str:
    """The config's canonical name for `name` (a name, alias or role); BadInput listing close names if unknown."""
    cfg = cfg or config()
    cs = cfg.getColorSpace(name) if name else None
    if cs is None:
        names = _all_names(cfg)
        close = difflib.get_close_matches(name or "", names, n=5, cutoff=0.4)
        lowered = [n for n in names if (name or "").lower() in n.lower()]
        suggestions = list(dict.fromkeys(close + lowered))[:6]
        hint = f"; close names: {', '.join(suggestions)}" if suggestions else ""
        raise BadInput(f"unknown colour space '{name}' in OCIO config {config_source()}{hint}")
    return cs.getName()


def model_colorspace(cfg=None) -> str:
    """The model's colour space in the active config (env VERA_MODEL_COLORSPACE overrides, for custom configs)."""
    cfg = cfg or config()
    override = os.environ.get("VERA_MODEL_COLORSPACE")
    if override:
        return resolve_colorspace(override, cfg)
    for name in MODEL_SPACE_NAMES:
        cs = cfg.getColorSpace(name)
        if cs is not None:
            return cs.getName()
    raise BadInput(f"OCIO config {config_source()} has no sRGB texture colour space "
                   f"({', '.join(MODEL_SPACE_NAMES)}); set VERA_MODEL_COLORSPACE to the one to use")


@functools.lru_cache(maxsize=32)
def _processor(source: str, src: str, dst: str):
    cfg = _load_config(source)
    return cfg.getProcessor(src, dst).getDefaultCPUProcessor()


def convert(rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
    """(..., 3) float32 from colour space `src` to `dst` (names resolved in the active config). Returns a copy."""
    cfg = config()
    src_name, dst_name = resolve_colorspace(src, cfg), resolve_colorspace(dst, cfg)
    out = np.array(rgb[..., :3], dtype=np.float32, order="C", copy=True)
    if src_name != dst_name:
        _processor(config_source(), src_name, dst_name).applyRGB(out)
    return out


def to_model(rgb: np.ndarray, colorspace: str) -> np.ndarray:
    """Plate pixels (H, W, >=3) in `colorspace` -> (H, W, 3) float32 display-referred sRGB, clamped to [0, 1]."""
    out = convert(rgb, colorspace, model_colorspace())
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


def from_model(rgb01: np.ndarray, colorspace: str) -> np.ndarray:
    """Model pixels (H, W, 3) in [0, 1] (display-referred sRGB) -> (H, W, 3) float32 in the plate's `colorspace`."""
    clipped = np.clip(np.asarray(rgb01, dtype=np.float32)[..., :3], 0.0, 1.0)
    return convert(clipped, model_colorspace(), colorspace)


def model_range(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1], the range the model's video tensors use."""
    return x * 2.0 - 1.0


def unit_range(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [0, 1]."""
    return (x + 1.0) * 0.5
