"""Arguments and inputs refused in one line with the right exit code (issue 14): submission and demo arguments,
QC that must not pass, and messages that must name the real cause."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vera.cli import main

from images import rgba_channels, write_exr, write_exr_sequence, write_oiio

H, W = 16, 32
DISPLAY = (0, 0, W - 1, H - 1)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "internal error" not in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------ submission and demo

@pytest.mark.parametrize("options, words", [
    (["--pool", "gpu\nPriority=100"], "--pool"),
    (["--group", "vera\r"], "--group"),
    (["--priority", "101"], "0-100"),
    (["--priority", "-1"], "0-100"),
])
def test_deadline_options_it_would_misread_are_refused(tmp_path, shot, capsys, options, words):
    assert main(["submit", str(shot), "--farm", "deadline", "--out", str(tmp_path / "job"),
                 "--executable", "/opt/vera/bin/vera-render", *options]) == 2
    assert words in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "job").exists() and not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("farm", ["deadline", "openjd", "opencue"])
def test_submit_out_naming_a_file_is_refused(tmp_path, shot, capsys, farm):
    existing = tmp_path / "job.txt"
    existing.write_text("keep me")
    assert main(["submit", str(shot), "--farm", farm, "--out", str(existing),
                 "--executable", "/opt/vera/bin/vera-render"]) == 2
    assert "existing file" in _one_line(capsys.readouterr().err)
    assert existing.read_text() == "keep me" and not (tmp_path / "out").exists()


def test_demo_out_naming_a_file_is_refused(tmp_path, capsys):
    existing = tmp_path / "demo.txt"
    existing.write_text("keep me")
    assert main(["demo", "--out", str(existing), "--progress", "none"]) == 2
    assert "existing file" in _one_line(capsys.readouterr().err)
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("frames", ["0", "-3"])
def test_demo_frames_below_one_is_refused(tmp_path, capsys, frames):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--frames", frames, "--progress", "none"]) == 2
    assert "--frames must be at least 1" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "demo").exists()


# --------------------------------------------------------------------------------------------------- QC

@pytest.fixture
def plate_and_edit(tmp_path):
    """(plate pattern, edit pattern, edit alpha): frames 1-2; the edit touches a box, alpha 0 elsewhere."""
    plate = write_exr_sequence(tmp_path / "plate", "plate", (1, 2), H, W)
    alpha = np.zeros((H, W), np.float32)
    alpha[4:10, 8:20] = 0.5

    def write_edit(alpha=alpha):
        for frame in (1, 2):
            rgba = np.dstack([alpha * 0.2, alpha * 0.4, alpha * 0.6, alpha])
            write_exr(tmp_path / "edit" / f"edit.{frame:04d}.exr", rgba_channels(rgba), DISPLAY)
        return str(tmp_path / "edit" / "edit.####.exr")
    return plate, write_edit


def test_negative_alpha_fails_qc(tmp_path, plate_and_edit, capsys):
    plate, write_edit = plate_and_edit
    assert main(["qc", "--plate", plate, "--edit", write_edit()]) == 0  # the valid layer passes
    alpha = np.zeros((H, W), np.float32)
    alpha[2:4, 2:5] = -0.25  # 6 pixels below 0; nothing else touched
    edit = write_edit(alpha)
    assert main(["qc", "--plate", plate, "--edit", edit, "--json", str(tmp_path / "qc.json")]) == 4
    assert "negative alpha in 6 pixels" in capsys.readouterr().out
    report = json.loads((tmp_path / "qc.json").read_text())
    assert report["summary"]["negative_alpha"] == 12 and report["summary"]["failed_frames"] == "1-2"


def test_a_comp_of_another_size_is_bad_input_not_a_qc_failure(tmp_path, plate_and_edit, capsys):
    plate, write_edit = plate_and_edit
    comp = write_exr_sequence(tmp_path / "comp", "comp", (1, 2), H * 2, W * 2)
    assert main(["qc", "--plate", plate, "--edit", write_edit(), "--comp", comp]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "comp.0001.exr (frame 1)" in line and "display window" in line


def test_json_report_naming_a_folder_is_bad_input(tmp_path, plate_and_edit, capsys):
    plate, write_edit = plate_and_edit
    assert main(["qc", "--plate", plate, "--edit", write_edit(), "--json", str(tmp_path)]) == 2
    assert "--json names a folder" in _one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------------- the real cause

def test_a_damaged_png_is_our_one_line_without_libpng_lines(tmp_path, capfd):
    """libpng prints its own 'libpng error: ...' on stderr; the user sees only our line (which holds it)."""
    image = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    for frame in (1, 2):
        write_oiio(tmp_path / f"plate.{frame:04d}.png", image)
    damaged = tmp_path / "plate.0002.png"
    damaged.write_bytes(damaged.read_bytes()[:200])  # into the pixel data
    edit = write_exr_sequence(tmp_path, "edit", (1, 2), H, W)
    capfd.readouterr()
    assert main(["comp", "--plate", str(tmp_path / "plate.####.png"), "--edit", edit,
                 "--out", str(tmp_path / "comp.####.exr"), "--progress", "none"]) == 2
    line = _one_line(capfd.readouterr().err)
    assert "plate.0002.png (frame 2)" in line and "libpng error" not in line
