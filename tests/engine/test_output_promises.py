"""What the written layers promise in docs/output-format.md, checked on real renders, plus the plates we must
read: alpha below the threshold never survives a cross-fade, resampling invents no negative colour, header
attributes have the documented types (read back with OpenImageIO), `comp` keeps every channel of the plate that
the edit does not replace, and a multi-view (stereo) EXR plate renders one view."""

import json
from pathlib import Path

import numpy as np
import OpenEXR
import OpenImageIO as oiio
import pytest

import vera.render as render
from vera.layout import load_shot
from vera import plates
from vera.cli import main
from vera.errors import BadInput
from vera.exr import read_layer
from vera.windows import window_seed

from bundles import FIRST, LAST, SMALL_HEIGHT, SMALL_WIDTH, base_spec, write_plate, write_spec
from images import pattern_image, rgba_channels, write_exr

THRESHOLD = 1 / 255
OVERLAP = range(1005, 1010)  # windows 1001-1009 and 1005-1013 of the small shot
NEGATIVE = "blurry, low quality"


def _oiio_attributes(path) -> dict:
    """name -> (OIIO type name, value) of a file's header, as OpenImageIO reads it."""
    inp = oiio.ImageInput.open(str(path))
    try:
        return {a.name: (str(a.type), a.value) for a in inp.spec().extra_attribs}
    finally:
        inp.close()


@pytest.fixture(scope="module")
def windowed_render(tmp_path_factory, tiny_bundle):
    """The small shot (13 frames, windows of 9 overlapping) on a plate 4x the model's size, rendered by the
    real pipeline with the tiny random model: resampling and cross-fades both happen."""
    folder = tmp_path_factory.mktemp("windowed")
    write_plate(folder, FIRST, LAST, 4 * SMALL_WIDTH, 4 * SMALL_HEIGHT, channels="RGB")
    spec = dict(base_spec(tiny_bundle), negative_prompt=NEGATIVE)
    shot = write_spec(folder, spec)
    assert main(["run", str(shot), "--progress", "none"]) == 0
    return folder


def test_no_alpha_below_the_threshold_after_a_windowed_render(windowed_render):
    for frame in range(FIRST, LAST + 1):
        alpha = read_layer(windowed_render / "out" / f"edit.{frame}.exr").pixels[..., 3]
        faint = (alpha > 0) & (alpha < np.float32(np.float16(THRESHOLD)))
        assert not faint.any(), f"frame {frame}: {faint.sum()} pixels with 0 < alpha < threshold"
    assert any(read_layer(windowed_render / "out" / f"edit.{f}.exr").pixels[..., 3].any() for f in OVERLAP)


def test_no_negative_colour_where_the_plate_has_none(windowed_render):
    for frame in range(FIRST, LAST + 1):
        plate = read_layer(windowed_render / f"plate.{frame:04d}.exr").pixels
        assert (plate[..., :3] >= 0).all()  # the plate holds no negative value...
        rgba = read_layer(windowed_render / "out" / f"edit.{frame}.exr").pixels
        assert (rgba[..., :3] >= 0).all(), f"frame {frame}: min RGB {rgba[..., :3].min()}"  # ...nor may the edit
        assert not rgba[rgba[..., 3] == 0][:, :3].any()  # premultiplied: nothing where alpha is 0


def test_header_attribute_types_as_documented(windowed_render):
    """vera/seed and vera/window are ints (an int pair, vector2i, on a cross-faded frame), vera/source the
    plate file of that very frame: what OpenImageIO, and so any pipeline tool built on it, reads back."""
    seeds = [window_seed(7, i) for i in (0, 1)]
    for frame, windows in ((1002, [0]), (1007, [0, 1]), (1012, [1])):
        attrs = _oiio_attributes(windowed_render / "out" / f"edit.{frame}.exr")
        if len(windows) == 1:
            assert attrs["vera/seed"] == ("int", seeds[windows[0]])
            assert attrs["vera/window"] == ("int", windows[0])
        else:
            assert attrs["vera/seed"] == ("vector2i", tuple(seeds))
            assert attrs["vera/window"] == ("vector2i", (0, 1))
        assert attrs["vera/source"] == ("string", str(windowed_render / f"plate.{frame:04d}.exr"))
        assert attrs["vera/prompt"] == ("string", "add a red ball")


