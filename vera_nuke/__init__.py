"""Vera inside Nuke: the Vera Edit node's actions, the layer import and the job monitor.

Imports only the standard library and Qt (through `vera_nuke.qt`). It never imports the engine (`vera`),
torch or numpy: it writes shot specs, runs `vera-render` as a subprocess and reads the files it writes, so
the same code works in any Nuke (13-16+) with the engine installed anywhere. `nuke` is imported inside the
functions that need it, so `vera-monitor` runs outside Nuke and farm sessions never touch Qt.

Modules: `engine` (running vera-render, progress lines), `prefs` (preferences), `jobs` (job registry),
`shot` (shot spec from a node), `layers` (Import Layers / Copy as .nk), `actions` (the node's buttons),
`monitor` (the monitor panel, `vera-monitor`), `prefs_dialog` (Vera > Preferences), `qt` (PySide6/PySide2).
The node never evaluates text a user or a file gave it (docs/nuke.md, "Safety").
"""

__version__ = "0.1.0"
