"""Imported at interpreter start-up by every worker of the no-pickle tests (tests/engine/test_launch.py puts this
folder first on PYTHONPATH). In a worker, torch's object collectives (which pickle on one side and unpickle on
the other) raise, so a run passes only if what its ranks exchange is plain tensors (refuse.py)."""

import os

if "RANK" in os.environ:
    from refuse import refuse

    refuse()