def test_run_and_assemble_attribute_types(windowed_render):
    """output-format.md: run/assemble also write vera/negative_prompt, task, sampler, model_resolution, shot,
    settings (strings), vera/steps (int), vera/guidance, vera/shift (float)."""
    for frame in (FIRST, 1007, LAST):
        attrs = _oiio_attributes(windowed_render / "out" / f"edit.{frame}.exr")
        for key in ("negative_prompt", "task", "sampler", "model_resolution", "shot", "settings"):
            assert attrs[f"vera/{key}"][0] == "string", (key, attrs[f"vera/{key}"])
        assert attrs["vera/negative_prompt"][1] == NEGATIVE
        assert attrs["vera/steps"][0] == "int"
        assert attrs["vera/guidance"][0] == "float" and attrs["vera/shift"][0] == "float"
        assert attrs["vera/task"][1] == "object_addition" and attrs["vera/steps"][1] == 2


def test_window_seeds_fit_an_exr_int():
    assert all(0 <= window_seed(2**63 - 1, i) < 2**31 for i in range(4))
    assert window_seed(7, 1) == 7 * 1_000_003 + 7919  # small seeds keep the seeds they always had


# ------------------------------------------------------------------------------------ the blend, exactly

class _TwoWindows:
    """Stands in for vera.pipeline.render_frames: window 0 draws a faint patch (alpha 0.01, above the
    threshold) that window 1 does not draw, both premultiplied; so the cross-fade fades it below the threshold."""

    def __call__(self, bundle, spec, frames, seed, progress):
        out = {}
        for frame in frames:
            rgba = np.zeros((SMALL_HEIGHT, SMALL_WIDTH, 4), np.float32)
            if frames[0] == FIRST:
                rgba[2:6, 2:6] = (0.005, 0.004, 0.003, 0.01)
            rgba[10:14, 10:14] = (0.5, 0.4, 0.3, 1.0)  # both windows: fully opaque
            out[frame] = (rgba, rgba[..., 3].copy())
        return out


def test_cross_fade_reapplies_the_threshold(tmp_path, tiny_bundle, monkeypatch):
    from bundles import write_plates

    write_plates(tmp_path)
    monkeypatch.setattr(render, "_render_frames", _TwoWindows())
    render.run(load_shot(write_spec(tmp_path, base_spec(tiny_bundle))), progress="none")
    for frame in range(FIRST, LAST + 1):
        rgba = read_layer(tmp_path / "out" / f"edit.{frame}.exr").pixels
        alpha = rgba[..., 3]
        # 0.01 * weight of window 0: 5/6 .. 1/6 in the overlap, so 1006-1009 fall below 1/255 = 0.0039...
        expected_faint = 0.01 * (1 - (frame - 1004) / 6) if frame in OVERLAP else 0.01 * (frame < 1005)
        patch = alpha[2:6, 2:6]
        if expected_faint >= THRESHOLD:
            assert patch == pytest.approx(expected_faint, rel=1e-3), frame
        else:
            assert not patch.any() and not rgba[2:6, 2:6, :3].any(), frame  # alpha and its colour gone
        assert (alpha[10:14, 10:14] == 1).all()


# ------------------------------------------------------------------------------------ comp keeps the plate

def _multi_layer_plate(folder, frame):
    """A single-part plate with rgba, Z, a disparity layer and a multiView attribute (left default, right
    channels as right.*), half and float channels mixed; returns {channel: array as stored}."""
    img = pattern_image(24, 40, seed=frame)
    right = pattern_image(24, 40, seed=frame + 50)
    z = np.linspace(1, 100, 24 * 40, dtype=np.float32).reshape(24, 40)
    z[0, 0] = -0.0
    channels = {**rgba_channels(img), **rgba_channels(right, "right."), "Z": z,
                "disparity.x": img[..., 0] - 0.5, "disparity.y": img[..., 1] - 0.5}
    path = Path(folder) / f"plate.{frame:04d}.exr"
    write_exr(path, channels, (0, 0, 39, 23), header_extra={"multiView": ["left", "right"], "owner": "studio"})
    stored = OpenEXR.File(str(path), separate_channels=True)
    return {k: v.pixels for k, v in stored.channels().items()}


def _edit(folder, frame, window=(0, 0, 39, 23)):
    from vera.exr import write_layers

    w, h = window[2] - window[0] + 1, window[3] - window[1] + 1
    rgba = np.zeros((h, w, 4), np.float32)
    rgba[5:15, 10:30] = (0.2, 0.3, 0.1, 0.5)
    write_layers(Path(folder) / f"edit.{frame:04d}.exr", rgba, window)
    return rgba


