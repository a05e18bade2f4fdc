"""`python -m vera_nuke.selftest`, the self-test a TD runs inside Nuke, passes against the fake nuke, with every
wait on a worker: the fake fails any subprocess wait, sleep or join over 0.1 s on the main thread."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.fake_only  # its "untouched pixels of Nuke's Merge over" check runs the fake's own over formula
def test_selftest_passes_against_the_fake(tmp_path, engine_on_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "fake_nuke"), str(ROOT),
                                                       os.environ.get("PYTHONPATH", "")]),
               VERA_PREFS=str(tmp_path / "prefs.json"), VERA_JOBS=str(tmp_path / "artists_jobs.json"),
               TMPDIR=str(tmp_path), FAKE_NUKE_MAIN_THREAD_GUARD="1")
    proc = subprocess.run([sys.executable, "-m", "vera_nuke.selftest"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "under the fake nuke (tests/fake_nuke), not Nuke" in lines[0]  # never claims a Nuke version
    assert not (tmp_path / "artists_jobs.json").exists()  # its own registry, not the artist's
    assert not [ln for ln in lines if ln.startswith("FAIL")]
    passed = [ln for ln in lines if ln.startswith("PASS")]
    for check in ("root: the stack is in root", "group: the stack is in Group1",
                  "root: Merge2 B (input 0) is the plate", "group: Merge2 A (input 1) is Read -> Grade -> Shuffle2",
                  "group: the layer Read sees rgba and matte.alpha", "root: the layer Read is black outside its frames",
                  "root: untouched pixels of Nuke's Merge over are the plate's (qc --comp)"):
        assert f"PASS  {check}" in passed, check
    assert lines[-1].startswith("Vera self-test: PASSED")
    assert not any(p.name.startswith("vera_selftest_") for p in tmp_path.iterdir())  # cleaned up
