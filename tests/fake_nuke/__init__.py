"""Test helper: makes the fake `nuke` / `nukescripts` modules importable as Nuke's own.

`install()` puts this folder first on sys.path, imports `nuke`, resets its state and returns it.
The modules themselves (nuke.py, nukescripts/) document what they imitate and where they simplify.
"""

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


ROOT = HERE.parents[1]  # the repository: init.py, menu.py, gizmos/


def setup(tmp_path, monkeypatch):
    """For a test: fake nuke installed, gizmos on the plug-in path (as init.py does), and Vera's
    preferences / job registry in tmp_path so no test touches the home folder."""
    monkeypatch.setenv("VERA_PREFS", str(tmp_path / "prefs.json"))
    monkeypatch.setenv("VERA_JOBS", str(tmp_path / "jobs.json"))
    nuke = install()
    nuke.pluginAddPath(str(ROOT / "gizmos"))
    nuke.root()["name"].setValue(str(tmp_path / "shot010_comp_v001.nk"))
    return nuke


def install():
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    nuke = importlib.import_module("nuke")
    assert Path(nuke.__file__).resolve().parent == HERE, f"a different nuke module is imported: {nuke.__file__}"
    nuke.reset()
    importlib.import_module("nukescripts.panels").reset()
    return nuke
