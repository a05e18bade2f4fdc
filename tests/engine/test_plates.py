"""vera.plates: every plate layout reads back exactly, and every bad input is one line naming file and frame."""

import numpy as np
import OpenEXR
import pytest

from vera import plates
from vera.errors import BadInput

from images import pattern_image, rgba_channels, write_exr, write_exr_sequence, write_mp4, write_oiio

H, W = 12, 16
DISPLAY = (0, 0, W - 1, H - 1)


def _as(img, pixel_type):
    return img.astype(np.float16 if pixel_type == "half" else np.float32).astype(np.float32)


@pytest.mark.parametrize("pixel_type", ["half", "float"])
def test_data_window_smaller_than_display(tmp_path, pixel_type):
    data = (3, 2, 9, 7)  # a bounding box inside the frame
    img = pattern_image(6, 7)
    write_exr(tmp_path / "p.1001.exr", rgba_channels(img), DISPLAY, data, pixel_type)
    seq = plates.open_sequence(str(tmp_path / "p.####.exr"))
    assert (seq.width, seq.height, seq.frames) == (W, H, [1001])
    im = seq.read(1001)
    assert im.pixels.shape == (H, W, 4) and im.pixels.dtype == np.float32
    assert im.pixel_type == pixel_type and im.has_alpha and im.data_window == data
    expected = np.zeros((H, W, 4), np.float32)
    expected[2:8, 3:10] = _as(img, pixel_type)
    np.testing.assert_array_equal(im.pixels, expected)


def test_data_window_larger_than_display_overscan(tmp_path):
    data = (-4, -3, W + 3, H + 2)
    img = pattern_image(H + 6, W + 8)
    write_exr(tmp_path / "p.0001.exr", rgba_channels(img), DISPLAY, data, "float")
    seq = plates.open_sequence(str(tmp_path / "p.%04d.exr"))
    np.testing.assert_array_equal(seq.read(1).pixels, img[3:3 + H, 4:4 + W])
    whole = seq.read(1, region="data")
    assert whole.window == data
    np.testing.assert_array_equal(whole.pixels, img)


def test_display_window_not_at_origin(tmp_path):
    display = (100, 50, 100 + W - 1, 50 + H - 1)
    img = pattern_image(H, W)
    write_exr(tmp_path / "p.0001.exr", rgba_channels(img), display, display, "half")
    im = plates.open_sequence(str(tmp_path / "p.####.exr")).read(1)
    assert im.display_window == display
    np.testing.assert_array_equal(im.pixels, _as(img, "half"))


def test_tiled_exr(tmp_path):
    img = pattern_image(H, W)
    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize, tiles.mode = 8, 8, OpenEXR.ONE_LEVEL
    write_exr(tmp_path / "p.0001.exr", rgba_channels(img), DISPLAY, pixel_type="float",
              header_extra={"type": OpenEXR.tiledimage, "tiles": tiles})
    assert OpenEXR.File(str(tmp_path / "p.0001.exr"), header_only=True).header()["type"] == OpenEXR.tiledimage
    np.testing.assert_array_equal(plates.open_sequence(str(tmp_path / "p.####.exr")).read(1).pixels, img)


def test_missing_alpha_reads_as_one_inside_the_data_window(tmp_path):
    img = pattern_image(6, 7, channels=3)
    write_exr(tmp_path / "p.0001.exr", rgba_channels(img), DISPLAY, (3, 2, 9, 7), "half")
    im = plates.open_sequence(str(tmp_path / "p.####.exr")).read(1)
    assert not im.has_alpha
    assert (im.pixels[2:8, 3:10, 3] == 1).all()
    assert im.pixels[..., 3].sum() == 6 * 7  # outside the bounding box everything is 0, as in Nuke


