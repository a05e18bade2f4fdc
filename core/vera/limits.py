"""How much a file or spec from someone else may ask vera to allocate or copy (docs/security.md).

- Image size. An image header declares its display and data windows; a 384-byte EXR can declare 60000x60000
  (57 GB as float RGBA), and reading it would allocate that much, or fail as "out of memory" (exit 3, which a
  farm retries). The pixels of the union of the two windows are capped, before any pixel is read: the
  setting `VERA_MAX_MEGAPIXELS` (default 100, above a 10K plate with overscan) raises or lowers the cap.
- Prompt length. The instruction and the negative prompt go into every frame's header and through the text
  encoder, which reads at most 512 tokens; longer text is refused by `validate`.
"""

from __future__ import annotations

import os

from vera.errors import BadInput, frame_error

MAX_MEGAPIXELS_ENV = "VERA_MAX_MEGAPIXELS"
DEFAULT_MAX_MEGAPIXELS = 100.0
MAX_INSTRUCTION_CHARS = 4000


def max_pixels() -> int:
    """The most pixels an image's windows may cover (from $VERA_MAX_MEGAPIXELS, else the default)."""
    text = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
    if not text:
        return int(DEFAULT_MAX_MEGAPIXELS * 1e6)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise BadInput(f"{MAX_MEGAPIXELS_ENV}={text!r}: must be a positive number of megapixels")
    return int(value * 1e6)


def check_declared_size(path, frame, display_window, data_window) -> None:
    """BadInput naming file, frame and size when the union of the two (inclusive) windows covers more pixels
    than the cap; called with a header's windows before its pixels are read."""
    x0, y0 = min(display_window[0], data_window[0]), min(display_window[1], data_window[1])
    x1, y1 = max(display_window[2], data_window[2]), max(display_window[3], data_window[3])
    width, height = int(x1) - int(x0) + 1, int(y1) - int(y0) + 1
    cap = max_pixels()
    if width * height > cap:
        raise frame_error(path, f"the header declares {width}x{height} pixels (display and data window together), "
                                f"over the {cap / 1e6:g} megapixel cap; refused before reading (a damaged or "
                                f"hostile file; set {MAX_MEGAPIXELS_ENV} to raise the cap for real plates "
                                f"this large)", frame)


def instruction_problem(key: str, text: str) -> str | None:
    """The validate problem for a prompt longer than MAX_INSTRUCTION_CHARS, else None."""
    if len(text) > MAX_INSTRUCTION_CHARS:
        return (f"{key}: {len(text)} characters, over the limit of {MAX_INSTRUCTION_CHARS} (the text encoder "
                f"reads at most 512 tokens; the text is also stored in every frame's header)")
    return None
