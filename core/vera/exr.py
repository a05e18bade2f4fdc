"""EXR files through the OpenEXR 3.x Python API: reading one layer of a plate, writing Vera's layers, atomically.

Windows are EXR boxes `(xmin, ymin, xmax, ymax)`, inclusive, in pixel coordinates (what the file header says).
Arrays are numpy `(h, w, C)` covering exactly one such window.

What we write is specified in docs/output-format.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field

import numpy as np
import OpenEXR

from vera import __version__
from vera.atomic import atomic_path
from vera.errors import BadInput, frame_error, unreadable_or

Window = tuple  # (xmin, ymin, xmax, ymax), inclusive

# Lossless codecs only: a lossy codec could turn the exact zeros of untouched pixels into noise.
# (PXR24 is lossless for half but not for float, so it is left out.)
COMPRESSIONS = {
    "none": OpenEXR.NO_COMPRESSION,
    "rle": OpenEXR.RLE_COMPRESSION,
    "zips": OpenEXR.ZIPS_COMPRESSION,
    "zip": OpenEXR.ZIP_COMPRESSION,
    "piz": OpenEXR.PIZ_COMPRESSION,
}
if hasattr(OpenEXR, "ZSTD_COMPRESSION"):
    COMPRESSIONS["zstd"] = OpenEXR.ZSTD_COMPRESSION

HALF_MAX = 65504.0
ATTRIBUTE_PREFIX = "vera/"

# Channel names that mean red/green/blue/alpha, as Nuke, OIIO and renderers spell them.
_CHANNEL_ALIASES = {
    "R": ("R", "r", "red", "Red", "RED"),
    "G": ("G", "g", "green", "Green", "GREEN"),
    "B": ("B", "b", "blue", "Blue", "BLUE"),
    "A": ("A", "a", "alpha", "Alpha", "ALPHA"),
}


# ----------------------------------------------------------------------------------------------- windows

def window_size(window: Window) -> tuple[int, int]:
    """(width, height) of an inclusive window."""
    return int(window[2]) - int(window[0]) + 1, int(window[3]) - int(window[1]) + 1


def window_union(a: Window, b: Window) -> Window:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def crop_to_window(pixels: np.ndarray, src: Window, dst: Window, fill: float = 0.0) -> np.ndarray:
    """Pixels covering window `src` re-framed onto window `dst`: the overlap is copied, the rest is `fill`."""
    w, h = window_size(dst)
    if tuple(src) == tuple(dst):
        return pixels
    out = np.full((h, w) + pixels.shape[2:], fill, dtype=pixels.dtype)
    x0, y0 = max(src[0], dst[0]), max(src[1], dst[1])
    x1, y1 = min(src[2], dst[2]), min(src[3], dst[3])
    if x0 <= x1 and y0 <= y1:
        out[y0 - dst[1]:y1 - dst[1] + 1, x0 - dst[0]:x1 - dst[0] + 1] = \
            pixels[y0 - src[1]:y1 - src[1] + 1, x0 - src[0]:x1 - src[0] + 1]
    return out


def _window_from_header(box) -> Window:
    (x0, y0), (x1, y1) = box
    return (int(x0), int(y0), int(x1), int(y1))


def _header_box(window: Window):
    return (np.array(window[:2], dtype=np.int32), np.array(window[2:], dtype=np.int32))


# ----------------------------------------------------------------------------------------------- native stderr

_capture_lock = threading.Lock()


def _flush_c_stdio() -> None:
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no libc symbols (unusual platforms): nothing buffered to lose
        pass


@contextlib.contextmanager
def captured_native_output():
    """Capture what libraries print on file descriptors 1 and 2 and on sys.stdout/stderr (OpenEXR prints
    its errors and warnings there).

    Bad input must reach the user as one line, so the library's own lines are collected and folded into
    that line instead. Yields a list that holds the captured text (one string) once the block exits.
    """
    import sys

    captured: list[str] = []
    for stream in (sys.stdout, sys.stderr):  # Python's own pending output must not land in the capture
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    with _capture_lock, tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            saved = [os.dup(1), os.dup(2)]
        except OSError:  # no fd 1/2 (embedded interpreters): nothing to capture
            yield captured
            return
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        python_level = io.StringIO()  # the binding's warnings go through Python's sys.stdout (pybind11 print)
        try:
            with contextlib.redirect_stdout(python_level), contextlib.redirect_stderr(python_level):
                yield captured
        finally:
            _flush_c_stdio()  # C++ iostreams write through C stdio, which buffers when not on a terminal
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace") + python_level.getvalue())


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------- reading

@dataclass
class ExrLayer:
    """One RGB(A) layer of an EXR file, covering its data window."""

    pixels: np.ndarray          # (h, w, 4) float32 over data_window; alpha 1 where the file has none
    data_window: Window
    display_window: Window
    pixel_type: str             # "half" or "float" (the widest of the layer's channels)
    has_alpha: bool
    channels: list[str]         # the file's channel names that were read, in R, G, B(, A) order
    part: int                   # part index in a multi-part file
    attributes: dict = field(default_factory=dict)


def _open_exr(path, frame, header_only: bool = False):
    """OpenEXR.File, with failures (missing, corrupt, truncated) turned into one-line BadInput."""
    path = str(path)
    if not os.path.exists(path):
        raise frame_error(path, "file not found", frame)
    error = None
    with captured_native_output() as native:
        try:
            exr = OpenEXR.File(path, separate_channels=True, header_only=header_only)
            if not header_only and len(exr.parts) == 0:
                # The binding swallows pixel-read errors (e.g. truncation) and returns a file with no parts.
                error = "no pixel data could be read"
        except Exception as exc:  # noqa: BLE001 - any library failure is a bad file, reported as one line
            exr, error = None, str(exc)
    if error is not None:
        native_lines = [line for line in (native[0] if native else "").splitlines() if line.strip()]
        detail = _one_line(native_lines[0] if native_lines else error)  # the library's first line says most
        raise unreadable_or(path, f"corrupt or truncated EXR: {detail}", frame)
    return exr


def _find_layer(parts: list[tuple[str, list[str]]], layer: str):
    """(part index, {R,G,B[,A]: channel name}) of `layer` among parts given as (part name, channel names)."""
    want = layer.lower()
    for prefixed in (False, True):
        for index, (part_name, names) in enumerate(parts):
            by_name = set(names)
            found = {}
            for key, aliases in _CHANNEL_ALIASES.items():
                for alias in aliases:
                    if prefixed:
                        candidates = [n for n in names if n.lower() == f"{want}.{alias.lower()}"]
                        name = candidates[0] if candidates else None
                    else:
                        # Unprefixed R,G,B: the rgba layer, or the layer a multi-part file names its part after.
                        name = alias if alias in by_name and _part_holds(part_name, want, len(parts)) else None
                    if name:
                        found[key] = name
                        break
            if all(k in found for k in "RGB"):
                return index, found
    return None, None


_BEAUTY_PART_NAMES = ("", "rgba", "rgb", "beauty", "part0")


def _part_holds(part_name: str, layer: str, part_count: int) -> bool:
    """Whether a part's unprefixed R,G,B are `layer`: a part named after the layer, or the beauty part."""
    name = part_name.lower()
    if name == layer:
        return True
    return layer == "rgba" and (part_count == 1 or name in _BEAUTY_PART_NAMES)


