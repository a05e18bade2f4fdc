"""torch's object collectives (they pickle on one side and unpickle on the other) made to raise: for the whole
process (`refuse`, what sitecustomize.py does in a worker) or for one run (`refused`, tests/train_ranks.py)."""

from contextlib import contextmanager

import torch.distributed as dist

OBJECT_COLLECTIVES = ("broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
                      "send_object_list", "recv_object_list")


def _refused(*args, **kwargs):
    raise RuntimeError("a pickled object collective was used (the test forbids them)")


def refuse() -> None:
    for name in OBJECT_COLLECTIVES:
        setattr(dist, name, _refused)


@contextmanager
def refused():
    kept = {name: getattr(dist, name) for name in OBJECT_COLLECTIVES}
    refuse()
    try:
        yield
    finally:
        for name, function in kept.items():
            setattr(dist, name, function)
