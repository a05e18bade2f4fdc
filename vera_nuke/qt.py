"""One import for Qt across Nuke versions: PySide6 (Nuke 16+) or PySide2 (Nuke 13-15).

Everything Qt in vera_nuke comes from here: `from vera_nuke.qt import QtCore, QtGui, QtWidgets, QAction`.
QAction moved from QtWidgets (Qt5) to QtGui (Qt6); `exec_` was renamed `exec`.
"""

try:
    from PySide6 import QtCore, QtGui, QtWidgets

    QAction = QtGui.QAction
    BINDING = "PySide6"
except ImportError:  # Nuke 13-15
    from PySide2 import QtCore, QtGui, QtWidgets

    QAction = QtWidgets.QAction
    BINDING = "PySide2"

Signal = QtCore.Signal
Slot = QtCore.Slot


def exec_app(app) -> int:
    """Run the event loop (`exec` in Qt6, `exec_` in Qt5)."""
    return (app.exec if hasattr(app, "exec") else app.exec_)()


def image_formats() -> set:
    """Lower-case image formats Qt can read here (EXR only with a plug-in such as KImageFormats)."""
    return {bytes(f).decode().lower() for f in QtGui.QImageReader.supportedImageFormats()}


__all__ = ["QtCore", "QtGui", "QtWidgets", "QAction", "Signal", "Slot", "BINDING", "exec_app", "image_formats"]