def test_comp_keeps_every_plate_channel_the_edit_does_not_replace(tmp_path, capsys):
    stored = {f: _multi_layer_plate(tmp_path, f) for f in (1, 2)}
    for f in (1, 2):
        _edit(tmp_path, f)
    assert main(["comp", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "edit.####.exr"),
                 "--out", str(tmp_path / "comp.####.exr")]) == 0
    for f in (1, 2):
        comp = OpenEXR.File(str(tmp_path / f"comp.{f:04d}.exr"), separate_channels=True)
        channels = {k: v.pixels for k, v in comp.channels().items()}
        assert set(channels) == set(stored[f])
        for name in stored[f]:
            if name in ("R", "G", "B", "A"):
                continue
            assert channels[name].dtype == stored[f][name].dtype, name
            assert channels[name].tobytes() == stored[f][name].tobytes(), name  # bit for bit (-0.0 too)
        touched = np.zeros((24, 40), bool)
        touched[5:15, 10:30] = True
        plate_r = stored[f]["R"].astype(np.float32)
        assert channels["R"][~touched].tobytes() == stored[f]["R"][~touched].tobytes()
        edit_r, edit_a = np.float32(np.float16(0.2)), np.float32(np.float16(0.5))  # as the edit file holds them
        expected = (edit_r + plate_r[touched] * (np.float32(1) - edit_a)).astype(np.float16)
        assert np.array_equal(channels["R"][touched], expected)
        header = comp.header()
        assert list(header["multiView"]) == ["left", "right"] and header["owner"] == "studio"
        assert header["vera/plate"].endswith(f"plate.{f:04d}.exr")


def test_comp_of_a_multi_part_plate_keeps_its_other_parts(tmp_path):
    """The chosen view's part gets the composite; the other view's part is copied as it was."""
    left, right = pattern_image(24, 40, seed=1), pattern_image(24, 40, seed=2)
    depth = np.linspace(0, 1, 24 * 40, dtype=np.float32).reshape(24, 40)
    _write_stereo_multipart(tmp_path / "plate.0001.exr", left, right, depth)
    _edit(tmp_path, 1)
    assert main(["comp", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "edit.####.exr"),
                 "--out", str(tmp_path / "comp.####.exr"), "--view", "right"]) == 0
    plate = OpenEXR.File(str(tmp_path / "plate.0001.exr"), separate_channels=True)
    comp = OpenEXR.File(str(tmp_path / "comp.0001.exr"), separate_channels=True)
    assert [p.name() for p in comp.parts] == [p.name() for p in plate.parts]
    for p_in, p_out in zip(plate.parts, comp.parts):
        assert p_out.header.get("view") == p_in.header.get("view")
        assert set(p_out.channels) == set(p_in.channels)
        if p_in.header.get("view") != "right" or "Z" in p_in.channels:
            for name, ch in p_in.channels.items():
                assert p_out.channels[name].pixels.tobytes() == ch.pixels.tobytes(), (p_in.name(), name)
    right_out = comp.parts[1].channels["G"].pixels
    assert right_out[0, 0] == plate.parts[1].channels["G"].pixels[0, 0]
    assert right_out[6, 12] != plate.parts[1].channels["G"].pixels[6, 12]


# ------------------------------------------------------------------------------------ stereo plates

def _write_stereo_multipart(path, left, right, depth):
    """Multi-part stereo EXR as OpenEXR's Beachball multipart files are laid out: a part per view and layer,
    each with a `view` attribute (left, the first part's view, is the default), plus a multiView attribute."""
    def header(view):
        return {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, "view": view,
                "multiView": ["left", "right"],
                "displayWindow": (np.array([0, 0], np.int32), np.array([39, 23], np.int32)),
                "dataWindow": (np.array([0, 0], np.int32), np.array([39, 23], np.int32))}

    half = lambda img: {k: np.ascontiguousarray(v, np.float16) for k, v in rgba_channels(img).items()}  # noqa
    OpenEXR.File([OpenEXR.Part(header("left"), half(left), "rgba_left"),
                  OpenEXR.Part(header("right"), half(right), "rgba_right"),
                  OpenEXR.Part(header("left"), {"Z": depth}, "depth_left"),
                  OpenEXR.Part(header("right"), {"Z": depth + 1}, "depth_right")]).write(str(path))


