"""Reading plates: frame sequences by fileseq pattern (EXR via OpenEXR, DPX/TIFF/PNG/JPEG via OpenImageIO)
and movies (MOV/MP4 via PyAV).

Every frame comes back as an `Image`: float32 (H, W, 4) over the plate's display window, in the plate's own
colour space (no conversion here). Anything wrong with the input raises `BadInput` with one line naming the
file and the frame.

Patterns: `plate.####.exr` (Nuke style: one '#' per digit), `plate.%04d.exr`, `plate.@@@@.exr`,
`plate.1001-1100#.exr` (fileseq style: a single '#' is four digits), or a single file (`plate.1001.exr`,
`still.png`, `clip.mov`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import av
import fileseq
import numpy as np
import OpenImageIO as oiio

from vera import exr as exr_io
from vera.errors import BadInput, frame_error, unreadable_or
from vera.files import regular_file
from vera.frames import compact_frames

# More frames than any shot has: a range beyond it is a typo, refused at once instead of scanned file by file.
MAX_SEQUENCE_FRAMES = 100_000
MOVIE_EXTENSIONS = {".mov", ".mp4", ".m4v", ".mkv", ".avi", ".webm", ".mxf"}
NONFINITE_CHOICES = ("error", "zero")
REGIONS = ("display", "data")


@dataclass
class Image:
    pixels: np.ndarray        # (H, W, 4) float32 over `window` (the display window unless read with region="data")
    has_alpha: bool           # False: the file has no alpha; alpha was set to 1 inside the data window
    path: str
    frame: int
    display_window: tuple     # (xmin, ymin, xmax, ymax) inclusive
    data_window: tuple        # the file's data window (bounding box)
    pixel_type: str           # "half" (EXR half) or "float" (everything else: float EXR, integer files, movies)
    nonfinite: int = 0        # NaN/inf values found (and set to 0 when nonfinite="zero")
    window: tuple | None = None  # the window `pixels` covers

    @property
    def width(self) -> int:
        return exr_io.window_size(self.display_window)[0]

    @property
    def height(self) -> int:
        return exr_io.window_size(self.display_window)[1]


# ----------------------------------------------------------------------------------------------- patterns

def _parse_pattern(pattern: str):
    """fileseq.FileSequence for `pattern`; '##..#' counts one digit per '#', a lone '#' means four.

    Only the file name carries the frame pattern: a folder may hold '#', '%' or '@' (shots/sc#12/...)."""
    folder, name = os.path.split(pattern)
    try:
        probe = fileseq.FileSequence(name)
        style = fileseq.PAD_STYLE_HASH1 if re.fullmatch(r"#{2,}", probe.padding() or "") else fileseq.PAD_STYLE_HASH4
        seq = fileseq.FileSequence(name, pad_style=style)
    except Exception as exc:  # noqa: BLE001 - fileseq raises several types for bad patterns
        raise BadInput(f"{pattern}: not a frame pattern fileseq understands ({exc})") from None
    if folder:
        seq.setDirname(folder + os.sep)
    return seq


def _frames_on_disk(seq) -> list[int]:
    """Frame numbers of files on disk that match the sequence's name and padding."""
    folder = seq.dirname() or "."
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    rx = re.compile(re.escape(seq.basename()) + r"(-?\d+)" + re.escape(seq.extension()) + r"$")
    frames = []
    for name in names:
        m = rx.match(name)
        if m and os.path.basename(seq.frame(int(m.group(1)))) == name:
            frames.append(int(m.group(1)))
    return sorted(frames)


# ----------------------------------------------------------------------------------------------- frame readers

def _finish(pixels, *, path, frame, display_window, data_window, pixel_type, has_alpha, region, nonfinite,
            layer) -> Image:
    bad = ~np.isfinite(pixels)
    count = int(bad.sum())
    if count:
        if nonfinite == "error":
            raise frame_error(path, f"{count} NaN/inf values in layer '{layer}' (refused; the nonfinite=zero "
                                    f"option, --nonfinite zero, replaces them with 0)", frame)
        pixels[bad] = 0.0
    window = display_window if region == "display" else data_window
    pixels = exr_io.crop_to_window(pixels, data_window, window)
    return Image(pixels=np.ascontiguousarray(pixels, dtype=np.float32), has_alpha=has_alpha, path=path,
                 frame=frame, display_window=display_window, data_window=data_window, pixel_type=pixel_type,
                 nonfinite=count, window=window)


def _to_rgba(pixels: np.ndarray, channel_names: list[str], alpha_index: int, path, frame) -> tuple:
    """(h, w, 4) from an OIIO read: R,G,B by name (or the first three channels), alpha where there is one."""
    names = [n.split(".")[-1].upper() for n in channel_names]
    index = {}
    for key, aliases in (("R", ("R", "RED")), ("G", ("G", "GREEN")), ("B", ("B", "BLUE"))):
        index[key] = next((i for i, n in enumerate(names) if n in aliases), None)
    if None in index.values():
        grey = next((i for i, n in enumerate(names) if n in ("Y", "L", "LUMINANCE", "GRAY", "GREY")), None)
        if pixels.shape[2] >= 3:
            index = {"R": 0, "G": 1, "B": 2}
        elif grey is not None:  # a greyscale plate (OIIO names its channel Y): R = G = B, as a Read shows it
            index = {"R": grey, "G": grey, "B": grey}
        else:
            raise frame_error(path, f"no RGB channels (channels: {', '.join(channel_names) or 'none'})", frame)
    h, w = pixels.shape[:2]
    out = np.empty((h, w, 4), dtype=np.float32)
    for i, key in enumerate("RGB"):
        out[..., i] = pixels[..., index[key]]
    has_alpha = 0 <= alpha_index < pixels.shape[2]
    out[..., 3] = pixels[..., alpha_index] if has_alpha else 1.0
    return out, has_alpha


def _oiio_open(path, frame):
    regular_file(path, frame)
    with exr_io.captured_native_output():  # libpng & co. print their own lines; OIIO's error holds them
        inp = oiio.ImageInput.open(path)
    if inp is None:
        raise unreadable_or(path, f"unreadable or corrupt image: {exr_io._one_line(oiio.geterror())}", frame)
    return inp


def _oiio_windows(spec):
    data = (spec.x, spec.y, spec.x + spec.width - 1, spec.y + spec.height - 1)
    display = (spec.full_x, spec.full_y, spec.full_x + spec.full_width - 1, spec.full_y + spec.full_height - 1)
    return display, data


def _read_oiio(path, frame, region, nonfinite, layer) -> Image:
    inp = _oiio_open(path, frame)
    try:
        spec = inp.spec()
        with exr_io.captured_native_output():  # as in _oiio_open
            pixels = inp.read_image(0, 0, 0, spec.nchannels, oiio.FLOAT)
        error = inp.geterror() if pixels is None or inp.has_error else ""
    finally:
        inp.close()
    if pixels is None or error:
        raise frame_error(path, f"corrupt or truncated image: {exr_io._one_line(error or 'no pixels')}", frame)
    pixels = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
    rgba, has_alpha = _to_rgba(pixels, list(spec.channelnames), spec.alpha_channel, path, frame)
    display, data = _oiio_windows(spec)
    pixel_type = "half" if spec.format == oiio.HALF else "float"
    return _finish(rgba, path=path, frame=frame, display_window=display, data_window=data, pixel_type=pixel_type,
                   has_alpha=has_alpha, region=region, nonfinite=nonfinite, layer=layer)


def _read_exr(path, frame, region, nonfinite, layer, view=None) -> Image:
    lay = exr_io.read_layer(path, layer=layer, frame=frame, view=view)
    return _finish(lay.pixels, path=path, frame=frame, display_window=lay.display_window,
                   data_window=lay.data_window, pixel_type=lay.pixel_type, has_alpha=lay.has_alpha,
                   region=region, nonfinite=nonfinite, layer=layer)


def _header_windows(path, frame, layer, view=None, require_alpha: bool = False):
    """(display window, data window) without reading pixels; `require_alpha`: BadInput if there is no alpha."""
    if path.lower().endswith(".exr"):
        head = exr_io.read_header(path, frame=frame, layer=layer, view=view)
        windows, has_alpha = (head["display_window"], head["data_window"]), head["has_alpha"]
    else:
        if view is not None:
            raise _not_multi_view(path, frame, view)
        inp = _oiio_open(path, frame)
        try:
            windows, has_alpha = _oiio_windows(inp.spec()), inp.spec().alpha_channel >= 0
        finally:
            inp.close()
    if require_alpha and not has_alpha:
        raise frame_error(path, f"no alpha channel in layer '{layer}' (the spec asks for channel A): "
                                "refused rather than read as all ones; use a channel the file has (R, G or B)",
                          frame)
    return windows


# ----------------------------------------------------------------------------------------------- sequences

class PlateSequence:
    """A plate: numbered image files or a movie. `frames`, `width`, `height`, `read(frame)`."""

    def __init__(self, pattern: str, frames: list[int], display_window, layer: str, nonfinite: str,
                 path_of=None, movie=None, view: str | None = None):
        self.pattern = pattern
        self.view = view  # the view read from a multi-view EXR plate (None: the file's default view)
        self.frames = frames
        self.display_window = tuple(display_window)
        self.width, self.height = exr_io.window_size(display_window)
        self.layer = layer
        self.nonfinite = nonfinite
        self._path_of = path_of
        self._movie = movie

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"PlateSequence({self.pattern!r}, {compact_frames(self.frames)}, {self.width}x{self.height})"

    def path(self, frame: int) -> str:
        return self._movie.path if self._movie else self._path_of(frame)

    def data_window(self, frame: int) -> tuple:
        """The frame's data window (bounding box, maybe overscan) from its header; a movie's is its frame."""
        if self._movie:
            return self.display_window
        return tuple(_header_windows(self.path(frame), frame, self.layer)[1])

    def read(self, frame: int, region: str = "display") -> Image:
        """The frame as an Image over the display window (`region="data"`: over the file's data window)."""
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}")
        if frame not in self.frames:
            raise frame_error(self.pattern, f"frame {frame} is not in this plate ({compact_frames(self.frames)})",
                              frame)
        if self._movie:
            rgb = self._movie.read(frame)
            h, w = rgb.shape[:2]
            rgba = np.concatenate([rgb, np.ones((h, w, 1), np.float32)], axis=2)
            window = (0, 0, w - 1, h - 1)
            return _finish(rgba, path=self._movie.path, frame=frame, display_window=window, data_window=window,
                           pixel_type="float", has_alpha=False, region=region, nonfinite=self.nonfinite,
                           layer=self.layer)
        path = self.path(frame)
        if path.lower().endswith(".exr"):
            image = _read_exr(path, frame, region, self.nonfinite, self.layer, self.view)
        else:
            image = _read_oiio(path, frame, region, self.nonfinite, self.layer)
        if exr_io.window_size(image.display_window) != (self.width, self.height):
            raise _size_mismatch(path, frame, image.display_window, self.display_window, self.frames[0])
        return image


