"""Promises of docs/output-format.md, docs/shot-spec.md and docs/farm.md that had no test: each test names the
sentence it checks."""

from __future__ import annotations

import json
import os
import shutil
import socket

import av
import numpy as np
import OpenEXR
import pytest

from bundles import FIRST, LAST, SMALL_HEIGHT, SMALL_WIDTH, base_spec, write_plates, write_spec
from images import pattern_image, rgba_channels, write_exr
import vera.manifest as manifest
from vera import exr, pipeline, plates, render
from vera.cli import main
from vera.shot import ShotSpec, validate

# ---------------------------------------------------------------------------------------- output-format.md


def test_attribute_ints_beyond_32_bits_are_text_and_int_triples_are_v3i(tmp_path):
    """"numpy int arrays of 2 or 3 as v2i/v3i; an int beyond 32 bits as its decimal text"."""
    path = tmp_path / "edit.0001.exr"
    exr.write_layers(path, np.zeros((2, 2, 4), np.float32), (0, 0, 1, 1),
                     {"frames": 2**40, "small": 7, "pair": np.array([1, 2]), "triple": np.array([3, 4, 5])})
    header = OpenEXR.File(str(path), header_only=True).header()
    assert header["vera/frames"] == str(2**40)
    assert header["vera/small"] == 7 and isinstance(header["vera/small"], int)
    assert [int(v) for v in header["vera/pair"]] == [1, 2] and len(header["vera/pair"]) == 2
    assert [int(v) for v in header["vera/triple"]] == [3, 4, 5] and len(header["vera/triple"]) == 3


@pytest.mark.parametrize("name, code", [("rle", OpenEXR.RLE_COMPRESSION), ("zstd", getattr(OpenEXR,
                                                                                           "ZSTD_COMPRESSION", None))])
def test_rle_and_zstd_compression(tmp_path, name, code):
    """"lossless choices only: none, rle, zips, zip, piz, zstd where the OpenEXR build has it"."""
    if code is None:
        pytest.skip("this OpenEXR build has no zstd")
    rgba = pattern_image(6, 8)
    rgba[..., :3] *= rgba[..., 3:4]
    path = tmp_path / "edit.0001.exr"
    exr.write_layers(path, rgba, (0, 0, 7, 5), {}, compression=name)
    assert OpenEXR.File(str(path), header_only=True).header()["compression"] == code
    np.testing.assert_array_equal(exr.read_layer(path).pixels, rgba.astype(np.float16).astype(np.float32))


def _frame_of_kind(path, kind):
    if kind == "folder":
        path.mkdir()
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        return server
    elif kind == "device":
        path.symlink_to(os.devnull)  # a character device, reached through the frame's name
    return None


@pytest.mark.parametrize("kind, words", [("folder", "is a folder"), ("socket", "is a socket"),
                                         ("device", "is a character device")])
def test_sockets_devices_and_folders_named_like_frames_are_refused(tmp_path, tiny_bundle, capsys, kind, words):
    """"a FIFO, socket, device or folder named like a frame is refused by its stat (exit 2, naming file and
    frame)"."""
    write_plates(tmp_path)
    frame = tmp_path / "plate.1006.exr"
    frame.unlink()
    held = _frame_of_kind(frame, kind)
    try:
        spec = write_spec(tmp_path, base_spec(tiny_bundle))
        assert main(["validate", str(spec)]) == 2
        err = capsys.readouterr().err
        assert "plate.1006.exr (frame 1006)" in err and words in err, err
    finally:
        if held is not None:
            held.close()


def test_a_stereo_view_without_alpha_gains_right_A(tmp_path):
    """comp: "A plate layer without alpha gains one (A, or right.A beside right.R)"."""
    left, right = pattern_image(8, 10, seed=1, channels=3), pattern_image(8, 10, seed=2, channels=3)
    channels = {**rgba_channels(left, names="RGB"), **rgba_channels(right, "right.", "RGB")}
    write_exr(tmp_path / "plate.0001.exr", channels, (0, 0, 9, 7), header_extra={"multiView": ["left", "right"]})
    edit = np.zeros((8, 10, 4), np.float32)
    edit[2:5, 3:7] = (0.2, 0.1, 0.1, 0.5)
    exr.write_layers(tmp_path / "edit.0001.exr", edit, (0, 0, 9, 7))
    assert main(["comp", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "edit.####.exr"),
                 "--view", "right", "--out", str(tmp_path / "comp.####.exr")]) == 0
    channels = OpenEXR.File(str(tmp_path / "comp.0001.exr"), separate_channels=True).channels()
    assert "right.A" in channels and "A" not in channels
    alpha = channels["right.A"].pixels.astype(np.float32)
    assert alpha[0, 0] == 1.0 and alpha[3, 4] == 1.0  # plate alpha 1 (auto alpha); over keeps it 1
    assert channels["R"].pixels.tobytes() == left[..., 0].astype(np.float16).tobytes()  # the left view untouched