def _write_stereo_single_part(path, left, right):
    """Single-part multi-view: default view (left) unprefixed, the right view as right.R..."""
    channels = {**rgba_channels(left), **rgba_channels(right, "right.")}
    write_exr(path, channels, (0, 0, 39, 23), header_extra={"multiView": ["left", "right"]})


@pytest.mark.parametrize("layout", ["multipart", "singlepart"])
def test_stereo_plate_reads_the_default_view_or_the_named_one(tmp_path, layout):
    left, right = pattern_image(24, 40, seed=1), pattern_image(24, 40, seed=2)
    path = tmp_path / "plate.0001.exr"
    if layout == "multipart":
        _write_stereo_multipart(path, left, right, np.zeros((24, 40), np.float32))
    else:
        _write_stereo_single_part(path, left, right)
    half = lambda img: img.astype(np.float16).astype(np.float32)  # noqa: E731
    seq = plates.open_sequence(str(path))
    assert np.array_equal(seq.read(1).pixels, half(left))  # the file's default view
    seq = plates.open_sequence(str(path), view="right")
    assert np.array_equal(seq.read(1).pixels, half(right))
    with pytest.raises(BadInput) as info:
        plates.open_sequence(str(path), view="centre")
    assert "no view 'centre'" in str(info.value) and "left, right" in str(info.value)


def test_a_view_on_a_plate_without_views_is_refused(tmp_path):
    write_exr(tmp_path / "plate.0001.exr", rgba_channels(pattern_image(8, 8)), (0, 0, 7, 7))
    with pytest.raises(BadInput) as info:
        plates.open_sequence(str(tmp_path / "plate.0001.exr"), view="left")
    assert "not a multi-view EXR" in str(info.value)


def test_stereo_plate_renders_one_view_with_untouched_pixels_exact(tmp_path, tiny_bundle, capsys):
    """A Beachball-style multi-part stereo plate through `vera-render run` (the spec names the right view),
    then `qc` of that view: every untouched pixel is the plate's."""
    from vera.shot import validate

    for frame in range(FIRST, FIRST + 5):
        _write_stereo_multipart(tmp_path / f"plate.{frame:04d}.exr", _stereo_frame(frame, 0),
                                _stereo_frame(frame, 1), np.zeros((24, 40), np.float32))
    spec = base_spec(tiny_bundle, frames=5, overlap=0)
    spec["plate"].update(last=FIRST + 4, view="left ")
    assert any("plate.view" in p for p in validate(spec, base_dir=tmp_path))
    spec["plate"]["view"] = "right"
    assert validate(spec, base_dir=tmp_path) == []
    assert main(["run", str(write_spec(tmp_path, spec)), "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["qc", "--plate", str(tmp_path / "plate.####.exr"), "--view", "right",
                 "--edit", str(tmp_path / "out" / "edit.####.exr"), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["passed"] and report["summary"]["max_untouched_diff"] == 0
    assert report["summary"]["touched_max"] > 0


def _stereo_frame(frame, view):
    return pattern_image(24, 40, seed=10 * frame + view)


def test_resampling_limit_keeps_what_the_edit_holds_and_drops_overshoot():
    """A hard edge between black and a superwhite (4.0) in the model's edit, enlarged 5x: bicubic alone
    undershoots below 0 and overshoots above 4 beside the edge; the limited resampling holds neither, keeps
    the 4.0 and the 0 of the flat areas exactly, and the rebuilt layer has no negative colour."""
    import torch

    from vera.rebuild import Fit, _sample, _sample_without_overshoot, rebuild_layer

    edit = np.zeros((16, 16, 3), np.float32)
    edit[:, 8:] = 4.0
    planar = torch.from_numpy(np.ascontiguousarray(edit.transpose(2, 0, 1)))
    plain = _sample(planar, 80, 80, (0, 80, 0, 80), "bicubic")
    assert plain.min() < 0 and plain.max() > 4  # what the resampler invents
    limited = _sample_without_overshoot(planar, 80, 80, (0, 80, 0, 80)).numpy()
    assert limited.min() == 0 and limited.max() == 4.0
    assert (limited[:, :, :30] == 0).all() and (limited[:, :, 50:] == 4.0).all()
    np.testing.assert_allclose(limited, np.clip(plain.numpy(), 0, 4), rtol=1e-5)  # only the overshoot changed
    rgba = rebuild_layer(edit, np.ones((16, 16), np.float32), np.full((80, 80, 3), 0.5, np.float32),
                         Fit.compute(80, 80, 16, 16))
    assert rgba[..., :3].min() == 0 and rgba[..., :3].max() > 3.9
