"""The shot spec refuses what cannot run (issue 14): `validate` catches every spec `run` would fail on, with
exit 2 and the key named, so the Nuke node and the farm submitter (which call validate first) never submit a
shot that dies later; special files (FIFOs) are refused without being opened; a 10-million-frame typo is
answered at once; folders holding '#' or '%' work (only the file name carries the frame pattern)."""

import json
import os
import threading
import time

import numpy as np
import pytest

from vera.cli import main
from vera.exr import write_exr
from vera.shot import validate

from bundles import FIRST, LAST, base_spec, write_plate, write_plates, write_spec


def _cuda_missing():
    import torch

    return not torch.cuda.is_available()


def _mask(folder, **changes):
    """Spec changes adding a mask written into `folder` (RGB, or of another size)."""
    size = changes.pop("size", None)
    if size:
        write_plate(folder, FIRST, LAST, *size, name="mask", channels="RGB")
    else:
        write_plates(folder, name="mask", seed=3)
    return {"mask": {"path": "mask.####.exr", **changes}}


def _movie_mask(folder):
    from images import write_mp4

    write_mp4(folder / "mask.mp4", [np.full((16, 24, 3), 1.0, np.float32)] * (LAST - FIRST + 1))
    return {"mask": {"path": "mask.mp4", "start_frame": FIRST}}  # channel A by default


# (what is wrong, spec changes (or a function of the shot folder returning them), the key the problem names)
CANNOT_RUN = [
    ("guidance NaN", {"sampler": {"name": "unipc", "steps": 2, "guidance": float("nan")}}, "sampler.guidance"),
    ("guidance Infinity", {"sampler": {"name": "unipc", "steps": 2, "guidance": float("inf")}}, "sampler.guidance"),
    ("shift NaN", {"sampler": {"name": "unipc", "steps": 2, "shift": float("nan")}}, "sampler.shift"),
    ("shift Infinity", {"sampler": {"name": "unipc", "steps": 2, "shift": float("inf")}}, "sampler.shift"),
    ("threshold NaN", {"matte": {"threshold": float("nan")}}, "matte.threshold"),
    ("unknown colour space", {"plate.colorspace": "ACEScgg"}, "plate.colorspace"),
    ("unknown mask channel", lambda d: _mask(d, channel="Q"), "mask.channel"),
    ("mask without the channel asked for", lambda d: _mask(d, channel="A"), "mask.path"),
    ("mask of another size", lambda d: _mask(d, channel="R", size=(12, 8)), "mask.path"),
    ("mask movie read through A", lambda d: _movie_mask(d), "mask.path"),
    ("output folder is a file", lambda d: (d / "taken").write_text("x") and {"output": {"dir": "taken"}},
     "output.dir"),
    ("output folder under a file", lambda d: (d / "taken").write_text("x") and {"output": {"dir": "taken/out"}},
     "output.dir"),
    ("overlap too large for the window", {"window": {"frames": 5, "overlap": 3}}, "window.overlap"),
    ("lone surrogate in the instruction", {"instruction": "add a \ud800 ball"}, "instruction"),
    ("lone surrogate in the negative prompt", {"negative_prompt": "blurry \udfff"}, "negative_prompt"),
    pytest.param("cuda on a machine without it", {"model.device": "cuda"}, "model.device",
                 marks=pytest.mark.skipif(not _cuda_missing(), reason="this machine has CUDA")),
]


def _apply(spec, changes):
    for key, value in changes.items():
        if "." in key:
            section, name = key.split(".")
            spec[section][name] = value
        else:
            spec[key] = value
    return spec


@pytest.mark.parametrize("what, changes, key", CANNOT_RUN,
                         ids=[c.values[0] if hasattr(c, "values") else c[0] for c in CANNOT_RUN])