def _size_mismatch(path, frame, window, reference_window, reference_frame) -> BadInput:
    w, h = exr_io.window_size(window)
    w0, h0 = exr_io.window_size(reference_window)
    return frame_error(path, f"size {w}x{h} differs from {w0}x{h0} of frame {reference_frame} in this sequence",
                       frame)


def _not_multi_view(path, frame, view) -> BadInput:
    return frame_error(path, f"view '{view}' asked for, but this is not a multi-view EXR (only EXR plates "
                             "have views)", frame)


def _check_nonfinite_option(nonfinite: str) -> None:
    if nonfinite not in NONFINITE_CHOICES:
        raise BadInput(f"nonfinite must be one of {', '.join(NONFINITE_CHOICES)}, not {nonfinite!r}")


def open_sequence(pattern: str, first: int | None = None, last: int | None = None, layer: str = "rgba",
                  nonfinite: str = "error", start_frame: int = 1, view: str | None = None,
                  require_alpha: bool = False) -> PlateSequence:
    """Open a plate. `first`/`last` restrict the frames (every frame in the range must exist); without them
    the pattern's own range, else the frames on disk (gaps are reported as missing).

    `nonfinite`: "error" refuses frames with NaN/inf (counting them), "zero" replaces them with 0.
    Movies: frame numbers are `start_frame`.. (1..N by default); `first`/`last` select among them.
    Every frame's display window (origin and size) is checked against the first one here, before any pixels
    are read: a layer is written over one display window per shot, so a frame whose window moved is refused.
    `view`: the view of a multi-view (stereo) EXR plate; None reads each file's default view.
    `require_alpha`: every frame must have an alpha channel (a mask read through channel A).
    """
    _check_nonfinite_option(nonfinite)
    pattern = str(pattern)
    if first is not None and last is not None and last < first:
        raise BadInput(f"{pattern}: last frame {last} is before first frame {first}")
    if first is not None and last is not None and last - first + 1 > MAX_SEQUENCE_FRAMES:
        raise BadInput(f"{pattern}: {last - first + 1} frames ({first}-{last}) is more than the "
                       f"{MAX_SEQUENCE_FRAMES} a sequence may have (a typo in the range?)")
    if os.path.splitext(pattern)[1].lower() in MOVIE_EXTENSIONS:
        if view is not None:
            raise _not_multi_view(pattern, None, view)
        if require_alpha:
            raise frame_error(pattern, "a movie has no alpha channel (the spec asks for channel A): use R, G or B",
                              None)
        return _open_movie(pattern, first, last, layer, nonfinite, start_frame)

    seq = _parse_pattern(pattern)
    numbered = bool(seq.padding())
    if not numbered:
        # One still image without a frame number: it is every frame asked for (frame 1 by default).
        path_of = lambda frame: pattern  # noqa: E731
        lo = first if first is not None else 1
        frames = list(range(lo, (last if last is not None else lo) + 1))
        regular_file(pattern)
    else:
        path_of = seq.frame
        on_disk = None
        if first is not None or last is not None:
            if first is None or last is None:
                on_disk = _frames_on_disk(seq)
                if not on_disk:
                    raise frame_error(pattern, "no frames found", None)
            lo = first if first is not None else on_disk[0]
            hi = last if last is not None else on_disk[-1]
            wanted = list(range(lo, hi + 1))
        elif seq.frameSet() is not None:
            wanted = [int(f) for f in seq.frameSet()]
        else:
            on_disk = _frames_on_disk(seq)
            if not on_disk:
                raise frame_error(pattern, "no frames found", None)
            wanted = list(range(on_disk[0], on_disk[-1] + 1))
        present = set(on_disk) if on_disk is not None else {f for f in wanted if os.path.exists(seq.frame(f))}
        missing = [f for f in wanted if f not in present]
        if missing:
            raise BadInput(f"{pattern}: missing frames {compact_frames(missing)} "
                           f"({len(missing)} of {compact_frames(wanted)})")
        frames = wanted

    display_window = None
    for frame in frames if numbered else frames[:1]:
        path = path_of(frame)
        window, _ = _header_windows(path, frame, layer, view, require_alpha)
        if display_window is None:
            display_window, first_frame = window, frame
        elif exr_io.window_size(window) != exr_io.window_size(display_window):
            raise _size_mismatch(path, frame, window, display_window, first_frame)
        elif tuple(window) != tuple(display_window):
            raise frame_error(path, f"display window {tuple(window)} differs from {tuple(display_window)} of "
                                    f"frame {first_frame} (same size, moved): refused, as its layer would sit "
                                    "offset in a compositor; conform the plate to one display window", frame)
    return PlateSequence(pattern, frames, display_window, layer, nonfinite, path_of=path_of, view=view)


