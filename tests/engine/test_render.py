"""The farm runner: windows, assemble, manifest, resume, refusal to mix settings, locking, killed tasks, status.

Most tests replace the model's work (vera.render._render_frames) with a cheap deterministic renderer so they
test the runner itself; the end-to-end test at the bottom renders with a small random model.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import vera.render as render
from vera.layout import load_shot
from vera.status import format_status, status
from vera.cli import main
from vera.errors import BadInput
from vera.exr import read_layer

from bundles import FIRST, SMALL_HEIGHT, LAST, SMALL_WIDTH, FakeRenderer, base_spec, write_plates, write_spec

OVERLAP_FRAMES = set(range(1005, 1010))  # windows 1001-1009 and 1005-1013 (the last one is pulled back)


def final_frames(out_dir: Path):
    return sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.suffix == ".exr")


def pixels(path):
    return read_layer(path).pixels


def test_windows_then_assemble_equals_the_whole_shot(tmp_path, shot, fake):
    result = render.run(load_shot(shot), progress="none")
    assert result["windows"] == {0: "rendered", 1: "rendered"}
    assert result["assemble"] == {"written": LAST - FIRST + 1, "skipped": 0}
    assert [c[:2] for c in fake.calls] == [(1001, 1009), (1005, 1013)]

    whole = json.loads(shot.read_text())
    whole["window"]["frames"] = 13  # one window covering the shot
    whole["output"]["dir"] = "whole"
    render.run(load_shot(write_spec(tmp_path, whole, "whole.json")), progress="none")

    for frame in range(FIRST, LAST + 1):
        windowed = pixels(tmp_path / "out" / f"edit.{frame}.exr")
        single = pixels(tmp_path / "whole" / f"edit.{frame}.exr")
        if frame in OVERLAP_FRAMES:
            np.testing.assert_allclose(windowed, single, rtol=2**-10, atol=2**-14)
        else:
            assert np.array_equal(windowed, single), frame
        # Premultiplied: nothing where alpha is 0.
        assert not windowed[windowed[..., 3] == 0][:, :3].any()


def test_overlaps_cross_fade_linearly(tmp_path, shot, monkeypatch):
    monkeypatch.setattr(render, "_render_frames", FakeRenderer(per_window=True))
    render.run(load_shot(shot), progress="none")
    values = {f: float(pixels(tmp_path / "out" / f"edit.{f}.exr")[0, 0, 0]) for f in range(FIRST, LAST + 1)}
    # Window 0 renders 0.25, window 1 renders 0.75; the 5 shared frames ramp from one to the other in 6 steps.
    for frame in range(FIRST, LAST + 1):
        w1 = (frame - 1004) / 6 if frame in OVERLAP_FRAMES else float(frame > 1009)
        assert values[frame] == pytest.approx(0.25 * (1 - w1) + 0.75 * w1, abs=1e-3), frame


def test_alpha_that_rounds_to_zero_clears_rgb(tmp_path, shot, monkeypatch):
    def faint(bundle, spec, frames, seed, progress):
        rgba = np.full((SMALL_HEIGHT, SMALL_WIDTH, 4), 1e-9, np.float32)  # below half's smallest subnormal
        return {f: (rgba, rgba[..., 3].copy()) for f in frames}

    monkeypatch.setattr(render, "_render_frames", faint)
    render.run(load_shot(shot), progress="none")
    out = pixels(tmp_path / "out" / "edit.1006.exr")
    assert not out.any()


def test_rerun_skips_finished_work_and_redoes_only_what_is_missing(tmp_path, shot, fake):
    s = load_shot(shot)
    render.run(s, progress="none")
    out = tmp_path / "out"
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("edit.*.exr")}

    again = render.run(s, progress="none")
    assert again["windows"] == {0: "skipped", 1: "skipped"}
    assert again["assemble"] == {"written": 0, "skipped": 13}
    assert len(fake.calls) == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("edit.*.exr")} == stamps

    # A lost cache frame of window 1: only window 1 is rendered again, only its frames reassembled
    # (the cache file is rewritten identically, so frames whose sources match are kept).
    (out / ".vera" / "cache" / "w001" / "edit.1012.exr").unlink()
    # A damaged final frame: rewritten.
    (out / "edit.1002.exr").write_bytes(b"garbage")
    third = render.run(s, progress="none")
    assert third["windows"] == {0: "skipped", 1: "rendered"}
    assert third["assemble"]["written"] == 1 and third["assemble"]["skipped"] == 12
    assert [c[:2] for c in fake.calls[2:]] == [(1005, 1013)]
    assert status(out, verify=True)["complete"]


def test_refuses_to_mix_settings_unless_forced(tmp_path, shot, fake, capsys):
    assert main(["run", str(shot), "--progress", "none"]) == 0
    changed = json.loads(shot.read_text())
    changed["instruction"] = "add a blue box"
    changed["sampler"]["steps"] = 3
    write_spec(tmp_path, changed)
    capsys.readouterr()
    assert main(["run", str(shot), "--window", "1", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "instruction" in err and "sampler.steps" in err and "--force" in err
    assert len(fake.calls) == 2

    assert main(["run", str(shot), "--force", "--progress", "none"]) == 0
    assert len(fake.calls) == 4
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["spec"]["instruction"] == "add a blue box"
    assert read_layer(tmp_path / "out" / "edit.1001.exr").attributes["vera/prompt"] == "add a blue box"


def test_output_options_do_not_invalidate_renders(tmp_path, shot, fake):
    render.run(load_shot(shot), progress="none")
    spec = json.loads(shot.read_text())
    spec["output"]["compression"] = "piz"
    again = render.run(load_shot(write_spec(tmp_path, spec)), progress="none")
    assert again["windows"] == {0: "skipped", 1: "skipped"}


def test_changed_plate_is_refused(tmp_path, shot, fake):
    render.run(load_shot(shot), progress="none")
    write_plates(tmp_path, 1007, 1007, seed=99)
    with pytest.raises(BadInput, match=r"input files changed \(1007\)"):
        render.run(load_shot(shot), progress="none")


def test_assemble_needs_every_window(tmp_path, shot, fake, capsys):
    assert main(["run", str(shot), "--window", "1", "--progress", "none"]) == 0
    assert main(["assemble", str(shot), "--progress", "none"]) == 2
    assert "windows not rendered: 0 (missing)" in capsys.readouterr().err


def test_window_index_out_of_range(shot, fake, capsys):
    assert main(["run", str(shot), "--window", "2"]) == 2
    assert "window 2 does not exist" in capsys.readouterr().err


def test_status_reports_done_missing_and_failed(tmp_path, shot, fake, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(["status", str(out)]) == 2  # nothing rendered yet
    assert not out.exists()  # and asking did not create anything
    assert main(["run", str(shot), "--window", "0", "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["windows"]["done"] == [0] and report["windows"]["missing"] == [1]
    assert report["frames"]["missing"] == "1001-1013" and not report["complete"]

    def out_of_memory(*args):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(render, "_render_frames", out_of_memory)
    assert main(["run", str(shot), "--window", "1", "--progress", "none"]) == 3  # transient: retry
    capsys.readouterr()
    main(["status", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["windows"]["failed"] == [1]
    assert "out of memory" in report["windows"]["errors"]["1"]
    assert report["frames"]["failed"] == "1005-1013" and report["frames"]["missing"] == "1001-1004"

    monkeypatch.setattr(render, "_render_frames", fake)
    assert main(["run", str(shot), "--progress", "none"]) == 0
    (out / "edit.1003.exr").unlink()
    (out / "edit.1007.exr").unlink()
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "11/13 done: 1001-1002,1004-1006,1008-1013" in text
    assert "missing 2: 1003,1007" in text and "windows 2/2 done" in text


def test_farm_progress_lines(shot, fake, capsys):
    assert main(["run", str(shot), "--window", "0", "--progress", "deadline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "Progress: 100%" and all(line.startswith("Progress: ") for line in lines)
    assert main(["assemble", str(shot), "--progress", "openjd"]) == 2  # window 1 missing
    assert main(["run", str(shot), "--window", "1", "--progress", "openjd"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "openjd_progress: 100"


# ----------------------------------------------------------------------------------------------- processes

# A task in its own process, as the farm runs it, with the fake renderer and optional slowdowns.
HARNESS = textwrap.dedent('''
    import os, sys, time
    sys.path[:0] = [{tests!r}, {helpers!r}]
    import vera.render as render
    import vera.manifest as manifest
    import vera.atomic
    from bundles import FakeRenderer

    render._render_frames = FakeRenderer()
    mode = os.environ.get("HARNESS_MODE", "")
    if mode == "handshake":
        # Files in HARNESS_DIR tell the test where this task is: NAME.waiting.LOCK before taking a lock,
        # NAME.holding.LOCK once held, NAME.paused when it stops (in its first manifest write, or first render
        # with HARNESS_PAUSE=render) until the test creates `release`; NAME.rendered when it renders.
        folder, name = os.environ["HARNESS_DIR"], os.environ["HARNESS_NAME"]
        touch = lambda what: open(os.path.join(folder, name + "." + what), "w").close()
        def pause():
            touch("paused")
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(folder, "release")):
                if time.monotonic() > deadline:
                    sys.exit(5)
                time.sleep(0.01)
        flock = manifest.file_lock
        import contextlib
        @contextlib.contextmanager
        def watched_flock(path, shared=False):
            touch("waiting." + os.path.basename(str(path)))
            with flock(path, shared):
                touch("holding." + os.path.basename(str(path)))
                yield
        manifest.file_lock = render.file_lock = watched_flock  # render imported the name
        write, renderer = manifest._write_manifest, render._render_frames
        def paused_write(out_dir, data):
            if os.environ.get("HARNESS_PAUSE", "write") == "write":
                pause()
            write(out_dir, data)
        def paused_render(*args, **kwargs):
            touch("rendered")
            if os.environ.get("HARNESS_PAUSE") == "render":
                pause()
            return renderer(*args, **kwargs)
        manifest._write_manifest, render._render_frames = paused_write, paused_render
    if mode == "hang-mid-write":
        # Stop for good between writing a frame's temp file and renaming it: the test kills us there.
        replace = os.replace
        def hanging_replace(src, dst):
            if str(dst).endswith("edit.1004.exr") and "cache" in str(dst):
                open(os.environ["HARNESS_SIGNAL"], "w").close()
                time.sleep(60)
            replace(src, dst)
        vera.atomic.os.replace = hanging_replace
    from vera.cli import main
    sys.exit(main(sys.argv[1:]))
''')


@pytest.fixture
def harness(tmp_path):
    path = tmp_path / "harness.py"
    path.write_text(HARNESS.format(tests=str(Path(__file__).parent), helpers=str(Path(__file__).parents[1])))
    return path


def _task(harness, *args, mode="", **env):
    environment = dict(os.environ, HARNESS_MODE=mode, **env)
    return subprocess.Popen([sys.executable, str(harness), *args], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, tasks, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        for task in tasks:
            assert task.poll() is None, task.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def stays_absent(path, seconds=1.0):
    """True if `path` does not appear within `seconds` (a task blocked on a lock cannot make it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return False
        time.sleep(0.01)
    return True


def handshake_task(harness, shot, signals, name, window, pause="write"):
    return _task(harness, "run", str(shot), "--window", str(window), "--progress", "log", mode="handshake",
                 HARNESS_DIR=str(signals), HARNESS_NAME=name, HARNESS_PAUSE=pause)


@pytest.mark.slow
def test_two_concurrent_window_tasks_both_land(tmp_path, shot, harness):
    """Task a stops inside a manifest write (holding the manifest lock); task b, on the other window, reaches
    the lock and must wait there until a is released. Then both windows are in the manifest."""
    signals = tmp_path / "signals"
    signals.mkdir()
    a = handshake_task(harness, shot, signals, "a", 0)
    wait_for(signals / "a.paused", [a])
    assert (signals / "a.holding.manifest.lock").exists()
    b = handshake_task(harness, shot, signals, "b", 1)
    wait_for(signals / "b.waiting.manifest.lock", [a, b])
    assert stays_absent(signals / "b.holding.manifest.lock"), "b took the manifest lock a holds"
    (signals / "release").touch()
    for task in (a, b):
        out, err = task.communicate(timeout=120)
        assert task.returncode == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {k: w["status"] for k, w in manifest["windows"].items()} == {"0": "done", "1": "done"}
    assert len(manifest["windows"]["0"]["frames"]) == 9 and len(manifest["windows"]["1"]["frames"]) == 9
    assert main(["assemble", str(shot), "--progress", "none"]) == 0
    assert status(tmp_path / "out", verify=True)["complete"]


@pytest.mark.slow
def test_two_tasks_on_the_same_window_render_it_once(tmp_path, shot, harness):
    """docs/farm.md: a second attempt at the same window waits for the first, then finds it done."""
    signals = tmp_path / "signals"
    signals.mkdir()
    a = handshake_task(harness, shot, signals, "a", 0, pause="render")
    wait_for(signals / "a.paused", [a])
    b = handshake_task(harness, shot, signals, "b", 0, pause="render")
    wait_for(signals / "b.waiting.w000.lock", [a, b])
    assert stays_absent(signals / "b.holding.w000.lock"), "b entered the window a is rendering"
    (signals / "release").touch()
    for task in (a, b):
        out, err = task.communicate(timeout=120)
        assert task.returncode == 0, err
    assert (signals / "b.holding.w000.lock").exists()  # b did get the window, after a
    assert not (signals / "b.rendered").exists()  # and found it done
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["windows"]["0"]["status"] == "done" and manifest["windows"]["0"]["attempts"] == 1


@pytest.mark.slow
def test_killed_task_leaves_no_partial_frame_and_rerun_completes(tmp_path, shot, harness):
    signal_file = tmp_path / "mid-write"
    task = _task(harness, "run", str(shot), "--window", "0", "--progress", "log", mode="hang-mid-write",
                 HARNESS_SIGNAL=str(signal_file))
    deadline = time.time() + 120
    while not signal_file.exists():
        assert task.poll() is None, task.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    task.send_signal(signal.SIGKILL)
    task.communicate()

    cache = tmp_path / "out" / ".vera" / "cache" / "w000"
    visible = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert visible == ["edit.1001.exr", "edit.1002.exr", "edit.1003.exr"]  # complete frames only
    assert [p.name for p in cache.iterdir() if p.name.startswith(".edit.1004.exr")]  # the unfinished temp
    for name in visible:
        read_layer(cache / name)  # each is whole
    report = status(tmp_path / "out")
    assert report["windows"]["failed"] == [0] and "interrupted" in report["windows"]["errors"]["0"]

    rerun = _task(harness, "run", str(shot), "--progress", "log")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert [p.name for p in cache.iterdir()] and not [p for p in cache.iterdir() if p.name.startswith(".")]
    expected = [f"edit.{f}.exr" for f in range(FIRST, LAST + 1)]
    assert final_frames(tmp_path / "out") == expected  # each frame once, no temp files
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    assert status(tmp_path / "out", verify=True)["complete"]


# ----------------------------------------------------------------------------------------------- the model

@pytest.mark.slow
def test_end_to_end_with_a_random_model(tmp_path, shot):
    """The real pipeline (tiny random model, 2 steps): `run` renders windows and assembles frames."""
    assert main(["run", str(shot), "--progress", "none"]) == 0
    out = tmp_path / "out"
    assert final_frames(out) == [f"edit.{f}.exr" for f in range(FIRST, LAST + 1)]
    layer = read_layer(out / "edit.1007.exr")
    assert layer.pixel_type == "half" and layer.display_window == (0, 0, SMALL_WIDTH - 1, SMALL_HEIGHT - 1)
    assert layer.attributes["vera/model"] == "random-0"
    import OpenEXR  # a cross-faded frame names both windows as an int pair (V2i)

    assert list(OpenEXR.File(str(out / "edit.1007.exr")).header()["vera/window"]) == [0, 1]
    rgba = layer.pixels
    assert np.isfinite(rgba).all() and not rgba[rgba[..., 3] == 0][:, :3].any()
    again = render.run(load_shot(shot), progress="none")
    assert again["windows"] == {0: "skipped", 1: "skipped"} and again["assemble"]["written"] == 0


def test_status_verify_catches_a_damaged_frame(tmp_path, shot, fake):
    render.run(load_shot(shot), progress="none")
    damaged = tmp_path / "out" / "edit.1008.exr"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    assert status(tmp_path / "out")["complete"]  # a quick look only checks that files exist
    report = status(tmp_path / "out", verify=True)
    assert not report["complete"] and report["frames"]["failed"] == "1008"
    assert "checksum" in report["frames"]["errors"]["1008"]
    assert "frame 1008 failed: checksum mismatch" in format_status(report)


@pytest.mark.slow
def test_farm_tasks_then_assemble_equal_one_run_with_the_real_model(tmp_path, shot):
    """What a farm does (each window its own task, then assemble) gives exactly what one `run` gives:
    per-window seeds come from the shot seed, so where a window runs does not change its pixels."""
    assert main(["run", str(shot), "--progress", "none"]) == 0
    whole = {f: pixels(tmp_path / "out" / f"edit.{f}.exr") for f in range(FIRST, LAST + 1)}

    farm_spec = json.loads(shot.read_text())
    farm_spec["output"]["dir"] = "farm"
    farm_shot = write_spec(tmp_path, farm_spec, "farm.json")
    for index in (1, 0):  # tasks may run in any order
        assert main(["run", str(farm_shot), "--window", str(index), "--progress", "none"]) == 0
    assert main(["assemble", str(farm_shot), "--progress", "none"]) == 0
    for frame, expected in whole.items():
        assert np.array_equal(pixels(tmp_path / "farm" / f"edit.{frame}.exr"), expected), frame
    assert any(expected[..., 3].any() for expected in whole.values())  # the model really drew something


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage"])
def test_a_damaged_manifest_is_bad_input_not_an_internal_error(tmp_path, capsys, content):
    (tmp_path / "manifest.json").write_bytes(content)
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json: not a valid manifest" in err[0]


def test_movie_plate_numbered_from_its_start_frame(tmp_path, tiny_bundle):
    """A movie's frames are 1..N unless `plate.start_frame` says where the shot's numbering starts: the shot
    is validated, rendered and written as frames 1001.. of the movie, with the real pipeline."""
    from images import write_mp4

    from vera.shot import validate

    frames = [np.full((16, 32, 3), v, np.float32) for v in (0.2, 0.4, 0.6, 0.8, 0.5)]
    write_mp4(tmp_path / "clip.mp4", frames)
    spec = base_spec(tiny_bundle, frames=5, overlap=0)
    spec["plate"] = {"path": "clip.mp4", "first": 1001, "last": 1005, "colorspace": "sRGB - Texture"}
    problems = validate(spec, base_dir=tmp_path)
    assert len(problems) == 1 and "plate.path" in problems[0] and "missing frames 1001-1005" in problems[0]

    spec["plate"]["start_frame"] = 1001
    assert validate(spec, base_dir=tmp_path) == []
    assert main(["run", str(write_spec(tmp_path, spec)), "--progress", "none"]) == 0
    assert final_frames(tmp_path / "out") == [f"edit.{f}.exr" for f in range(1001, 1006)]
    assert main(["qc", "--plate", str(tmp_path / "clip.mp4"), "--edit", str(tmp_path / "out" / "edit.####.exr"),
                 "--start-frame", "1001"]) == 0