def test_validate_refuses_what_run_cannot_do(tmp_path, tiny_bundle, fake, capsys, what, changes, key):
    write_plates(tmp_path)
    spec = _apply(base_spec(tiny_bundle), changes(tmp_path) if callable(changes) else changes)
    path = write_spec(tmp_path, spec)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"shot.json: {key}: " in err, err
    code = main(["run", str(path), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2, err  # never an internal error (1) a farm would retry
    assert "Traceback" not in err and fake.calls == []
    assert not (tmp_path / "out" / "manifest.json").exists()


# ----------------------------------------------------------------------------------------------- FIFOs

class FifoWatch(threading.Thread):
    """Opening a FIFO for reading blocks until a writer comes: while the command runs, this thread keeps trying
    to open the FIFO for writing without blocking, which succeeds only while some reader has it open. It then
    records the open and lets the reader go (it sees an empty file), so a command that opens it fails the test
    instead of hanging it."""

    def __init__(self, fifo):
        super().__init__(daemon=True)
        self.fifo, self.opened, self.done = fifo, False, threading.Event()

    def run(self):
        while not self.done.wait(0.01):
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: nobody is reading it
                continue
            self.opened = True


def _timed(capsys, *argv):
    """Exit code, standard error and seconds of `vera-render ARGV`, run in this process (its libraries are
    already imported: loading them is not the refusal)."""
    capsys.readouterr()
    t = time.monotonic()
    code = main(list(argv))
    seconds = time.monotonic() - t
    return code, capsys.readouterr().err, seconds


@pytest.mark.parametrize("command", ["validate", "run", "comp"])
def test_a_fifo_named_like_a_frame_is_refused_without_opening_it(tmp_path, tiny_bundle, fake, capsys, command):
    """Opening a FIFO with no writer blocks forever: FifoWatch sees any open and ends the wait."""
    write_plates(tmp_path)
    (tmp_path / "plate.1006.exr").unlink()
    os.mkfifo(tmp_path / "plate.1006.exr")
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    if command == "comp":
        argv = ["comp", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(tmp_path / "plate.####.exr"),
                "--out", str(tmp_path / "comp.####.exr")]
    else:
        argv = [command, str(spec)]
    watch = FifoWatch(tmp_path / "plate.1006.exr")
    watch.start()
    try:
        code, err, seconds = _timed(capsys, *argv)
    finally:
        watch.done.set()
        watch.join()
    assert not watch.opened, f"vera {command} opened the FIFO"
    assert code == 2, err
    assert "plate.1006.exr (frame 1006)" in err and "FIFO" in err
    assert (tmp_path / "plate.1006.exr").is_fifo()


# ----------------------------------------------------------------------------------------------- long ranges

def test_a_ten_million_frame_range_is_answered_in_seconds(tmp_path, tiny_bundle, capsys):
    write_plates(tmp_path)
    spec = base_spec(tiny_bundle)
    spec["plate"]["last"] = FIRST + 10_000_000
    path = write_spec(tmp_path, spec)
    code, err, seconds = _timed(capsys, "validate", str(path))
    assert code == 2 and "plate.first/last" in err and "10000001 frames" in err, err
    assert seconds < 30.0, seconds  # generous: stat-ing 10^7 frames would take minutes


def test_comp_with_a_typo_range_is_answered_in_seconds(tmp_path, capsys):
    write_plates(tmp_path)
    code, err, seconds = _timed(capsys, "comp", "--plate", str(tmp_path / "plate.####.exr"), "--edit",
                                str(tmp_path / "plate.####.exr"), "--first", "1001", "--last", "10001001",
                                "--out", str(tmp_path / "c.####.exr"))
    assert code == 2 and "10000001 frames" in err, err
    assert seconds < 30.0, seconds  # generous: stat-ing 10^7 frames would take minutes


# ----------------------------------------------------------------------------------------------- '#' and '%' folders

@pytest.mark.parametrize("folder", ["sc#12", "grade 50%", "v@2"])
def test_a_folder_holding_pattern_characters_works(tmp_path, tiny_bundle, fake, capsys, folder):
    shot_dir = tmp_path / "shots" / folder
    write_plates(shot_dir)
    path = write_spec(shot_dir, base_spec(tiny_bundle))
    assert validate(path) == []
    assert main(["run", str(path), "--progress", "none"]) == 0
    assert (shot_dir / "out" / "edit.1013.exr").is_file()
    assert main(["qc", "--plate", str(shot_dir / "plate.####.exr"), "--edit",
                 str(shot_dir / "out" / "edit.%04d.exr"), "--progress", "none"]) == 0
    assert main(["comp", "--plate", str(shot_dir / "plate.####.exr"), "--edit",
                 str(shot_dir / "out" / "edit.####.exr"), "--out", str(shot_dir / "comp" / "comp.####.exr"),
                 "--progress", "none"]) == 0
    assert len(list((shot_dir / "comp").glob("comp.*.exr"))) == LAST - FIRST + 1


def test_the_default_overlap_fits_the_bundles_own_window(tmp_path, tiny_bundle, fake):
    """window.frames null: the bundle's 9-frame window with the default overlap 8 (meant for 49-frame windows)
    is planned with overlap 4, the most that fits; validate and run agree (run used to refuse it)."""
    write_plates(tmp_path)
    spec = base_spec(tiny_bundle)
    spec["window"] = {}
    path = write_spec(tmp_path, spec)
    assert validate(path) == []
    assert main(["run", str(path), "--progress", "none"]) == 0
    assert [c[:2] for c in fake.calls] == [(1001, 1009), (1005, 1013)]
