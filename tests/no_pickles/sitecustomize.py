"""Imported at interpreter start-up by every worker of the no-pickle tests (tests/engine/test_launch.py,
tests/train/test_train_loader.py put this folder first on PYTHONPATH). In a worker, torch's object collectives
(which pickle on one side and unpickle on the other) raise, so a run passes only if what its ranks exchange is
plain tensors."""

import os

if "RANK" in os.environ:
    import torch.distributed as dist

    def _refused(*args, **kwargs):
        raise RuntimeError("a pickled object collective was used (the test forbids them)")

    for name in ("broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
                 "send_object_list", "recv_object_list"):
        setattr(dist, name, _refused)
