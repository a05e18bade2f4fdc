"""What a newcomer sees after `vera-render demo`: a summary naming every output, a readable contact sheet, and
`status` / `qc` that take the demo folder itself (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def vera_render(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vera.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("newcomer")
    run = vera_render("demo", "--out", "demo_out", "--progress", "none", "--speed", "preview", cwd=cwd)
    assert run.returncode == 0, run.stderr
    return cwd, run.stderr


@pytest.mark.slow
def test_demo_summary_names_every_output_under_the_folder_given(demo):
    cwd, summary = demo
    named = {}
    for line in summary.splitlines()[1:]:
        name, _, path = line.strip().partition("  ")
        named[name] = path.strip()
    for name in ("edit layers", "composite", "QC report", "manifest", "contact sheet", "shot spec"):
        assert name in named, summary
        assert named[name].startswith("demo_out/"), summary  # as the user named the folder, not an absolute path
    assert (cwd / named["QC report"]).is_file() and (cwd / named["manifest"]).is_file()
    assert sorted((cwd / "demo_out/layers").glob("edit.*.exr")) and sorted((cwd / "demo_out/comp").glob("comp.*.exr"))
    assert named["edit layers"] == "demo_out/layers/edit.####.exr"
    assert "speed preview" in summary.splitlines()[0]


@pytest.mark.slow
def test_status_and_qc_take_the_demo_folder(demo):
    cwd, _ = demo
    status = vera_render("status", "demo_out", cwd=cwd)
    assert status.returncode == 0, status.stderr
    assert "complete" in status.stdout and "5/5 done" in status.stdout
    qc = vera_render("qc", "demo_out", "--progress", "none", cwd=cwd)
    assert qc.returncode == 0, qc.stderr
    assert "5 frames (1001-1005)" in qc.stdout and "passed" in qc.stdout
    neither = vera_render("qc", "--progress", "none", cwd=cwd)
    assert neither.returncode == 2 and "--plate" in neither.stderr and len(neither.stderr.splitlines()) == 1
    empty = cwd / "empty"
    empty.mkdir()
    nothing = vera_render("status", "empty", cwd=cwd)
    assert nothing.returncode == 2 and "manifest.json" in nothing.stderr


@pytest.mark.slow
def test_contact_sheet_is_twice_the_old_size_with_the_prompt(demo):
    from PIL import Image

    cwd, _ = demo
    sheet = np.asarray(Image.open(cwd / "demo_out" / "contact_sheet.png").convert("RGB"))
    assert sheet.shape[1] >= 2 * 518 and sheet.shape[0] >= 2 * 292


def test_contact_sheet_layout_has_titles_frame_numbers_and_header():
    from vera.demo import SHEET_BACKGROUND, SHEET_COLUMNS, draw_sheet, sheet_scale

    tile = np.zeros((24, 32, 3), np.float32) + np.array([0.2, 0.6, 0.4], np.float32)  # a colour text never has
    rows = [(1001, [tile] * 4), (1003, [tile] * 4)]
    sheet = draw_sheet(rows, ['"add a red ball moving left"', "speed preset: balanced"])
    scale = sheet_scale(32)
    assert scale * 32 >= 256
    grey = np.all(sheet == np.round(tile[0, 0] * 255).astype(np.uint8), axis=-1)  # the tiles, enlarged
    tile_rows, tile_cols = np.nonzero(grey.any(axis=1))[0], np.nonzero(grey.any(axis=0))[0]
    top, left = tile_rows[0], tile_cols[0]
    assert grey.sum() == 2 * 4 * (24 * scale) * (32 * scale)
    text = ~np.all(sheet == SHEET_BACKGROUND, axis=-1) & ~grey
    assert text[:top, :].any(axis=1).sum() > 20  # header lines and column titles above the first tile row
    assert text[top:, :left].any()  # the frame numbers left of the tiles
    for c in range(len(SHEET_COLUMNS)):  # a title over every column
        x = left + c * (32 * scale + 8)
        assert text[top - 22:top, x:x + 32 * scale].any()
