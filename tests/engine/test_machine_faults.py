"""The machine says no (issue 14): read-only or unwritable output, a full disk, memory exhaustion, names too long,
a deleted working directory. Each is one line and the documented exit code (docs/farm.md): permissions,
read-only filesystems and names are bad input (2), a full disk and out of memory are transient (3); no temp
file is left behind, a resume after the fault completes, and `status` reads a finished render it cannot write.

Faults are real: a small tmpfs fills up (root mounts it), root's permission override is dropped with setpriv,
the address space is capped with RLIMIT_AS. Tests skip cleanly where the machine does not allow them.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import vera.render as render
from vera.status import status
from vera import exr
from vera.cli import main

from bundles import FIRST, LAST, SMALL_HEIGHT, SMALL_WIDTH, base_spec, write_plate, write_plates, write_spec

ROOT = Path(__file__).resolve().parents[2]
# setpriv (util-linux): drop the capabilities that let root ignore file modes, for the child and its execs.
NO_OVERRIDE = ["setpriv", "--inh-caps", "-dac_override,-dac_read_search",
               "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _layers(bundle, spec, frames, seed, progress):
    """Stands in for vera.pipeline.render_frames (the runner is under test, not the model)."""
    out = {}
    for frame in frames:
        alpha = np.random.default_rng(frame).random((SMALL_HEIGHT, SMALL_WIDTH), dtype=np.float32)
        out[frame] = (np.dstack([alpha * 0.5, alpha, alpha * 0.25, alpha]), alpha)
        progress.advance(1)
    return out


def _vera(*args, cwd=None, prefix=()):
    """vera-render in its own process (with this checkout first on the path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "core"), str(ROOT)]))
    return subprocess.run([*prefix, sys.executable, "-m", "vera.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "internal error" not in lines[0]
    return lines[0]


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (skips if mounting is not permitted here)."""
    mounted = []

    def mount(size: str) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _remount(point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)


@pytest.fixture
def no_override():
    """Skip unless setpriv can drop root's permission override here (and it really takes effect)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    if os.geteuid() != 0 or subprocess.run([*NO_OVERRIDE, "true"], capture_output=True).returncode != 0:
        pytest.skip("not root, or setpriv cannot drop CAP_DAC_OVERRIDE here")
    return NO_OVERRIDE


@pytest.fixture
def shot_on(tmp_path, tiny_bundle, monkeypatch):
    """shot_on(out_dir) -> a spec for the small shot whose output goes to out_dir (plates on the normal disk)."""
    monkeypatch.setattr(render, "_render_frames", _layers)
    write_plates(tmp_path)

    def make(out_dir: Path) -> Path:
        spec = base_spec(tiny_bundle)
        spec["output"]["dir"] = str(out_dir)
        return write_spec(tmp_path, spec)
    return make


# ---------------------------------------------------------------------------------------------- full disk

@pytest.mark.parametrize("size", ["24k", "60k", "100k"])  # fills at different points of the render
def test_full_disk_is_transient_leaves_no_temp_files_and_resumes(tmpfs, shot_on, capsys, size):
    disk = tmpfs(size)
    spec = shot_on(disk / "out")
    assert main(["run", str(spec), "--progress", "none"]) == 3
    line = _one_line(capsys.readouterr().err)
    assert "no space left on the device" in line and str(disk) in line
    assert _temps(disk) == []
    _remount(disk, "size=4m")  # space freed: the same command finishes the shot
    assert main(["run", str(spec), "--progress", "none"]) == 0
    assert status(disk / "out", verify=True)["complete"]
    assert _temps(disk) == []


def test_full_disk_inside_the_exr_writer_is_transient(tmpfs, tmp_path, capsys):
    """OpenEXR reports ENOSPC as a RuntimeError with the system's words: still exit 3, and no temp file."""
    plate = write_plate(tmp_path / "plate", 1, 2, 256, 128)
    for frame in (1, 2):
        rgba = np.random.default_rng(frame).random((128, 256, 4), dtype=np.float32)
        exr.write_layers(tmp_path / f"edit.{frame:04d}.exr", rgba * rgba[..., 3:], (0, 0, 255, 127), {})
    disk = tmpfs("64k")
    assert main(["comp", "--plate", plate, "--edit", str(tmp_path / "edit.####.exr"),
                 "--out", str(disk / "comp.####.exr"), "--compression", "none", "--progress", "none"]) == 3
    line = _one_line(capsys.readouterr().err)
    assert "no space left on the device" in line and "comp." in line
    assert _temps(disk) == []


# -------------------------------------------------------------------------------------- permissions, names

def test_unwritable_output_folder_is_bad_input(tmp_path, tiny_bundle, no_override):
    write_plates(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    spec = base_spec(tiny_bundle)
    spec["output"]["dir"] = str(locked / "out")
    done = _vera("run", str(write_spec(tmp_path, spec)), "--progress", "none", prefix=no_override)
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    # validate (run's first step) already finds the folder cannot be created; later writes say permission denied
    assert ("permission denied" in line or "is not writable" in line) and str(locked) in line
    assert list(locked.iterdir()) == []


def test_submit_to_an_unwritable_job_folder_is_bad_input(tmp_path, tiny_bundle, no_override):
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for jobdir in (locked / "job", locked):  # a folder it cannot create, and one it cannot write into
        done = _vera("submit", str(spec), "--farm", "openjd", "--out", str(jobdir), prefix=no_override)
        assert done.returncode == 2, done.stderr
        assert "permission denied" in _one_line(done.stderr)
    assert list(locked.iterdir()) == []


def test_an_unreadable_plate_says_permission_denied(tmp_path, no_override):
    """Not "corrupt or truncated": the file is fine, the user may not read it (EXR and OIIO readers alike)."""
    for name in ("plate.0001.exr", "plate.0001.png"):
        if name.endswith(".exr"):
            write_plate(tmp_path, 1, 1, 32, 16)
        else:
            import OpenImageIO as oiio
            oiio.ImageBuf(oiio.ImageSpec(32, 16, 3, "uint8")).write(str(tmp_path / name))
        (tmp_path / name).chmod(0)
        pattern = str(tmp_path / name.replace("0001", "####"))
        done = _vera("qc", "--plate", pattern, "--edit", pattern, prefix=no_override)
        assert done.returncode == 2, done.stderr
        line = _one_line(done.stderr)
        assert name in line and "permission denied" in line and "corrupt" not in line


def test_read_only_filesystem_status_works_and_run_is_bad_input(tmpfs, shot_on, capsys):
    disk = tmpfs("4m")
    spec = shot_on(disk / "out")
    assert main(["run", str(spec), "--progress", "none"]) == 0
    capsys.readouterr()
    _remount(disk, "ro")
    assert main(["status", str(disk / "out"), "--verify"]) == 0
    assert "complete" in capsys.readouterr().out
    assert main(["run", str(spec), "--progress", "none"]) == 2
    assert "read-only file system" in _one_line(capsys.readouterr().err).lower()


def test_status_of_a_render_the_user_cannot_write(tmp_path, shot_on, no_override):
    out = tmp_path / "out"
    assert main(["run", str(shot_on(out)), "--progress", "none"]) == 0
    shutil.rmtree(out / ".vera")  # no lock file to open either: status must not create one
    for path in [out, *out.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    done = _vera("status", str(out), "--verify", prefix=no_override)
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout and not (out / ".vera").exists()


def test_a_name_the_filesystem_refuses_is_bad_input(tmp_path, capsys):
    plate = write_plate(tmp_path / "plate", 1, 1, 32, 16)
    exr.write_layers(tmp_path / "edit.0001.exr", np.zeros((16, 32, 4), np.float32), (0, 0, 31, 15), {})
    too_long = tmp_path / ("x" * 300 + ".####.exr")
    assert main(["comp", "--plate", plate, "--edit", str(tmp_path / "edit.####.exr"), "--out", str(too_long),
                 "--progress", "none"]) == 2
    assert "file name too long" in _one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------- memory

ALLOCATE = textwrap.dedent("""
    import argparse, resource, sys
    import numpy, torch
    from vera.cli import run_command

    def allocate(args):
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # like `ulimit -v 2097152`
        if args.kind == "torch":
            torch.empty(1 << 31, dtype=torch.float32)  # 8 GiB through torch's CPU allocator
        else:
            numpy.ones(1 << 31, dtype=numpy.float32)

    parser = argparse.ArgumentParser(prog="vera-render")
    parser.add_argument("kind")
    parser.set_defaults(func=allocate)
    sys.exit(run_command(parser, sys.argv[1:]))
""")


def test_torch_and_numpy_out_of_memory_are_the_same_transient_code():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "core"), str(ROOT)]))
    codes = {}
    for kind in ("torch", "numpy"):
        done = subprocess.run([sys.executable, "-c", ALLOCATE, kind], env=env, capture_output=True, text=True,
                              timeout=300)
        codes[kind] = done.returncode
        assert "out of memory" in _one_line(done.stderr)
    assert codes == {"torch": 3, "numpy": 3}


