"""init.py / menu.py under the fake nuke, and vera_nuke importing with the standard library and Qt only."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import fake_nuke

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def nuke(tmp_path, monkeypatch):
    nk = fake_nuke.setup(tmp_path, monkeypatch)
    nk.plugin_paths.clear()  # start like Nuke: nothing registered yet
    return nk


def test_init_registers_gizmos_and_package_without_ui(nuke, tmp_path):
    nuke.env["gui"] = False  # a render / terminal session: nuke.menu would raise
    nuke.run_init(ROOT / "init.py")
    assert set(nuke.pluginPath()) == {f"{ROOT.as_posix()}/gizmos", ROOT.as_posix()}
    assert nuke.createNode("VeraEdit").Class() == "VeraEdit"  # loads from the registered path
    # reached through NUKE_PATH the folder is already on the plug-in path: not registered again
    count = len(nuke.plugin_paths)
    nuke.run_init(ROOT / "init.py")
    assert nuke.plugin_paths.count(ROOT.as_posix()) == 1 and len(nuke.plugin_paths) == count


def test_a_studio_init_adding_the_folder_runs_veras_init_once(nuke, tmp_path):
    """~/.nuke/init.py with nuke.pluginAddPath(<vera>) (the docs' second way): Nuke runs Vera's init.py."""
    studio = tmp_path / "init.py"
    studio.write_text(f"import nuke\nnuke.pluginAddPath({ROOT.as_posix() + '/'!r})\n")
    nuke.run_init(studio)
    assert nuke.pluginPath().count(ROOT.as_posix()) == 1  # trailing slash stripped: no duplicate
    assert f"{ROOT.as_posix()}/gizmos" in nuke.pluginPath()
    assert nuke.createNode("VeraEdit").Class() == "VeraEdit"


def test_init_in_a_render_session_imports_no_qt(tmp_path):
    """A farm (terminal) session runs init.py only: no Qt may be imported."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests' / 'fake_nuke')!r})\n"
            f"import runpy; runpy.run_path({str(ROOT / 'init.py')!r})\n"
            "import vera_nuke.actions, vera_nuke.shot, vera_nuke.layers\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'PySide2', 'numpy', 'torch', 'vera')]\n"
            "print(bad); assert not bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True)


def test_menu_adds_the_menu_toolbar_and_panel(nuke, qapp):
    import nukescripts

    import vera_nuke.actions as actions

    nuke.run_init(ROOT / "init.py")  # Nuke runs init.py before menu.py
    runpy.run_path(str(ROOT / "menu.py"), run_name="__main__")
    vera_menu = nuke.menu("Nuke").findItem("Vera")
    assert [i.name() for i in vera_menu.items()] == ["Vera Edit", "Monitor", "Preferences..."]
    assert nuke.menu("Nodes").findItem("Vera/Vera Edit").script() is actions.create_node
    assert nukescripts.panels.registered == [(actions.MONITOR_WIDGET, "Vera Monitor", actions.MONITOR_ID)]

    node = vera_menu.findItem("Vera Edit").invoke()
    assert node.Class() == "VeraEdit"
    panel = nuke.menu("Pane").findItem("Vera Monitor").invoke()  # what restoring a workspace does
    assert type(panel.widget).__name__ == "MonitorPanel"
    panel.widget.timer.stop()
    assert actions.open_monitor().widget.objectName() == "VeraMonitor"


BLOCKER = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('numpy', 'torch', 'vera'):
            raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Blocked())
import importlib, pkgutil, vera_nuke
names = [m.name for m in pkgutil.iter_modules(vera_nuke.__path__, 'vera_nuke.')]
for name in names:
    importlib.import_module(name)
from vera_nuke.monitor import MonitorPanel, PreferencesDialog
print(' '.join(sorted(names)))
"""


def test_vera_nuke_imports_without_numpy_torch_or_the_engine(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    assert {"vera_nuke.qt", "vera_nuke.engine", "vera_nuke.shot", "vera_nuke.layers", "vera_nuke.actions",
            "vera_nuke.monitor", "vera_nuke.jobs", "vera_nuke.prefs"} <= imported
    # and the blocker does block: the engine itself cannot be imported that way
    proc = subprocess.run([sys.executable, "-c", BLOCKER + "import numpy\n"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "numpy is blocked" in proc.stderr