def test_multi_part_takes_rgba_or_the_named_layer(tmp_path):
    beauty, diffuse = pattern_image(H, W, seed=1), pattern_image(H, W, seed=2, channels=3)
    write_exr(tmp_path / "p.0001.exr", None, DISPLAY, parts=[
        ("diffuse", rgba_channels(diffuse, "diffuse.")),
        ("rgba", rgba_channels(beauty)),
    ])
    np.testing.assert_array_equal(plates.open_sequence(str(tmp_path / "p.####.exr")).read(1).pixels,
                                  _as(beauty, "half"))
    im = plates.open_sequence(str(tmp_path / "p.####.exr"), layer="diffuse").read(1)
    np.testing.assert_array_equal(im.pixels[..., :3], _as(diffuse, "half"))
    assert not im.has_alpha


def test_multi_part_with_unprefixed_channels_in_a_named_part(tmp_path):
    beauty, spec = pattern_image(H, W, seed=1), pattern_image(H, W, seed=3)
    write_exr(tmp_path / "p.0001.exr", None, DISPLAY, parts=[("rgba", rgba_channels(beauty)),
                                                                ("spec", rgba_channels(spec))])
    im = plates.open_sequence(str(tmp_path / "p.####.exr"), layer="spec").read(1)
    np.testing.assert_array_equal(im.pixels, _as(spec, "half"))


def test_multi_layer_single_part_and_long_channel_names(tmp_path):
    beauty, other = pattern_image(H, W, seed=4), pattern_image(H, W, seed=5)
    channels = rgba_channels(beauty, "rgba.") | rgba_channels(other, "light.", ("red", "green", "blue", "alpha"))
    write_exr(tmp_path / "p.0001.exr", channels, DISPLAY)
    seq = "p.####.exr"
    np.testing.assert_array_equal(plates.open_sequence(str(tmp_path / seq)).read(1).pixels, _as(beauty, "half"))
    np.testing.assert_array_equal(plates.open_sequence(str(tmp_path / seq), layer="light").read(1).pixels,
                                  _as(other, "half"))


@pytest.mark.parametrize("pattern", ["p.####.exr", "p.%04d.exr", "p.@@@@.exr", "p.1001-1003#.exr"])
def test_patterns_and_frame_ranges(tmp_path, pattern):
    write_exr_sequence(tmp_path, "p", range(1001, 1004), H, W)
    seq = plates.open_sequence(str(tmp_path / pattern))
    assert seq.frames == [1001, 1002, 1003]
    assert seq.path(1002) == str(tmp_path / "p.1002.exr")
    assert plates.open_sequence(str(tmp_path / pattern), 1002, 1003).frames == [1002, 1003]
    assert not np.array_equal(seq.read(1001).pixels, seq.read(1002).pixels)


def test_single_numbered_file(tmp_path):
    write_exr_sequence(tmp_path, "p", [1001], H, W)
    assert plates.open_sequence(str(tmp_path / "p.1001.exr")).frames == [1001]


# DPX: OIIO reads 10-bit codes through 16 bits, so values are k/1023 to within 1/65535.
@pytest.mark.parametrize("ext,fmt,atol", [("png", "uint8", 1e-6), ("tif", "uint16", 1e-6),
                                          ("dpx", "uint10", 2e-5), ("jpg", "uint8", None)])
def test_oiio_formats(tmp_path, ext, fmt, atol):
    levels = {"uint8": 255, "uint16": 65535, "uint10": 1023}[fmt]
    img = np.round(np.clip(pattern_image(H, W, channels=3), 0, 1) * levels) / levels
    write_oiio(tmp_path / f"p.0001.{ext}", img, fmt)
    im = plates.open_sequence(str(tmp_path / f"p.####.{ext}")).read(1)
    assert im.pixels.shape == (H, W, 4) and not im.has_alpha and im.pixel_type == "float"
    if atol:
        np.testing.assert_allclose(im.pixels[..., :3], img, atol=atol)
    else:
        assert np.abs(im.pixels[..., :3] - img).mean() < 0.05


