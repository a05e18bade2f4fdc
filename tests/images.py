"""Writers of small test plates in every layout the readers must handle.

EXR files are written directly with the OpenEXR API (not through vera.exr) so the readers are tested against
files we did not produce ourselves; PNG/TIFF/DPX/JPEG through OpenImageIO; MP4 through PyAV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenEXR


def pattern_image(h: int, w: int, seed: int = 0, channels: int = 4) -> np.ndarray:
    """Deterministic float32 (h, w, channels) test content: gradients plus noise, values in about [0, 1.2]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / max(w - 1, 1), y / max(h - 1, 1), 0.5 + 0.5 * np.sin(x * 0.7 + y * 0.3 + seed)], -1)
    img = np.concatenate([base, np.full((h, w, 1), 0.8, np.float32)], -1)[..., :channels]
    return (img + rng.uniform(0, 0.2, img.shape)).astype(np.float32)


def _box(window):
    return (np.array(window[:2], np.int32), np.array(window[2:], np.int32))


def write_exr(path, channels: dict, display_window, data_window=None, pixel_type="half", parts=None,
              compression=OpenEXR.ZIP_COMPRESSION, header_extra=None) -> Path:
    """A single-part EXR with `channels` (name -> (h, w) over data_window), or a multi-part one when
    `parts` = [(part name, channels dict), ...] is given (all parts share the windows)."""
    dtype = np.float16 if pixel_type == "half" else np.float32
    data_window = display_window if data_window is None else data_window

    def header():
        h = {"compression": compression, "type": OpenEXR.scanlineimage,
             "displayWindow": _box(display_window), "dataWindow": _box(data_window)}
        h.update(header_extra or {})
        return h

    def cast(chs):
        return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in chs.items()}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if parts:
        OpenEXR.File([OpenEXR.Part(header(), cast(chs), name) for name, chs in parts]).write(str(path))
    else:
        OpenEXR.File(header(), cast(channels)).write(str(path))
    return path


def rgba_channels(img: np.ndarray, prefix: str = "", names: str = "RGBA") -> dict:
    """{'R': img[..., 0], ...} (optionally 'layer.R' or with other names such as ('red', 'green', ...))."""
    names = list(names) if isinstance(names, str) else list(names)
    return {f"{prefix}{names[i]}": img[..., i] for i in range(img.shape[2])}


def write_exr_sequence(folder, name: str, frames, h: int, w: int, pixel_type="half", data_window=None,
                       channels: int = 4, seed: int = 0) -> str:
    """`folder/name.####.exr` for `frames`, each `pattern_image` over the data window. Returns the pattern."""
    display = (0, 0, w - 1, h - 1)
    dw = display if data_window is None else data_window
    dh, dwid = dw[3] - dw[1] + 1, dw[2] - dw[0] + 1
    for f in frames:
        img = pattern_image(dh, dwid, seed=seed + f, channels=channels)
        write_exr(Path(folder) / f"{name}.{f:04d}.exr", rgba_channels(img), display, dw, pixel_type)
    return str(Path(folder) / f"{name}.####.exr")


def write_oiio(path, img: np.ndarray, fmt: str = "uint8") -> Path:
    """PNG/TIFF/DPX/JPEG through OpenImageIO, quantised to `fmt` (uint8, uint16, float...). The values are
    stored as given (alpha, if any, unassociated: what a PNG holds)."""
    import OpenImageIO as oiio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = oiio.ImageBuf(np.ascontiguousarray(img, dtype=np.float32))
    buf.set_write_format(getattr(oiio, fmt.upper()) if fmt != "uint10" else oiio.UINT16)
    buf.specmod().attribute("oiio:UnassociatedAlpha", 1)
    if fmt == "uint10":
        buf.specmod().attribute("oiio:BitsPerSample", 10)
    if not buf.write(str(path)):
        raise RuntimeError(buf.geterror())
    return path


def write_mp4(path, frames: list[np.ndarray], fps: int = 24) -> Path:
    """A small H.264 (or MPEG-4 part 2 if that encoder is missing) movie from uint8-range float frames."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.options = {"crf": "0", "preset": "ultrafast"}
        except Exception:  # noqa: BLE001 - encoder not in this FFmpeg build
            stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for img in frames:
            rgb = np.clip(np.round(img[..., :3] * 255), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
