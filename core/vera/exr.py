"""EXR files through the OpenEXR 3.x Python API: reading one layer of a plate, writing Vera's layers, atomically.

Windows are EXR boxes `(xmin, ymin, xmax, ymax)`, inclusive, in pixel coordinates (what the file header says).
Arrays are numpy `(h, w, C)` covering exactly one such window.

What we write is specified in docs/output-format.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field

import numpy as np
import OpenEXR

from vera import __version__
from vera.atomic import atomic_path
from vera.errors import BadInput, frame_error, unreadable_or
from vera.files import regular_file

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
    view: str | None = None     # the view read, in a multi-view file (None: the file has no views)


def _open_exr(path, frame, header_only: bool = False):
    """OpenEXR.File, with failures (missing, corrupt, truncated) turned into one-line BadInput."""
    path = str(path)
    regular_file(path, frame)  # a FIFO would block OpenEXR's open forever
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


# ----------------------------------------------------------------------------------------------- views

def _views(headers: list[dict]) -> tuple[list[str], bool]:
    """(views in file order with the default first, multi-part?) of a multi-view EXR; ([], False) without views.

    OpenEXR's two conventions (MultiViewOpenEXR): a multi-part file whose parts carry a `view` attribute (the
    first part's view is the default), or a single-part file with a `multiView` attribute (its first view is
    the default). A multi-part file with only a `multiView` attribute (as older writers made) counts as the latter
    when its first part has no `view`.
    """
    part_views = [h.get("view") for h in headers]
    if any(isinstance(v, str) for v in part_views):
        views = []
        for v in part_views:
            if isinstance(v, str) and v not in views:
                views.append(v)
        if isinstance(part_views[0], str):
            views.remove(part_views[0])
            views.insert(0, part_views[0])
        return views, True
    multi_view = headers[0].get("multiView")
    if isinstance(multi_view, (list, tuple)) and multi_view:
        return [str(v) for v in multi_view], False
    return [], False


def _view_candidates(headers: list[dict], view: str | None, path, frame):
    """(view read or None, [(part index, part name to match, {channel name as matched: channel name in the file})]).

    Multi-part views: the chosen view's parts, then the parts without a view (shared by every view); channel
    names carry no view, and the view's name is dropped from the part name (`rgba_left` -> `rgba`). Single-part
    views: the chosen view's channels with the view dropped (`right.R` -> `R`, `diff.right.R` -> `diff.R`),
    the unprefixed ones when it is the default view, and channels of no view. `view` None: the default view.
    """
    names = [[c.name for c in h["channels"]] for h in headers]
    part_names = [str(h.get("name", "")) for h in headers]
    views, multi_part = _views(headers)
    if not views:
        if view is not None:
            raise frame_error(path, f"view '{view}' asked for, but this is not a multi-view EXR "
                                    "(no view or multiView attribute)", frame)
        return None, [(i, part_names[i], {n: n for n in names[i]}) for i in range(len(headers))]
    chosen = views[0] if view is None else view
    if chosen not in views:
        raise frame_error(path, f"no view '{chosen}' in this EXR (views: {', '.join(views)})", frame)
    if multi_part:
        order = [i for i, h in enumerate(headers) if h.get("view") == chosen]
        order += [i for i, h in enumerate(headers) if not isinstance(h.get("view"), str)]
        strip = lambda name: name.lower().replace(chosen.lower(), "").strip("._- ")  # noqa: E731
        return chosen, [(i, strip(part_names[i]), {n: n for n in names[i]}) for i in order]
    candidates = []
    for i, part_channels in enumerate(names):
        own, shared = {}, {}
        for name in part_channels:
            pieces = name.split(".")
            if len(pieces) >= 2 and pieces[-2] in views:
                if pieces[-2] == chosen:
                    own[".".join(pieces[:-2] + pieces[-1:])] = name
            elif len(pieces) > 1 or chosen == views[0]:  # a channel of no view, or of the default view
                shared[name] = name
        candidates.append((i, part_names[i], {**shared, **own}))
    return chosen, candidates


def _locate_layer(headers: list[dict], layer: str, view: str | None, path, frame):
    """(part index, {R,G,B[,A]: channel name in the file}, view read) of `layer` in `view`, or BadInput."""
    chosen, candidates = _view_candidates(headers, view, path, frame)
    parts = [(name, list(mapping)) for _, name, mapping in candidates]
    index, found = _find_layer(parts, layer)
    if index is None and chosen is not None and layer == "rgba":
        # Part names are free (MultiViewOpenEXR): the unprefixed R,G,B of a part of the view are its rgba.
        index, found = _find_layer([("", names) for _, names in parts], layer)
    if index is None:
        of_view = f" of view '{chosen}'" if chosen is not None else ""
        raise frame_error(path, f"no RGB channels in layer '{layer}'{of_view} (layers present: "
                                f"{_layers_present(parts)})", frame)
    part, _, mapping = candidates[index]
    return part, {key: mapping[name] for key, name in found.items()}, chosen


def _plain_attributes(header: dict) -> dict:
    skip = {"channels", "dataWindow", "displayWindow", "compression", "lineOrder", "type", "tiles",
            "pixelAspectRatio", "screenWindowCenter", "screenWindowWidth", "name", "chunkCount", "version"}
    return {k: v for k, v in header.items() if k not in skip and isinstance(v, (str, int, float))}


def read_header(path, frame=None, layer: str = "rgba", view: str | None = None) -> dict:
    """display_window, data_window, part index of the part holding `layer` (of `view` in a multi-view file)
    and the view read, from the header alone."""
    exr = _open_exr(path, frame, header_only=True)
    index, found, chosen = _locate_layer([exr.header(i) for i in range(len(exr.parts))], layer, view, path, frame)
    header = exr.header(index)
    return {"display_window": _window_from_header(header["displayWindow"]),
            "data_window": _window_from_header(header["dataWindow"]),
            "part": index, "view": chosen, "has_alpha": "A" in found, "attributes": _plain_attributes(header)}


def read_layer(path, layer: str = "rgba", frame=None, view: str | None = None) -> ExrLayer:
    """Read `layer` (R,G,B and A if present) of an EXR file over its data window.

    `rgba` is the unprefixed R,G,B,A (or `rgba.*`); any other name L is `L.R`/`L.red`..., or the unprefixed
    channels of a multi-part file's part named L. Missing alpha reads as 1 (inside the data window).
    In a multi-view (stereo) file the layer is read from `view`, by default the file's default view.
    """
    exr = _open_exr(path, frame)
    index, found, chosen = _locate_layer([p.header for p in exr.parts], layer, view, path, frame)
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
                    attributes=_plain_attributes(header), view=chosen)


# ----------------------------------------------------------------------------------------------- writing

def compression_code(name: str):
    try:
        return COMPRESSIONS[name.lower()]
    except KeyError:
        raise BadInput(f"unknown or lossy EXR compression '{name}' (lossless choices: "
                       f"{', '.join(COMPRESSIONS)})") from None


_INT32 = (-(2**31), 2**31 - 1)


def _attribute_value(value):
    """An EXR attribute value: str, int (32-bit), float, an int pair or triple (V2i/V3i, from a numpy int
    array), else JSON text. Ints beyond 32 bits (EXR has no wider int) are written as decimal text, since the
    binding would wrap them silently."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return value if _INT32[0] <= value <= _INT32[1] else str(value)
    if isinstance(value, (str, float)):
        return value
    if isinstance(value, np.floating):
        return float(value)
    if (isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.shape in ((2,), (3,))
            and value.min() >= _INT32[0] and value.max() <= _INT32[1]):
        return value.astype(np.int32)
    if isinstance(value, np.ndarray):
        value = value.tolist()
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
                 compression: str = "zip", plate_data_window: Window | None = None) -> None:
    """Write Vera's edit layer: R,G,B,A (premultiplied) and matte.A, half, atomically.

    `rgba` is (H, W, 4) float32 premultiplied, covering `display_window`. The data window is the display
    window, grown to cover `plate_data_window` (the plate's overscan) with zeros: Nuke repeats a file's edge
    pixels past a data window equal to its display window, which would smear the edit into the overscan.
    `attributes` (prompt, seed, model, source, ...) go into the header as `vera/<key>`; `vera/version` is
    added. See docs/output-format.md.
    """
    w, h = window_size(display_window)
    if rgba.ndim != 3 or rgba.shape != (h, w, 4):
        raise ValueError(f"rgba has shape {rgba.shape}; the display window {tuple(display_window)} needs {(h, w, 4)}")
    data_window = tuple(display_window)
    if plate_data_window is not None:
        data_window = window_union(display_window, plate_data_window)
        rgba = crop_to_window(rgba, display_window, data_window)
    alpha = rgba[..., 3]
    channels = {"R": rgba[..., 0], "G": rgba[..., 1], "B": rgba[..., 2], "A": alpha, "matte.A": alpha}
    write_exr(path, channels, display_window, data_window, pixel_type="half",
              attributes=vera_attributes(attributes), compression=compression)