def test_comp_rewrites_a_tiled_plate_as_scanline(tmp_path):
    """comp: "Every part is written as scanline with --compression" (plates may be tiled)."""
    plate = pattern_image(20, 24)
    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize = 8, 8
    write_exr(tmp_path / "plate.0001.exr", rgba_channels(plate), (0, 0, 23, 19),
              header_extra={"type": OpenEXR.tiledimage, "tiles": tiles})
    assert OpenEXR.File(str(tmp_path / "plate.0001.exr"), header_only=True).header()["type"] == OpenEXR.tiledimage
    exr.write_layers(tmp_path / "edit.0001.exr", np.zeros((20, 24, 4), np.float32), (0, 0, 23, 19))
    assert main(["comp", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "edit.####.exr"),
                 "--out", str(tmp_path / "comp.####.exr"), "--compression", "piz"]) == 0
    out = OpenEXR.File(str(tmp_path / "comp.0001.exr"), separate_channels=True)
    assert out.header()["type"] == OpenEXR.scanlineimage and out.header()["compression"] == OpenEXR.PIZ_COMPRESSION
    assert out.channels()["G"].pixels.tobytes() == plate[..., 1].astype(np.float16).tobytes()  # empty edit


def test_comp_refuses_a_plate_with_subsampled_channels(tmp_path, capsys):
    """comp: "Channels stored subsampled (luminance/chroma files) cannot be copied and are refused (exit 2)"."""
    full = {c: OpenEXR.Channel(np.full((8, 8), 0.5, np.float16)) for c in "RGBA"}
    chroma = OpenEXR.Channel(2, 2)
    chroma.pixels = np.full((8, 8), 0.25, np.float16)  # written every 2nd pixel each way
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {**full, "extra.BY": chroma}).write(str(tmp_path / "plate.0001.exr"))
    assert OpenEXR.File(str(tmp_path / "plate.0001.exr")).channels()["extra.BY"].xSampling == 2
    exr.write_layers(tmp_path / "edit.0001.exr", np.zeros((8, 8, 4), np.float32), (0, 0, 7, 7))
    capsys.readouterr()
    assert main(["comp", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "edit.####.exr"),
                 "--out", str(tmp_path / "comp.####.exr")]) == 2
    err = capsys.readouterr().err
    assert "plate.0001.exr" in err and "subsampled" in err
    assert not (tmp_path / "comp.0001.exr").exists()


def test_a_16_bit_movie_keeps_its_precision_and_comps_to_float(tmp_path):
    """"MOV/MP4 through PyAV (8-bit as rgb24, deeper as rgb48)"; comp's channels are "float for ... 8/10/16-bit
    files and movies, whose values half cannot hold exactly"."""
    ramp = np.linspace(0, 65535, 64 * 16).reshape(16, 64).astype(np.uint16)  # 1024 levels: more than 8 bits hold
    movie = tmp_path / "clip.mov"
    with av.open(str(movie), "w") as container:
        stream = container.add_stream("png", rate=24)  # PNG in MOV: lossless 16-bit RGB
        stream.width, stream.height, stream.pix_fmt = 64, 16, "rgb48be"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.stack([ramp] * 3, -1), format="rgb48le").reformat(format="rgb48be")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    pixels = plates.open_sequence(str(movie)).read(1).pixels
    np.testing.assert_allclose(pixels[..., 0], ramp / 65535.0, atol=1e-6)
    assert len(np.unique(pixels[..., 0])) == 1024
    for f in (1, 2):
        exr.write_layers(tmp_path / f"edit.{f:04d}.exr", np.zeros((16, 64, 4), np.float32), (0, 0, 63, 15))
    assert main(["comp", "--plate", str(movie), "--edit", str(tmp_path / "edit.####.exr"),
                 "--out", str(tmp_path / "comp.####.exr")]) == 0
    comp = OpenEXR.File(str(tmp_path / "comp.0001.exr"), separate_channels=True).channels()
    assert comp["R"].pixels.dtype == np.float32
    np.testing.assert_allclose(comp["R"].pixels, ramp / 65535.0, atol=1e-6)


# ---------------------------------------------------------------------------------------- shot-spec.md


def _problems(tmp_path, tiny_bundle, **changes):
    write_plates(tmp_path)
    spec = base_spec(tiny_bundle)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            spec[section] = dict(spec.get(section) or {}, **{field: value})
        else:
            spec[section] = value
    return "\n".join(validate(spec, base_dir=tmp_path))


def test_negative_guidance_is_refused(tmp_path, tiny_bundle):
    assert "sampler.guidance" in _problems(tmp_path, tiny_bundle, sampler__guidance=-1.0)
    assert "sampler.guidance" not in _problems(tmp_path, tiny_bundle, sampler__guidance=3.0)


@pytest.mark.parametrize("spec_name, output", [("manifest.json", {"dir": ".", "name": "edit"}),
                                                ("shot.1001.exr", {"dir": ".", "name": "shot", "padding": 4})])
