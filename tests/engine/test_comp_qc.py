"""comp and qc, end to end through the CLI: agreement with oiiotool, bit-exact untouched pixels after
rebuild + write + comp, QC pass/fail and its report, and every bad input as one line with exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from vera import exr
from vera.cli import main
from vera.errors import EXIT_QC_FAILED
from vera.rebuild import Fit, rebuild_layer

from images import pattern_image, rgba_channels, write_exr, write_exr_sequence

OIIOTOOL = str(Path(sys.executable).with_name("oiiotool"))
H, W = 24, 40
DISPLAY = (0, 0, W - 1, H - 1)
FRAMES = (1001, 1002)

LAYOUTS = {
    "half": dict(pixel_type="half", data_window=None),
    "float-overscan": dict(pixel_type="float", data_window=(-3, -2, W + 2, H + 1)),
    "half-bbox": dict(pixel_type="half", data_window=(5, 4, 30, 19)),
}


def _edit_layers(folder, plate_pattern, frames=FRAMES, seed=0, threshold=1 / 255):
    """The post-model step for real: model-size output -> rebuild at plate size -> write_layers."""
    from vera import plates

    seq = plates.open_sequence(plate_pattern)
    fit = Fit.compute(seq.width, seq.height, 20, 16)
    rng = np.random.default_rng(seed)
    for f in frames:
        plate = seq.read(f)
        rgb = rng.random((fit.model_h, fit.model_w, 3)).astype(np.float32)
        alpha = np.zeros((fit.model_h, fit.model_w), np.float32)
        alpha[5:11, 4:12] = rng.random((6, 8)).astype(np.float32)  # a soft blob: partly 0, partly touched
        rgba = rebuild_layer(rgb, alpha, plate.pixels[..., :3], fit, threshold=threshold)
        exr.write_layers(Path(folder) / f"edit.{f}.exr", rgba, plate.display_window,
                         {"prompt": "test", "seed": seed, "source": plate.path})
    return str(Path(folder) / "edit.####.exr")


def _raw(path):
    """Channels as stored (numpy arrays in the file's own dtype) and the data window."""
    f = OpenEXR.File(str(path), separate_channels=True)
    return {k: v.pixels for k, v in f.channels().items()}, exr._window_from_header(f.header()["dataWindow"])


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_comp_agrees_with_oiiotool_and_keeps_untouched_pixels_bit_exact(tmp_path, capsys, layout):
    plate = write_exr_sequence(tmp_path, "plate", FRAMES, H, W, **LAYOUTS[layout])
    edit = _edit_layers(tmp_path, plate)
    code, _, err = _run(capsys, "comp", "--plate", plate, "--edit", edit, "--out", str(tmp_path / "comp.####.exr"),
                        "--progress", "none")
    assert code == 0, err
    for f in FRAMES:
        ours, window = _raw(tmp_path / f"comp.{f}.exr")
        reference = tmp_path / f"oiio.{f}.exr"
        subprocess.run([OIIOTOOL, str(tmp_path / f"edit.{f}.exr"), "--ch", "R,G,B,A", str(tmp_path / f"plate.{f}.exr"),
                        "--over", "-d", "float", "-o", str(reference)], check=True, capture_output=True)
        theirs, their_window = _raw(reference)
        assert window == their_window
        plate_raw, plate_window = _raw(tmp_path / f"plate.{f}.exr")
        assert ours["R"].dtype == plate_raw["R"].dtype  # the plate's pixel type
        for c in "RGBA":
            np.testing.assert_allclose(ours[c].astype(np.float32), theirs[c], rtol=2 ** -10, atol=2 ** -14)
        # Where the edit's alpha is 0 the composite holds the plate's stored values, bit for bit.
        edit_raw, _ = _raw(tmp_path / f"edit.{f}.exr")
        alpha = exr.crop_to_window(edit_raw["A"].astype(np.float32), DISPLAY, window)
        plate_in_window = {c: exr.crop_to_window(plate_raw[c], plate_window, window) for c in "RGBA"}
        untouched = alpha == 0
        assert untouched.mean() > 0.3 and (~untouched).any()
        bits = np.uint16 if ours["R"].dtype == np.float16 else np.uint32
        for c in "RGBA":
            np.testing.assert_array_equal(ours[c][untouched].view(bits), plate_in_window[c][untouched].view(bits))


def test_plate_without_alpha_composites_as_opaque(tmp_path, capsys):
    plate = write_exr_sequence(tmp_path, "plate", FRAMES, H, W, channels=3)
    edit = _edit_layers(tmp_path, plate)
    assert _run(capsys, "comp", "--plate", plate, "--edit", edit, "--out", str(tmp_path / "c.####.exr"))[0] == 0
    f = FRAMES[0]
    reference = tmp_path / "oiio.exr"
    # oiiotool's --over needs alpha on both inputs: give the plate the alpha 1 that vera reads it with.
    subprocess.run([OIIOTOOL, str(tmp_path / f"edit.{f}.exr"), "--ch", "R,G,B,A", str(tmp_path / f"plate.{f}.exr"),
                    "--ch", "R,G,B,A=1.0", "--over", "-d", "float", "-o", str(reference)], check=True,
                   capture_output=True)
    ours, theirs = _raw(tmp_path / f"c.{f}.exr")[0], _raw(reference)[0]
    for c in "RGBA":
        np.testing.assert_allclose(ours[c].astype(np.float32), theirs[c], rtol=2 ** -10, atol=2 ** -14)
    assert (ours["A"] == 1).all()


def test_qc_passes_and_reports_touched_fraction(tmp_path, capsys):
    plate = write_exr_sequence(tmp_path, "plate", FRAMES, H, W)
    edit = _edit_layers(tmp_path, plate)
    report_path = tmp_path / "qc.json"
    code, out, err = _run(capsys, "qc", "--plate", plate, "--edit", edit, "--json", str(report_path))
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["summary"]["passed"] and report["summary"]["max_untouched_diff"] == 0
    for entry in report["frames"]:
        alpha = exr.read_layer(tmp_path / f"edit.{entry['frame']}.exr").pixels[..., 3]
        assert entry["touched"] == pytest.approx((alpha > 0).mean())
        assert 0 < entry["touched"] < 1 and entry["max_untouched_diff"] == 0
    assert "passed" in out and "frame 1001" in out
    # --json - : the report on stdout, parseable, nothing else there.
    code, out, err = _run(capsys, "qc", "--plate", plate, "--edit", edit, "--json", "-", "--progress", "log")
    assert code == 0 and json.loads(out)["summary"]["frames"] == 2 and "qc:" in err


def test_qc_fails_when_an_untouched_pixel_would_change(tmp_path, capsys):
    plate = write_exr_sequence(tmp_path, "plate", FRAMES, H, W)
    good = np.zeros((H, W, 4), np.float32)
    good[2:5, 2:5] = 0.5
    bad = good.copy()
    bad[10, 20, 0] = 0.25  # colour where alpha is 0: not premultiplied, it would brighten the plate
    exr.write_layers(tmp_path / "edit.1001.exr", good, DISPLAY, {})
    exr.write_layers(tmp_path / "edit.1002.exr", bad, DISPLAY, {})
    code, out, err = _run(capsys, "qc", "--plate", plate, "--edit", str(tmp_path / "edit.####.exr"),
                          "--json", "-")
    assert code == EXIT_QC_FAILED
    report = json.loads(out)
    by_frame = {f["frame"]: f for f in report["frames"]}
    assert by_frame[1001]["passed"] and not by_frame[1002]["passed"]
    assert by_frame[1002]["max_untouched_diff"] == pytest.approx(0.25) and by_frame[1002]["changed_untouched"] == 1
    assert report["summary"]["failed_frames"] == "1002"


def test_qc_checks_an_existing_composite(tmp_path, capsys):
    plate = write_exr_sequence(tmp_path, "plate", FRAMES, H, W)
    edit = _edit_layers(tmp_path, plate)
    comp = str(tmp_path / "comp.####.exr")
    assert _run(capsys, "comp", "--plate", plate, "--edit", edit, "--out", comp)[0] == 0
    assert _run(capsys, "qc", "--plate", plate, "--edit", edit, "--comp", comp)[0] == 0
    # A composite that graded the whole frame (e.g. a wrong colour space on a Write) fails.
    layer = exr.read_layer(tmp_path / "comp.1002.exr")
    exr.write_exr(tmp_path / "comp.1002.exr", {c: layer.pixels[..., i] * 1.01 for i, c in enumerate("RGBA")},
                  layer.display_window, layer.data_window)
    code, out, _ = _run(capsys, "qc", "--plate", plate, "--edit", edit, "--comp", comp)
    assert code == EXIT_QC_FAILED and "FAILED" in out


def test_help_documents_the_qc_exit_code(capsys):
    with pytest.raises(SystemExit):
        main(["qc", "--help"])
    assert "4 QC failed" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- bad input

def _bad_input(capsys, argv, *needles):
    """Exit code 2 and one line on stderr naming the file and frame (progress lines off: they are not errors)."""
    code, out, err = _run(capsys, *argv, "--progress", "none")
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def shot(tmp_path):
    plate = write_exr_sequence(tmp_path, "plate", range(1001, 1005), H, W)
    edit = _edit_layers(tmp_path, plate, frames=range(1001, 1005))
    return tmp_path, plate, edit


def test_cli_missing_frames(shot, capsys):
    tmp_path, plate, edit = shot
    for f in (1002, 1003):
        (tmp_path / f"edit.{f}.exr").unlink()
    _bad_input(capsys, ["qc", "--plate", plate, "--edit", edit], "edit.####.exr", "missing frames 1002-1003")
    _bad_input(capsys, ["comp", "--plate", plate, "--edit", edit, "--out", str(tmp_path / "c.####.exr"),
                        "--first", "1001", "--last", "1009"], "plate.####.exr", "missing frames 1005-1009")


def test_cli_truncated_plate(shot, capsys):
    tmp_path, plate, edit = shot
    path = tmp_path / "plate.1003.exr"
    path.write_bytes(path.read_bytes()[:-100])
    _bad_input(capsys, ["comp", "--plate", plate, "--edit", edit, "--out", str(tmp_path / "c.####.exr")],
               "plate.1003.exr", "frame 1003", "truncated")


def test_cli_corrupt_edit(shot, capsys):
    tmp_path, plate, edit = shot
    (tmp_path / "edit.1004.exr").write_bytes(b"\x76\x2f\x31\x01garbage")
    _bad_input(capsys, ["qc", "--plate", plate, "--edit", edit], "edit.1004.exr", "frame 1004", "corrupt")


def test_cli_size_mismatch(shot, capsys):
    tmp_path, plate, edit = shot
    write_exr_sequence(tmp_path, "plate", [1002], H + 2, W)
    _bad_input(capsys, ["qc", "--plate", plate, "--edit", edit], "plate.1002.exr", "frame 1002", "size")


def test_cli_edit_of_another_size(shot, capsys):
    tmp_path, plate, edit = shot
    exr.write_layers(tmp_path / "edit.1003.exr", np.zeros((H, W + 1, 4), np.float32), (0, 0, W, H - 1), {})
    _bad_input(capsys, ["comp", "--plate", plate, "--edit", edit, "--out", str(tmp_path / "c.####.exr")],
               "edit.1003.exr", "frame 1003")


def test_cli_no_rgb_channels(shot, capsys):
    tmp_path, plate, edit = shot
    write_exr(tmp_path / "plate.1001.exr", {"Z": np.ones((H, W), np.float32)}, DISPLAY)
    _bad_input(capsys, ["qc", "--plate", plate, "--edit", edit], "plate.1001.exr", "frame 1001", "no RGB channels")


def test_cli_nonfinite_refused_or_zeroed(shot, capsys):
    tmp_path, plate, edit = shot
    img = pattern_image(H, W)
    img[3, 4, :2] = [np.nan, np.inf]
    write_exr(tmp_path / "plate.1002.exr", rgba_channels(img), DISPLAY, pixel_type="float")
    out = str(tmp_path / "c.####.exr")
    _bad_input(capsys, ["comp", "--plate", plate, "--edit", edit, "--out", out], "plate.1002.exr", "frame 1002",
               "2 NaN/inf values")
    code, _, err = _run(capsys, "comp", "--plate", plate, "--edit", edit, "--out", out, "--nonfinite", "zero")
    assert code == 0, err
    assert np.isfinite(exr.read_layer(tmp_path / "c.1002.exr").pixels).all()


def test_cli_bad_compression_and_single_output_name(shot, capsys):
    tmp_path, plate, edit = shot
    _bad_input(capsys, ["comp", "--plate", plate, "--edit", edit, "--out", str(tmp_path / "c.####.exr"),
                        "--compression", "dwab"], "dwab")
    assert not list(tmp_path.glob("c.*.exr"))
    _bad_input(capsys, ["comp", "--plate", plate, "--edit", edit, "--out", str(tmp_path / "c.exr")],
               "c.exr", "frame number pattern")


def test_cli_in_a_subprocess_is_one_line_and_exit_2(shot):
    tmp_path, plate, edit = shot
    (tmp_path / "plate.1002.exr").unlink()
    exe = str(Path(sys.executable).with_name("vera-render"))
    result = subprocess.run([exe, "qc", "--plate", plate, "--edit", edit], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "plate.####.exr: missing frames 1002" in result.stderr
