"""A stand-in for Nuke's `nukescripts` package: only `panels` (see tests/fake_nuke/nuke.py for the rules).

Like Nuke, `registerWidgetAsPanel` is also reachable as `nukescripts.registerWidgetAsPanel`.
"""

from . import panels
from .panels import registerWidgetAsPanel

__all__ = ["panels", "registerWidgetAsPanel"]
