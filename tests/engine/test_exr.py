"""vera.exr: writing Vera's layers (channels, types, windows, attributes, compression, atomicity) and reading."""

import os

import numpy as np
import OpenEXR
import pytest

import vera
from vera import exr
from vera.errors import BadInput

from images import pattern_image, rgba_channels, write_exr


def _premultiplied(h, w, seed=0):
    img = pattern_image(h, w, seed)
    img[..., 3] = np.where(img[..., 3] > 0.9, 0.0, img[..., 3])  # some exactly-0 alpha
    img[..., :3] *= img[..., 3:4]
    return img


def test_write_layers_channels_types_windows_and_attributes(tmp_path):
    display = (10, 20, 10 + 15, 20 + 8)  # a display window not at the origin
    rgba = _premultiplied(9, 16)
    path = tmp_path / "edit.1001.exr"
    exr.write_layers(path, rgba, display, {"prompt": "a red kite", "seed": 7, "model": "demo",
                                            "source": "/plates/plate.1001.exr"})
    f = OpenEXR.File(str(path), separate_channels=True)
    header = f.header()
    assert sorted(f.channels()) == ["A", "B", "G", "R", "matte.A"]
    assert all(c.pixels.dtype == np.float16 for c in f.channels().values())
    assert exr._window_from_header(header["displayWindow"]) == display
    assert exr._window_from_header(header["dataWindow"]) == display
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION
    assert header["vera/prompt"] == "a red kite"
    assert header["vera/seed"] == 7
    assert header["vera/model"] == "demo"
    assert header["vera/source"] == "/plates/plate.1001.exr"
    assert header["vera/version"] == vera.__version__
    half = rgba.astype(np.float16)
    for i, c in enumerate("RGBA"):
        np.testing.assert_array_equal(f.channels()[c].pixels, half[..., i])
    np.testing.assert_array_equal(f.channels()["matte.A"].pixels, half[..., 3])


@pytest.mark.parametrize("name,code", [("piz", OpenEXR.PIZ_COMPRESSION), ("none", OpenEXR.NO_COMPRESSION),
                                       ("zips", OpenEXR.ZIPS_COMPRESSION)])
def test_compression_option(tmp_path, name, code):
    path = tmp_path / "e.exr"
    rgba = _premultiplied(4, 5)
    exr.write_layers(path, rgba, (0, 0, 4, 3), {}, compression=name)
    assert OpenEXR.File(str(path), header_only=True).header()["compression"] == code
    np.testing.assert_array_equal(exr.read_layer(path).pixels, rgba.astype(np.float16).astype(np.float32))


def test_lossy_or_unknown_compression_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="dwaa"):
        exr.write_layers(tmp_path / "e.exr", _premultiplied(4, 5), (0, 0, 4, 3), {}, compression="dwaa")
    assert not (tmp_path / "e.exr").exists()


def test_write_is_atomic_old_file_survives_a_failed_write(tmp_path):
    path = tmp_path / "edit.0001.exr"
    good = _premultiplied(4, 5)
    exr.write_layers(path, good, (0, 0, 4, 3), {})
    with pytest.raises(ValueError):
        exr.write_layers(path, np.zeros((3, 3, 4), np.float32), (0, 0, 4, 3), {})  # wrong size
    np.testing.assert_array_equal(exr.read_layer(path).pixels, good.astype(np.float16).astype(np.float32))
    assert os.listdir(tmp_path) == ["edit.0001.exr"]  # no temporary left behind


def test_values_beyond_half_range_stay_finite(tmp_path):
    rgba = np.full((2, 2, 4), 1e6, np.float32)
    rgba[0, 0, 0] = -1e6
    rgba[1, 1, 1] = 2.0
    rgba[..., 3] = 1
    exr.write_layers(tmp_path / "e.exr", rgba, (0, 0, 1, 1), {})
    back = exr.read_layer(tmp_path / "e.exr").pixels
    assert back[0, 0, 0] == -65504 and back[0, 1, 0] == 65504 and back[1, 1, 1] == 2.0


def test_read_layer_data_window_and_pixel_types(tmp_path):
    img = pattern_image(6, 7, channels=4)
    for pixel_type, dtype in (("half", np.float16), ("float", np.float32)):
        path = write_exr(tmp_path / f"{pixel_type}.exr", rgba_channels(img), (0, 0, 19, 9), (3, 2, 9, 7),
                         pixel_type)
        layer = exr.read_layer(path)
        assert layer.pixel_type == pixel_type
        assert layer.data_window == (3, 2, 9, 7) and layer.display_window == (0, 0, 19, 9)
        np.testing.assert_array_equal(layer.pixels, img.astype(dtype).astype(np.float32))


def test_attributes_keep_explicit_namespaces_and_serialise_other_values():
    attrs = exr.vera_attributes({"prompt": "p", "nuke/node": "Vera1", "window": [1, 2], "flag": True,
                                 "skip": None})
    assert attrs == {"vera/prompt": "p", "nuke/node": "Vera1", "vera/window": "[1, 2]", "vera/flag": 1,
                     "vera/version": vera.__version__}


def test_truncated_file_prints_nothing_from_the_library(tmp_path, capfd):
    path = write_exr(tmp_path / "t.exr", rgba_channels(pattern_image(64, 64)), (0, 0, 63, 63), pixel_type="float",
                     compression=OpenEXR.NO_COMPRESSION)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    with pytest.raises(BadInput, match="corrupt or truncated") as err:
        exr.read_layer(path, frame=1)
    assert "\n" not in str(err.value) and str(path) in str(err.value) and "frame 1" in str(err.value)
    out, errtext = capfd.readouterr()
    assert out == "" and errtext == ""
