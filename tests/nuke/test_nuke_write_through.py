"""What the temporary Write (vera_nuke.shot.write_through) leaves on disk, opened as files (docs/nuke.md: the
plate raw, so its pixels stay in the working space, 16-bit half; the mask alpha only), and what a layer Read
gives. The fake Nuke converts colour like Nuke does (a Read or Write without Raw Data goes through its
colorspace); the project's working space is set apart from its float-file default so relying on the default
shows."""

import numpy as np
import OpenEXR
import pytest

import fake_nuke
from bundles import plate_pixels, write_plate
from vera.exr import write_layers
from vera_nuke import layers, shot

WORKING = "ACEScg"
# ACES TB-2014-004 / S-2014-004: linear Rec.709 (D65) -> ACEScg (AP1, D60 via Bradford), published constants
REC709_TO_AP1 = np.array([[0.6131, 0.3395, 0.0474],
                          [0.0702, 0.9164, 0.0134],
                          [0.0206, 0.1096, 0.8698]])


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    n = fake_nuke.setup(tmp_path, monkeypatch)
    # an OCIO-managed project (ACES): Read/Write colorspaces are then the config's names, not Nuke's own LUTs
    n.use_ocio_config([WORKING, "Linear Rec.709 (sRGB)", "sRGB - Texture", "ACES2065-1"])
    n.root()["workingSpaceLUT"].setValue(WORKING)
    return n


def exr_channels(path):
    """{channel name: (pixel type, pixels)} of an EXR file as written."""
    exr = OpenEXR.File(str(path), separate_channels=True)
    return {name: (ch.pixels.dtype, ch.pixels) for name, ch in exr.channels().items()}


def source_and_mask(nuke, tmp_path, first=1, last=3):
    """A raw plate Read behind a Grade (so it is written through) and a NoOp mask."""
    pattern = write_plate(tmp_path / "plates", first, last, 32, 24)
    read = nuke.nodes.Read()
    read["file"].fromUserText(f"{pattern} {first}-{last}")
    read["raw"].setValue(True)
    grade = nuke.nodes.Grade(inputs=[read])
    mask = nuke.nodes.NoOp(inputs=[read])
    node = nuke.nodes.VeraEdit(instruction="add a red balloon")
    node.setInput(0, grade)
    node.setInput(1, mask)
    node["output_dir"].setValue(str(tmp_path / "out"))
    return node


def test_written_plate_is_raw_half_and_mask_is_alpha_only(nuke, tmp_path):
    node = source_and_mask(nuke, tmp_path)

    spec = shot.build_spec(node)

    assert spec["plate"]["colorspace"] == WORKING
    for frame in (1, 2, 3):
        plate = exr_channels(tmp_path / "out" / "plate" / f"plate.{frame:04d}.exr")
        assert sorted(plate) == ["A", "B", "G", "R"]
        assert {dtype for dtype, _ in plate.values()} == {np.dtype(np.float16)}  # 16 bit half
        expected = plate_pixels(frame, 32, 24).astype(np.float16)  # raw: the plate's own values
        for i, c in enumerate("RGBA"):
            np.testing.assert_array_equal(plate[c][1], expected[..., i], err_msg=f"plate {c}, frame {frame}")
        mask = exr_channels(tmp_path / "out" / "mask" / f"mask.{frame:04d}.exr")
        assert sorted(mask) == ["A"], f"the mask holds {sorted(mask)}, not alpha only"
        assert mask["A"][0] == np.float16