def _layers_present(parts) -> str:
    layers = set()
    for part_name, names in parts:
        for n in names:
            layers.add(n.rsplit(".", 1)[0] if "." in n else (part_name or "rgba"))
    return ", ".join(sorted(layers)) or "none"


def _no_layer(path, layer, parts, frame):
    return frame_error(path, f"no RGB channels in layer '{layer}' (layers present: {_layers_present(parts)})",
                       frame)


def _part_channel_names(exr, index) -> list[str]:
    return [c.name for c in exr.header(index)["channels"]]


def _plain_attributes(header: dict) -> dict:
    skip = {"channels", "dataWindow", "displayWindow", "compression", "lineOrder", "type", "tiles",
            "pixelAspectRatio", "screenWindowCenter", "screenWindowWidth", "name", "chunkCount", "version"}
    return {k: v for k, v in header.items() if k not in skip and isinstance(v, (str, int, float))}


def read_header(path, frame=None, layer: str = "rgba") -> dict:
    """display_window, data_window and part index of the part holding `layer`, from the header alone."""
    exr = _open_exr(path, frame, header_only=True)
    parts = [(exr.header(i).get("name", ""), _part_channel_names(exr, i)) for i in range(len(exr.parts))]
    index, _ = _find_layer(parts, layer)
    if index is None:
        raise _no_layer(path, layer, parts, frame)
    header = exr.header(index)
    return {"display_window": _window_from_header(header["displayWindow"]),
            "data_window": _window_from_header(header["dataWindow"]),
            "part": index}


