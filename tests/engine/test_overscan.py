"""Layers over a plate with overscan (data window beyond the display window, like the Beachball frames).

Nuke's EXR reader repeats a file's edge pixels outside its data window when the data window equals the display
window exactly (edge mode "plate"); a layer written only over the display window would smear its border into
the plate's overscan. Vera writes the layer's data window over the plate's data window too (zeros outside the
display window), so in Nuke, in oiiotool and in `vera-render comp` the overscan stays the plate's own.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fake_nuke
import vera.render as render
from bundles import FIRST, LAST, SMALL_HEIGHT, SMALL_WIDTH, base_spec, write_spec
from vera.cli import main
from vera.exr import read_header, read_layer, window_union, write_exr

DISPLAY = (0, 0, SMALL_WIDTH - 1, SMALL_HEIGHT - 1)
OVERSCAN = (-4, -3, SMALL_WIDTH + 3, SMALL_HEIGHT + 2)  # the plate's data window: 4/3 pixels past each edge
OIIOTOOL = str(Path(sys.executable).with_name("oiiotool"))


def write_overscan_plate(folder, first, last):
    w, h = OVERSCAN[2] - OVERSCAN[0] + 1, OVERSCAN[3] - OVERSCAN[1] + 1
    rng = np.random.default_rng(3)
    for frame in range(first, last + 1):
        rgb = rng.random((h, w, 3), dtype=np.float32)
        write_exr(folder / f"plate.{frame:04d}.exr", {c: rgb[..., i] for i, c in enumerate("RGB")}, DISPLAY,
                  data_window=OVERSCAN)


def background_change(bundle, spec, frames, seed, progress):
    """The model's output for a background change: alpha 1 over the whole frame, so the edit's edges carry
    content right up to the display window's border (what smears in Nuke if the layer stops there)."""
    out = {}
    for frame in frames:
        rgba = np.empty((SMALL_HEIGHT, SMALL_WIDTH, 4), np.float32)
        rgba[..., :3] = np.linspace(0.2, 0.8, SMALL_WIDTH, dtype=np.float32)[None, :, None]
        rgba[..., 3] = 1.0
        rgba[:, SMALL_WIDTH // 2:] = 0.0  # right half untouched
        out[frame] = (rgba, rgba[..., 3].copy())
        progress.advance(1)
    return out


@pytest.fixture
def rendered(tmp_path, monkeypatch):
    write_overscan_plate(tmp_path, FIRST, LAST)
    monkeypatch.setattr(render, "_render_frames", background_change)
    shot = write_spec(tmp_path, base_spec())
    assert main(["run", str(shot), "--progress", "none"]) == 0
    return tmp_path


def outside_display(window):
    x0, y0, x1, y1 = window
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    return (xs < DISPLAY[0]) | (xs > DISPLAY[2]) | (ys < DISPLAY[1]) | (ys > DISPLAY[3])


def test_layers_cover_the_plates_overscan_with_zeros(rendered):
    for frame in (FIRST, LAST):
        head = read_header(rendered / "out" / f"edit.{frame}.exr")
        assert head["display_window"] == DISPLAY
        assert head["data_window"] == window_union(OVERSCAN, DISPLAY)
        layer = read_layer(rendered / "out" / f"edit.{frame}.exr")
        assert not layer.pixels[outside_display(layer.data_window)].any()  # nothing outside the display window


def test_nuke_merge_over_keeps_the_overscan(rendered):
    """The Nuke composite: both files read as Nuke's EXR reader reads them, then Merge over (A + B(1-a))."""
    nuke = fake_nuke.install()
    window = window_union(OVERSCAN, DISPLAY)
    outside = outside_display(window)
    for frame in range(FIRST, LAST + 1):
        plate = nuke.read_exr_as_nuke(rendered / f"plate.{frame:04d}.exr", window)
        edit = nuke.read_exr_as_nuke(rendered / "out" / f"edit.{frame}.exr", window)
        assert edit[~outside][..., 3].max() == 1.0  # the edit reaches the border: there is something to smear
        comp = edit + plate * (1.0 - edit[..., 3:4])
        untouched = outside | (edit[..., 3] == 0)
        assert np.array_equal(comp[untouched], plate[untouched]), frame


def test_oiiotool_over_keeps_the_overscan(rendered, tmp_path):
    comp_path = tmp_path / "comp.exr"
    subprocess.run([OIIOTOOL, str(rendered / "out" / f"edit.{FIRST}.exr"), "--ch", "R,G,B,A",
                    str(rendered / f"plate.{FIRST:04d}.exr"), "--ch", "R,G,B,A=1.0", "--over", "-o", str(comp_path)],
                   check=True, capture_output=True)
    comp, plate = read_layer(comp_path), read_layer(rendered / f"plate.{FIRST:04d}.exr")
    assert comp.data_window == window_union(OVERSCAN, DISPLAY)
    outside = outside_display(comp.data_window)
    np.testing.assert_array_equal(comp.pixels[outside][..., :3], plate.pixels[outside][..., :3])