def test_a_write_without_raw_converts_to_its_colorspace(nuke, tmp_path):
    """The fake's conversion is what the strict tests rely on: a Write of the working space (ACEScg) with
    Raw Data off and colorspace "linear" (Nuke's float default) writes Rec.709 values."""
    pattern = write_plate(tmp_path / "plates", 1, 1, 8, 6)
    read = nuke.nodes.Read()
    read["file"].fromUserText(f"{pattern} 1-1")
    read["raw"].setValue(True)
    write = nuke.nodes.Write(file=str(tmp_path / "w.%04d.exr"), channels="rgb", colorspace="linear")
    write.setInput(0, read)
    nuke.execute(write, 1, 1)
    written = exr_channels(tmp_path / "w.0001.exr")
    rgb = np.stack([written[c][1] for c in "RGB"], -1).astype(np.float64)
    ap1 = plate_pixels(1, 8, 6)[..., :3].astype(np.float16).astype(np.float64)
    assert sorted(written) == ["B", "G", "R"]
    np.testing.assert_allclose(rgb @ REC709_TO_AP1.T, ap1, atol=4e-3 * ap1.max())


def test_image_sequence_with_a_frame_offset_goes_through_the_write(nuke, tmp_path):
    """docs/nuke.md: an image sequence whose frames are offset is rendered to the plate folder, numbered as
    the comp's frames (file frame 1 shows at comp frame 101)."""
    pattern = write_plate(tmp_path / "plates", 1, 4, 16, 12)
    read = nuke.nodes.Read()
    read["file"].fromUserText(f"{pattern} 1-4")
    read["raw"].setValue(True)
    read["frame_mode"].setValue("offset")
    read["frame"].setValue("100")
    node = nuke.nodes.VeraEdit(instruction="add a boat")
    node.setInput(0, read)
    node["output_dir"].setValue(str(tmp_path / "out"))

    spec = shot.build_spec(node)

    assert (spec["plate"]["first"], spec["plate"]["last"]) == (101, 104)
    assert spec["plate"]["path"] == f"{tmp_path}/out/plate/plate.%04d.exr"
    for file_frame in range(1, 5):
        written = exr_channels(tmp_path / "out" / "plate" / f"plate.{file_frame + 100:04d}.exr")
        np.testing.assert_array_equal(written["R"][1], plate_pixels(file_frame, 16, 12)[..., 0].astype(np.float16))


def layer_read(nuke, tmp_path, plate_colorspace):
    """The layer Read Import Layers makes for a plate in `plate_colorspace`, over a known layer file."""
    rgba = np.zeros((6, 8, 4), np.float32)
    rgba[1:4, 2:6] = (0.4, 0.2, 0.1, 0.5)
    write_layers(tmp_path / "edit.0001.exr", rgba, (0, 0, 7, 5), {})
    knobs = layers.read_knobs(str(tmp_path / "edit.####.exr"), 1, 1, plate_colorspace, WORKING)
    read = nuke.nodes.Read()
    read["file"].fromUserText(f"{tmp_path}/edit.####.exr 1-1")  # reads the header: format, data window
    for name in ("raw", "colorspace", "premultiplied"):
        if name in knobs:
            read[name].setValue(knobs[name])
    return read, rgba


def render_rgb(nuke, node, path):
    write = nuke.nodes.Write(file=str(path), channels="rgba", raw=True)
    write.setInput(0, node)
    nuke.execute(write, 1, 1)
    written = exr_channels(str(path).replace("%04d", "0001"))
    return np.stack([written[c][1] for c in "RGBA"], -1).astype(np.float64)


def test_layer_read_in_the_working_space_gives_the_files_values(nuke, tmp_path):
    read, rgba = layer_read(nuke, tmp_path, WORKING)
    np.testing.assert_array_equal(render_rgb(nuke, read, tmp_path / "r.%04d.exr"), rgba.astype(np.float16))


def test_layer_read_in_another_colorspace_is_converted_into_the_working_space(nuke, tmp_path):
    read, rgba = layer_read(nuke, tmp_path, "Linear Rec.709 (sRGB)")
    got = render_rgb(nuke, read, tmp_path / "r.%04d.exr")
    expected = rgba[..., :3].astype(np.float16).astype(np.float64) @ REC709_TO_AP1.T
    np.testing.assert_allclose(got[..., :3], expected, atol=2e-3)
    np.testing.assert_array_equal(got[..., 3], rgba[..., 3])
