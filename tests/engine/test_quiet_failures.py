"""Quieter ways to ship wrong frames (issue 14): each used to end with exit 0 and a wrong result.

A moved display window on one plate frame, a mask without the channel the spec reads, a model that outputs
NaN, a plate's -0.0 lost by comp (and QC calling it exact), stale frames left by a shorter `--force` render,
and a copied shot folder that would not resume.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import vera.render as render
from vera.status import status
from vera import exr
from vera.cli import main
from vera.errors import EXIT_QC_FAILED

from bundles import (FIRST, LAST, SMALL_HEIGHT, SMALL_WIDTH, FakeRenderer, base_spec, plate_pixels, write_plates,
                     write_spec)


def _edit_frames(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("edit.*.exr")) if out.is_dir() else []


# ----------------------------------------------------------------------------------------------- display windows

def test_a_plate_frame_whose_display_window_moved_is_refused(tmp_path, shot, fake, capsys):
    """Same size, other origin: its layer would have been written with frame 1001's window (offset in Nuke)."""
    pixels = plate_pixels(1006, SMALL_WIDTH, SMALL_HEIGHT)
    moved = (5, 3, 5 + SMALL_WIDTH - 1, 3 + SMALL_HEIGHT - 1)
    exr.write_exr(tmp_path / "plate.1006.exr", {c: pixels[..., i] for i, c in enumerate("RGB")}, moved)
    assert main(["validate", str(shot)]) == 2
    err = capsys.readouterr().err
    assert "plate.1006.exr (frame 1006)" in err and "display window" in err
    assert main(["run", str(shot), "--progress", "none"]) == 2
    assert "plate.1006.exr (frame 1006)" in capsys.readouterr().err
    assert fake.calls == [] and _edit_frames(tmp_path / "out") == []


# ----------------------------------------------------------------------------------------------- mask channel