@pytest.mark.parametrize("ext,fmt", [("png", "uint8"), ("tif", "uint16")])
def test_greyscale_plate_reads_as_equal_rgb(tmp_path, ext, fmt):
    """A one-channel (Y) plate is grey: R = G = B = Y, as Nuke's Read shows it; Y + A keeps its alpha."""
    levels = {"uint8": 255, "uint16": 65535}[fmt]
    grey = np.round(np.clip(pattern_image(H, W, channels=3)[..., :1], 0, 1) * levels) / levels
    write_oiio(tmp_path / f"g.0001.{ext}", grey, fmt)
    im = plates.open_sequence(str(tmp_path / f"g.####.{ext}")).read(1)
    assert not im.has_alpha
    for c in range(3):
        np.testing.assert_allclose(im.pixels[..., c], grey[..., 0], atol=1e-6)
    if ext == "png":  # grey + alpha (a PNG names them Y, A)
        alpha = np.full((H, W, 1), 1.0, np.float32)
        alpha[:, : W // 2] = 0.0
        write_oiio(tmp_path / "ga.0001.png", np.concatenate([grey, alpha], axis=-1), fmt)
        im = plates.open_sequence(str(tmp_path / "ga.####.png")).read(1)
        assert im.has_alpha and im.pixels[:, : W // 2, :4].max() == 0.0
        np.testing.assert_allclose(im.pixels[:, W // 2:, 1], grey[:, W // 2:, 0], atol=1e-6)


def test_png_with_alpha_reads_premultiplied(tmp_path):
    """PNG stores unassociated alpha; OIIO (like Nuke's Read) hands it over premultiplied, as EXR plates are."""
    img = np.round(np.clip(pattern_image(H, W), 0, 1) * 255) / 255
    write_oiio(tmp_path / "still.png", img, "uint8")
    seq = plates.open_sequence(str(tmp_path / "still.png"))
    assert seq.frames == [1]
    im = seq.read(1)
    assert im.has_alpha
    np.testing.assert_allclose(im.pixels[..., 3], img[..., 3], atol=1e-6)
    # OIIO premultiplies 8-bit data in 8 bits: within one code value.
    np.testing.assert_allclose(im.pixels[..., :3], img[..., :3] * img[..., 3:], atol=1 / 255)


def test_mp4_frames_are_numbered_from_one_or_start_frame(tmp_path):
    frames = [np.full((16, 32, 3), v, np.float32) for v in (0.1, 0.5, 0.9)]
    path = str(write_mp4(tmp_path / "clip.mp4", frames))
    seq = plates.open_sequence(path)
    assert seq.frames == [1, 2, 3] and (seq.width, seq.height) == (32, 16)
    for i, f in enumerate(seq.frames):
        assert abs(seq.read(f).pixels[..., :3].mean() - frames[i].mean()) < 0.02
    assert abs(seq.read(1).pixels.mean() - (0.1 * 3 + 1) / 4) < 0.02  # backwards: re-decoded
    assert plates.open_sequence(path, 2, 3).frames == [2, 3]
    later = plates.open_sequence(path, start_frame=1001)
    assert later.frames == [1001, 1002, 1003]
    assert abs(later.read(1003).pixels[..., 0].mean() - 0.9) < 0.02
    with pytest.raises(BadInput, match="missing frames 4-5"):
        plates.open_sequence(path, 1, 5)


# ---------------------------------------------------------------------------------------------- bad input

def _one_line(exc, *needles):
    text = str(exc.value)
    assert "\n" not in text
    for needle in needles:
        assert str(needle) in text, (needle, text)


def test_missing_frames_are_listed_compactly(tmp_path):
    write_exr_sequence(tmp_path, "p", [1001, 1002, 1006, 1007, 1009, 1011], H, W)
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(tmp_path / "p.####.exr"), 1001, 1012)
    _one_line(err, "p.####.exr", "missing frames 1003-1005,1008,1010,1012")
    with pytest.raises(BadInput) as err:  # no range given: gaps between the first and last frame on disk
        plates.open_sequence(str(tmp_path / "p.####.exr"))
    _one_line(err, "1003-1005,1008,1010")


def test_no_frames_at_all(tmp_path):
    with pytest.raises(BadInput, match="no frames found"):
        plates.open_sequence(str(tmp_path / "nothing.####.exr"))


def test_corrupt_file_names_file_and_frame(tmp_path):
    write_exr_sequence(tmp_path, "p", [1, 2], H, W)
    (tmp_path / "p.0002.exr").write_bytes(b"not an exr at all")
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(tmp_path / "p.####.exr"))
    _one_line(err, "p.0002.exr", "frame 2", "corrupt")


def test_truncated_file_names_file_and_frame(tmp_path):
    write_exr_sequence(tmp_path, "p", [1, 2], 64, 64)
    path = tmp_path / "p.0002.exr"
    path.write_bytes(path.read_bytes()[:-200])
    seq = plates.open_sequence(str(tmp_path / "p.####.exr"))  # the header is intact
    with pytest.raises(BadInput) as err:
        seq.read(2)
    _one_line(err, "p.0002.exr", "frame 2", "truncated")


def test_truncated_png(tmp_path):
    img = np.round(np.clip(pattern_image(64, 64, channels=3), 0, 1) * 255) / 255
    path = write_oiio(tmp_path / "p.0001.png", img)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(tmp_path / "p.####.png")).read(1)
    _one_line(err, "p.0001.png", "frame 1")


def test_size_mismatch_inside_a_sequence(tmp_path):
    write_exr_sequence(tmp_path, "p", [1, 2], H, W)
    write_exr_sequence(tmp_path, "p", [3], H, W + 2)
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(tmp_path / "p.####.exr"))
    _one_line(err, "p.0003.exr", "frame 3", f"size {W + 2}x{H}", f"{W}x{H}")


