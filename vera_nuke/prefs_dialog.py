"""Vera > Preferences: a small Qt dialog over prefs.json (vera_nuke.prefs).

Its own module, so that the node's actions reach it without importing the monitor (which imports the actions).
The Qt class is built on first use: importing this module needs no Qt (farm sessions, tests).
"""

from __future__ import annotations

from vera_nuke import prefs


def _build_class():
    from vera_nuke.qt import QtWidgets  # Qt only when a dialog is shown (never in a render session)

    class PreferencesDialog(QtWidgets.QDialog):
        def __init__(self, values: dict, parent=None):
            super().__init__(parent)
            self.setWindowTitle("Vera Preferences")
            form = QtWidgets.QFormLayout(self)
            self.vera_render = QtWidgets.QLineEdit(values.get("vera_render", ""))
            self.vera_render.setPlaceholderText("vera-render on PATH")
            self.farm = QtWidgets.QComboBox()
            self.farm.addItems(list(prefs.FARMS))
            self.farm.setCurrentText(values.get("farm", prefs.DEFAULTS["farm"]))
            self.output_root = QtWidgets.QLineEdit(values.get("output_root", prefs.DEFAULTS["output_root"]))
            self.output_root.setPlaceholderText("beside the script: <script folder>/vera_renders")
            self.launch = QtWidgets.QCheckBox("submit farm jobs (else only write the job files)")
            self.launch.setChecked(values.get("launch", "yes") == "yes")
            form.addRow("vera-render", self.vera_render)
            form.addRow("Default farm", self.farm)
            form.addRow("Output root", self.output_root)
            form.addRow("", self.launch)
            buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Ok
                                                 | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
            buttons.accepted.connect(self.accept)
            buttons.rejected.connect(self.reject)
            form.addRow(buttons)

        def values(self) -> dict:
            return {"vera_render": self.vera_render.text().strip(), "farm": self.farm.currentText(),
                    "output_root": self.output_root.text().strip() or prefs.DEFAULTS["output_root"],
                    "launch": "yes" if self.launch.isChecked() else "no"}

    PreferencesDialog.__qualname__ = "PreferencesDialog"
    return PreferencesDialog


def __getattr__(name):
    if name == "PreferencesDialog":
        globals()["PreferencesDialog"] = _build_class()
        return globals()[name]
    raise AttributeError(name)