def test_a_mask_without_the_requested_channel_is_refused(tmp_path, tiny_bundle, fake, capsys):
    write_plates(tmp_path)
    write_plates(tmp_path, name="mask", seed=4)  # R, G, B only
    spec = base_spec(tiny_bundle)
    spec["mask"] = {"path": "mask.####.exr", "channel": "A"}
    path = write_spec(tmp_path, spec)
    assert main(["run", str(path), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "mask.1001.exr (frame 1001)" in err and "alpha" in err
    assert fake.calls == []
    spec["mask"]["channel"] = "G"  # a channel it has: fine
    assert main(["run", str(write_spec(tmp_path, spec)), "--progress", "none"]) == 0


# ----------------------------------------------------------------------------------------------- NaN output

def test_non_finite_model_output_is_not_written(tmp_path, shot, monkeypatch, capsys):
    renderer = FakeRenderer()

    def blows_up(bundle, spec, frames, seed, progress):
        layers = renderer(bundle, spec, frames, seed, progress)
        if frames[0] == 1005:  # window 1
            rgba, matte = layers[1008]
            rgba[3, 4, 1] = np.nan
            matte[2, 2] = np.inf
        return layers

    monkeypatch.setattr(render, "_render_frames", blows_up)
    assert main(["run", str(shot), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "window 1" in err[0] and "1008" in err[0] and "NaN" in err[0], err
    cache = tmp_path / "out" / ".vera" / "cache" / "w001"
    assert not cache.exists() or not list(cache.glob("*.exr"))  # nothing of the bad window written
    report = status(tmp_path / "out")
    assert report["windows"]["failed"] == [1] and "NaN" in report["windows"]["errors"]["1"]
    assert _edit_frames(tmp_path / "out") == []


def test_nan_weights_are_refused_with_the_real_model(tmp_path, shot, monkeypatch, capsys):
    """A bundle whose weights hold NaN (a broken training run): the real pipeline's output is refused."""
    load = render._load_bundle

    def poisoned(spec, *args, **kwargs):
        import torch

        bundle = load(spec, *args, **kwargs)
        with torch.no_grad():
            next(bundle.transformer.parameters()).fill_(float("nan"))
        return bundle

    monkeypatch.setattr(render, "_load_bundle", poisoned)
    assert main(["run", str(shot), "--window", "0", "--progress", "none"]) == 2
    assert "window 0" in capsys.readouterr().err
    assert not list((tmp_path / "out" / ".vera" / "cache" / "w000").glob("*.exr"))


# ----------------------------------------------------------------------------------------------- -0.0

def test_comp_keeps_negative_zero_and_qc_compares_bits(tmp_path, capsys):
    h, w = 6, 8
    display = (0, 0, w - 1, h - 1)
    plate = np.full((h, w, 4), 0.5, np.float32)
    plate[1, 1, :3] = -0.0  # a plate's signed zero (e.g. from a grade): must come back as -0.0
    plate[2, 3, 0] = -0.0
    exr.write_exr(tmp_path / "plate.0001.exr", {c: plate[..., i] for i, c in enumerate("RGBA")}, display)
    edit = np.zeros((h, w, 4), np.float32)
    edit[4:, 5:] = 0.25  # touched elsewhere only
    exr.write_layers(tmp_path / "edit.0001.exr", edit, display, {})
    args = ["--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "edit.####.exr")]
    assert main(["comp", *args, "--out", str(tmp_path / "comp.####.exr"), "--progress", "none"]) == 0
    out = exr.read_layer(tmp_path / "comp.0001.exr").pixels
    assert np.signbit(out[1, 1, :3]).all() and np.signbit(out[2, 3, 0])
    assert main(["qc", *args, "--comp", str(tmp_path / "comp.####.exr"), "--progress", "none"]) == 0

    # A composite holding +0.0 where the plate has -0.0 is not the plate bit for bit: QC fails.
    flipped = out.copy()
    flipped[1, 1, 0] = 0.0
    exr.write_exr(tmp_path / "comp.0001.exr", {c: flipped[..., i] for i, c in enumerate("RGBA")}, display)
    capsys.readouterr()
    assert main(["qc", *args, "--comp", str(tmp_path / "comp.####.exr"), "--json", "-",
                 "--progress", "none"]) == EXIT_QC_FAILED
    report = json.loads(capsys.readouterr().out)
    assert report["frames"][0]["comp_changed_untouched"] == 1


# ----------------------------------------------------------------------------------------------- --force leftovers

def test_frames_of_another_take_in_the_sequence_are_flagged(tmp_path, shot, fake, capsys):
    """--force moves the earlier take out of the sequence (tests/test_trust_takes.py); frames of it that a person
    copies back are still flagged by status and qc."""
    assert main(["run", str(shot), "--progress", "none"]) == 0  # 1001-1013, "add a red ball"
    spec = json.loads(shot.read_text())
    spec["plate"]["last"] = 1009
    spec["instruction"] = "add a blue box"
    write_spec(tmp_path, spec)
    assert main(["run", str(shot), "--force", "--progress", "none"]) == 0
    [take] = (tmp_path / "out" / "superseded").iterdir()
    for frame in range(1010, 1014):
        shutil.copyfile(take / f"edit.{frame}.exr", tmp_path / "out" / f"edit.{frame}.exr")
    capsys.readouterr()

    assert main(["status", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"]["other_settings"] == "1010-1013"
    assert main(["status", str(tmp_path / "out")]) == 0
    assert "other settings 4: 1010-1013" in capsys.readouterr().out

    # qc over the whole folder sees two prompts' frames mixed in one sequence.
    args = ["qc", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "out" / "edit.####.exr"),
            "--json", "-", "--progress", "none"]
    assert main(args) == EXIT_QC_FAILED
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["mixed_settings"] and "1010-1013" in json.dumps(summary["settings"])
    assert main(args[:5] + ["--last", "1009", "--progress", "none"]) == 0  # the new range alone is fine


# ----------------------------------------------------------------------------------------------- moved folder

def test_a_copied_shot_folder_resumes_without_rendering_again(tmp_path, tiny_bundle, fake):
    here = tmp_path / "site_a" / "sh010"
    write_plates(here)
    spec = write_spec(here, base_spec(tiny_bundle))
    assert main(["run", str(spec), "--window", "0", "--progress", "none"]) == 0
    calls = len(fake.calls)

    there = tmp_path / "site_b" / "mnt" / "sh010"
    shutil.copytree(here, there, copy_function=shutil.copyfile)  # new mtimes, other absolute paths
    assert main(["run", str(there / "shot.json"), "--progress", "none"]) == 0
    assert [c[:2] for c in fake.calls[calls:]] == [(1005, 1013)]  # only the window not rendered at site A
    manifest = json.loads((there / "out" / "manifest.json").read_text())
    assert manifest["settings"]["spec"]["plate"]["path"] == "plate.####.exr"  # stays relative
    assert status(there / "out", verify=True)["complete"]