# ----------------------------------------------------------------------------------------------- movies

class _Movie:
    """Sequential PyAV decoding with frame numbers; seeking backwards re-opens the file (plates read forward)."""

    def __init__(self, path: str, start_frame: int):
        self.path = path
        self.start = start_frame
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise frame_error(path, "no video stream", None)
                stream = container.streams.video[0]
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                self.count = stream.frames or sum(1 for _ in container.decode(video=0))
                fmt = stream.codec_context.format
                bits = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8
        except BadInput:
            raise
        except Exception as exc:  # noqa: BLE001 - PyAV/FFmpeg errors of any kind mean an unreadable movie
            raise frame_error(path, f"unreadable movie: {exr_io._one_line(str(exc))}", None) from None
        self.rgb_format, self.scale = ("rgb24", 255.0) if bits <= 8 else ("rgb48le", 65535.0)
        self._container = None
        self._decoder = None
        self._next_index = 0

    def _rewind(self):
        self.close()
        self._container = av.open(self.path)
        self._decoder = self._container.decode(video=0)
        self._next_index = 0

    def read(self, frame: int) -> np.ndarray:
        index = frame - self.start
        if self._decoder is None or index < self._next_index:
            self._rewind()
        try:
            while True:
                decoded = next(self._decoder)
                self._next_index += 1
                if self._next_index - 1 == index:
                    break
        except StopIteration:
            raise frame_error(self.path, f"truncated movie: only {self._next_index} frames decode", frame) from None
        except Exception as exc:  # noqa: BLE001
            raise frame_error(self.path, f"corrupt movie: {exr_io._one_line(str(exc))}", frame) from None
        return decoded.to_ndarray(format=self.rgb_format).astype(np.float32) / self.scale

    def close(self):
        if self._container is not None:
            self._container.close()
            self._container = None
            self._decoder = None


def _open_movie(path, first, last, layer, nonfinite, start_frame) -> PlateSequence:
    regular_file(path)
    movie = _Movie(path, start_frame)
    available = list(range(start_frame, start_frame + movie.count))
    lo = first if first is not None else available[0] if available else start_frame
    hi = last if last is not None else available[-1] if available else start_frame
    wanted = list(range(lo, hi + 1))
    missing = [f for f in wanted if f not in set(available)]
    if missing or not available:
        raise BadInput(f"{path}: missing frames {compact_frames(missing or wanted)} "
                       f"(the movie has {movie.count} frames, numbered from {start_frame})")
    return PlateSequence(path, wanted, (0, 0, movie.width - 1, movie.height - 1), layer, nonfinite, movie=movie)
