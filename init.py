"""Vera for Nuke: runs in every Nuke session (GUI, terminal and farm renders), so no UI here.

Put this folder on NUKE_PATH (or `nuke.pluginAddPath` it from your own init.py). It registers the gizmos
(a script using the Vera Edit node must load on the farm) and the folder holding the `vera_nuke` package.
"""

import os
import sys

import nuke

_VERA_ROOT = os.path.dirname(os.path.abspath(__file__)).replace("\\", "/")

# pluginAppendPath, not pluginAddPath (which prepends): a studio's folders keep precedence, so a studio gizmo of
# the same name still wins over Vera's.
_registered = [p.replace("\\", "/").rstrip("/") for p in nuke.pluginPath()]
if _VERA_ROOT + "/gizmos" not in _registered:
    nuke.pluginAppendPath(_VERA_ROOT + "/gizmos")
if _VERA_ROOT not in _registered:
    # Not reached through NUKE_PATH: register it (never twice: the call runs a folder's init.py).
    nuke.pluginAppendPath(_VERA_ROOT)
if _VERA_ROOT not in sys.path:
    sys.path.append(_VERA_ROOT)  # `import vera_nuke` in every session, even if the path came from elsewhere