def test_no_rgb_channels(tmp_path):
    write_exr(tmp_path / "p.0001.exr", {"Z": np.ones((H, W), np.float32), "matte.A": np.ones((H, W))}, DISPLAY)
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(tmp_path / "p.####.exr"))
    _one_line(err, "p.0001.exr", "frame 1", "no RGB channels", "matte")


def test_unknown_layer(tmp_path):
    write_exr_sequence(tmp_path, "p", [1], H, W)
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(tmp_path / "p.####.exr"), layer="diffuse")
    _one_line(err, "no RGB channels in layer 'diffuse'", "rgba")


def test_nonfinite_pixels_refused_with_a_count_or_zeroed(tmp_path):
    img = pattern_image(H, W)
    img[0, 0, 0] = np.nan
    img[1, 1, 1] = np.inf
    img[2, 2, :3] = -np.inf
    write_exr(tmp_path / "p.0001.exr", rgba_channels(img), DISPLAY, pixel_type="float")
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(tmp_path / "p.####.exr")).read(1)
    _one_line(err, "p.0001.exr", "frame 1", "5 NaN/inf values")
    im = plates.open_sequence(str(tmp_path / "p.####.exr"), nonfinite="zero").read(1)
    assert im.nonfinite == 5 and np.isfinite(im.pixels).all()
    assert im.pixels[0, 0, 0] == 0 and im.pixels[1, 1, 1] == 0 and (im.pixels[2, 2, :3] == 0).all()
    np.testing.assert_array_equal(im.pixels[3:], img[3:])
    with pytest.raises(BadInput, match="nonfinite"):
        plates.open_sequence(str(tmp_path / "p.####.exr"), nonfinite="clamp")


def test_corrupt_movie(tmp_path):
    path = tmp_path / "clip.mov"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(BadInput) as err:
        plates.open_sequence(str(path))
    _one_line(err, "clip.mov", "unreadable movie")


def test_compact_frames():
    assert plates.compact_frames([1010, 1003, 1004, 1005]) == "1003-1005,1010"
    assert plates.compact_frames([7]) == "7"