# --------------------------------------------------------------------------------------- deleted folder

def test_a_deleted_working_directory_is_one_line_and_retried(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (f"import os, subprocess, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); "
              "sys.exit(subprocess.run([sys.executable, '-m', 'vera.cli', 'model-info', '--config', "
              "'vera-tiny']).returncode)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "core"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "working directory was deleted" in _one_line(done.stderr)


# ------------------------------------------------------------------------------------- the mapping itself

@pytest.mark.parametrize("exc, code, words", [
    (PermissionError(13, "Permission denied", "/shots/out"), 2, "/shots/out: permission denied"),
    (OSError(30, "Read-only file system", "/shots/out/manifest.json"), 2, "read-only file system"),
    (OSError(36, "File name too long", "/shots/x"), 2, "file name too long"),
    (OSError(28, "No space left on device", "/shots/out/edit.1001.exr"), 3, "edit.1001.exr: no space left"),
    (OSError(122, "Disk quota exceeded", "/shots/out"), 3, "disk quota exceeded"),
    # OpenEXR's own words for a full disk (seen above on a real tmpfs)
    (RuntimeError('Failed to write pixel data to image file "/o/.c.exr.x.tmp". No space left on device.'), 3,
     "no space left"),
    (MemoryError("Unable to allocate 37.3 GiB"), 3, "out of memory"),
    (ValueError("could not convert"), None, None),
    (KeyError("windows"), None, None),
])
def test_machine_error_maps_the_os_answer_to_an_exit_code(exc, code, words):
    from vera.errors import machine_error

    mapped = machine_error(exc)
    if code is None:
        assert mapped is None
    else:
        assert mapped.exit_code == code and words in str(mapped)