# Header keys that describe how a part is stored (not what it is): set anew when a part is rewritten.
_STORAGE_KEYS = {"channels", "chunkCount", "compression", "type", "tiles", "lineOrder", "version", "name"}


def write_replacing_layer(path, source_path, layer: str, view: str | None, rgba: np.ndarray, data_window: Window,
                          pixel_type: str, attributes: dict, compression: str = "zip", frame=None) -> None:
    """Write EXR `source_path` again as `path`, atomically, with its `layer` (of `view`) replaced by `rgba`.

    What a compositor's Merge passes through from its B input: every part, channel and header attribute of the
    source is kept (other layers such as Z or disparity, other views, `multiView`/`view`, the source's own
    metadata), channels copied bit for bit in their own pixel types. The layer's R,G,B,A channels get `rgba`
    ((h, w, 4) over `data_window`, stored as `pixel_type`; a source without alpha gains one, named like its R).
    The layer's part takes `data_window` (its other channels are 0 where the source had no pixels) and
    `attributes`. Every part is written as scanline with `compression`.
    """
    exr = _open_exr(source_path, frame)
    index, found, _ = _locate_layer([p.header for p in exr.parts], layer, view, source_path, frame)
    names = dict(found)
    if "A" not in names:
        names["A"] = found["R"][: len(found["R"]) - len(found["R"].split(".")[-1])] + "A"  # right.R -> right.A
    dtype = np.float16 if pixel_type == "half" else np.float32
    code = compression_code(compression)
    parts = []
    for i, part in enumerate(exr.parts):
        header = {k: v for k, v in part.header.items() if k not in _STORAGE_KEYS}
        header.update(compression=code, type=OpenEXR.scanlineimage)
        channels = dict(part.channels)
        if any(getattr(c, "xSampling", 1) != 1 or getattr(c, "ySampling", 1) != 1 for c in channels.values()):
            raise frame_error(source_path, "has subsampled channels (luminance/chroma); they cannot be copied into "
                                           "the composite", frame)
        if i == index:
            old_window = _window_from_header(part.header["dataWindow"])
            channels = {name: crop_to_window(c.pixels, old_window, data_window) for name, c in channels.items()}
            for k, key in enumerate("RGBA"):
                channels[names[key]] = _stored(rgba[..., k], dtype)
            header["dataWindow"] = _header_box(data_window)
            header.update(attributes)
        parts.append((header, channels, part.name() if callable(getattr(part, "name", None)) else ""))
    if len(parts) == 1:
        header, channels, name = parts[0]
        out = OpenEXR.File(dict(header, **({"name": name} if name else {})), channels)
    else:
        out = OpenEXR.File([OpenEXR.Part(header, channels, name) for header, channels, name in parts])
    with atomic_path(path) as tmp:
        out.write(tmp)