def test_outputs_colliding_with_the_spec_file_are_refused(tmp_path, tiny_bundle, capsys, spec_name, output):
    """"refuses, exit 2, a spec whose outputs would write over its own inputs: a final frame ... or
    manifest.json that is ... the spec itself"."""
    write_plates(tmp_path)
    path = write_spec(tmp_path, dict(base_spec(tiny_bundle), output=output), name=spec_name)
    before = path.read_bytes()
    assert main(["run", str(path), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    # refused as an output over its input (manifest.json is also refused as a damaged manifest, a later check)
    assert f"{spec_name}: the output would write over this input" in err, err
    assert main(["run", str(path), "--force", "--progress", "none"]) == 2  # --force does not set the spec aside
    assert path.read_bytes() == before


@pytest.mark.parametrize("channel, plane, ok", [("alpha", "A", True), ("red", "R", True), ("green", "G", True),
                                                 ("blue", "B", True), ("G", "G", True), ("purple", None, False)])
def test_long_mask_channel_names(tmp_path, tiny_bundle, channel, plane, ok):
    """shot-spec.md: mask.channel is R, G, B, A "(or red... alpha)": a long name is accepted and reads the plane of
    its short name (each plane of the mask holds its own value)."""
    write_plates(tmp_path)
    values = {"R": 0.125, "G": 0.25, "B": 0.375, "A": 0.5}  # exact in half
    for frame in range(FIRST, LAST + 1):
        write_exr(tmp_path / f"mask.{frame}.exr",
                  {c: np.full((SMALL_HEIGHT, SMALL_WIDTH), v, np.float32) for c, v in values.items()},
                  (0, 0, SMALL_WIDTH - 1, SMALL_HEIGHT - 1))
    spec = dict(base_spec(tiny_bundle), mask={"path": "mask.####.exr", "channel": channel})
    problems = "\n".join(validate(spec, base_dir=tmp_path))
    assert (problems == "") == ok, problems
    if not ok:
        assert "mask.channel" in problems
        return
    shot = ShotSpec.from_dict(spec, base_dir=str(tmp_path))
    garbage = shot.open_mask(FIRST, FIRST).read(FIRST).pixels[..., pipeline._mask_channel(shot)]
    assert np.all(garbage == values[plane]), (channel, np.unique(garbage))


# ---------------------------------------------------------------------------------------- farm.md


def test_vera_debug_turns_an_internal_error_into_exit_1_with_a_traceback(tmp_path, tiny_bundle, monkeypatch,
                                                                        capsys):
    """farm.md: with VERA_DEBUG=1 an unexpected error is exit 1 with its traceback (the farm retries it)."""
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))

    def boom(*args, **kwargs):
        raise RuntimeError("internal boom")

    monkeypatch.setattr(render, "_render_frames", boom)
    monkeypatch.setenv("VERA_DEBUG", "1")
    assert main(["run", str(spec), "--progress", "none"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal boom" in err


# ---------------------------------------------------------------------------------------- shot-spec.md: sameness


def test_a_moved_or_renamed_bundle_is_the_same_model_and_one_changed_in_place_is_refused(tmp_path, tiny_bundle, fake,
                                                                                          capsys):
    """"the model bundle's content identity in place of its path (a bundle moved to another parent folder or
    renamed is the same model ...)"; a re-run whose fingerprint differs is refused (exit 2) unless --force."""
    write_plates(tmp_path)
    shutil.copytree(tiny_bundle, tmp_path / "old_models" / "tiny")
    spec = write_spec(tmp_path, base_spec("old_models/tiny"))
    assert main(["run", str(spec), "--progress", "none"]) == 0
    rendered = len(fake.calls)
    for folder in ("new_models/tiny", "new_models/tiny_v2"):  # moved to another parent, then renamed
        (tmp_path / folder).parent.mkdir(exist_ok=True)
        current = json.loads(spec.read_text())["model"]["bundle"]
        (tmp_path / current).rename(tmp_path / folder)
        write_spec(tmp_path, base_spec(folder))
        capsys.readouterr()
        assert main(["run", str(spec), "--progress", "none"]) == 0, capsys.readouterr().err
        assert len(fake.calls) == rendered, folder  # the same model: nothing rendered again

    weights = next((tmp_path / "new_models" / "tiny_v2").glob("transformer*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight, in place
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["run", str(spec), "--progress", "none"]) == 2
    assert "--force" in capsys.readouterr().err
    assert len(fake.calls) == rendered


def test_input_hashes_are_cached_by_path_size_mtime_and_inode(tmp_path, tiny_bundle, fake, monkeypatch):
    """"A local cache (OUT/.vera/input_hashes.json ...) means a task hashes only inputs it has not seen
    unchanged"."""
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    hashed = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    assert main(["run", str(spec), "--window", "0", "--progress", "none"]) == 0
    frames = LAST - FIRST + 1
    assert sorted(hashed) == sorted(f"plate.{f}.exr" for f in range(FIRST, LAST + 1))
    cache = json.loads((tmp_path / "out" / ".vera" / "input_hashes.json").read_text())
    assert len(cache) == frames
    hashed.clear()
    assert main(["run", str(spec), "--window", "1", "--progress", "none"]) == 0
    assert hashed == []  # every plate seen unchanged: none hashed again
    touched = tmp_path / f"plate.{FIRST + 2}.exr"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert main(["run", str(spec), "--window", "1", "--progress", "none"]) == 0
    assert hashed == [touched.name]  # only the file whose mtime moved