def read_layer(path, layer: str = "rgba", frame=None) -> ExrLayer:
    """Read `layer` (R,G,B and A if present) of an EXR file over its data window.

    `rgba` is the unprefixed R,G,B,A (or `rgba.*`); any other name L is `L.R`/`L.red`..., or the unprefixed
    channels of a multi-part file's part named L. Missing alpha reads as 1 (inside the data window).
    """
    exr = _open_exr(path, frame)
    parts = [(p.name() if callable(getattr(p, "name", None)) else "", list(p.channels.keys())) for p in exr.parts]
    index, found = _find_layer(parts, layer)
    if index is None:
        raise _no_layer(path, layer, parts, frame)
    part = exr.parts[index]
    header = part.header
    data_window = _window_from_header(header["dataWindow"])
    display_window = _window_from_header(header["displayWindow"])
    w, h = window_size(data_window)
    pixels = np.empty((h, w, 4), dtype=np.float32)
    dtypes = set()
    for i, key in enumerate("RGBA"):
        if key not in found:
            pixels[..., i] = 1.0
            continue
        channel = part.channels[found[key]]
        if getattr(channel, "xSampling", 1) != 1 or getattr(channel, "ySampling", 1) != 1:
            raise frame_error(path, f"channel {found[key]} is subsampled; only full-resolution channels are read",
                              frame)
        data = channel.pixels
        if data.shape != (h, w):
            raise frame_error(path, f"channel {found[key]} has shape {data.shape}, expected {(h, w)}", frame)
        dtypes.add(data.dtype)
        pixels[..., i] = data
    pixel_type = "half" if dtypes == {np.dtype(np.float16)} else "float"
    return ExrLayer(pixels=pixels, data_window=data_window, display_window=display_window, pixel_type=pixel_type,
                    has_alpha="A" in found, channels=[found[k] for k in "RGBA" if k in found], part=index,
                    attributes=_plain_attributes(header))


# ----------------------------------------------------------------------------------------------- writing

def compression_code(name: str):
    try:
        return COMPRESSIONS[name.lower()]
    except KeyError:
        raise BadInput(f"unknown or lossy EXR compression '{name}' (lossless choices: "
                       f"{', '.join(COMPRESSIONS)})") from None


def _attribute_value(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return json.dumps(value, default=str)


def vera_attributes(attributes: dict | None) -> dict:
    """Header attributes under the `vera/` prefix (keys already holding a '/' or ':' are kept as given),
    plus `vera/version`."""
    out = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        name = key if ("/" in key or ":" in key) else ATTRIBUTE_PREFIX + key
        out[name] = _attribute_value(value)
    out[ATTRIBUTE_PREFIX + "version"] = __version__
    return out


def _stored(array: np.ndarray, dtype) -> np.ndarray:
    """A contiguous array of `dtype`; for half, finite values beyond its range become +-65504, not inf."""
    with np.errstate(over="ignore"):  # overflow to inf is detected and fixed just below
        out = np.ascontiguousarray(array, dtype=dtype)
    if dtype is np.float16 and array.dtype != np.float16:
        overflow = np.isinf(out)
        if overflow.any():  # rare: only then pay for the fix-up
            fix = overflow & np.isfinite(array)
            out[fix] = np.clip(array[fix], -HALF_MAX, HALF_MAX)
    return out


def write_exr(path, channels: dict, display_window: Window, data_window: Window | None = None,
              pixel_type: str = "half", attributes: dict | None = None, compression: str = "zip") -> None:
    """Write one scanline EXR atomically. `channels`: name -> (h, w) array over `data_window`
    (default: the display window). Values are stored as `pixel_type` ("half" or "float")."""
    if pixel_type not in ("half", "float"):
        raise ValueError(f"pixel_type must be 'half' or 'float', not {pixel_type!r}")
    data_window = tuple(display_window if data_window is None else data_window)
    w, h = window_size(data_window)
    dtype = np.float16 if pixel_type == "half" else np.float32
    arrays, converted = {}, {}
    for name, array in channels.items():
        array = np.asarray(array)
        if array.shape != (h, w):
            raise ValueError(f"channel {name} has shape {array.shape}, data window needs {(h, w)}")
        key = (array.__array_interface__["data"][0], array.strides, array.dtype.str)
        if key not in converted:  # the same plane under two names (A and matte.A) is converted once
            converted[key] = _stored(array, dtype)
        arrays[name] = converted[key]
    header = {
        "compression": compression_code(compression),
        "type": OpenEXR.scanlineimage,
        "displayWindow": _header_box(display_window),
        "dataWindow": _header_box(data_window),
    }
    header.update(attributes or {})
    with atomic_path(path) as tmp:
        OpenEXR.File(header, arrays).write(tmp)


def write_layers(path, rgba: np.ndarray, display_window: Window, attributes: dict | None = None,
                 compression: str = "zip") -> None:
    """Write Vera's edit layer: R,G,B,A (premultiplied) and matte.A, half, over the display window, atomically.

    `rgba` is (H, W, 4) float32 premultiplied, covering `display_window`. `attributes` (prompt, seed, model,
    source, ...) go into the header as `vera/<key>`; `vera/version` is added. See docs/output-format.md.
    """
    w, h = window_size(display_window)
    if rgba.ndim != 3 or rgba.shape != (h, w, 4):
        raise ValueError(f"rgba has shape {rgba.shape}; the display window {tuple(display_window)} needs {(h, w, 4)}")
    alpha = rgba[..., 3]
    channels = {"R": rgba[..., 0], "G": rgba[..., 1], "B": rgba[..., 2], "A": alpha, "matte.A": alpha}
    write_exr(path, channels, display_window, pixel_type="half", attributes=vera_attributes(attributes),
              compression=compression)
