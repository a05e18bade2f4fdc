"""Imported at interpreter start-up by every worker of tests/engine/test_launch.py's failure test (this folder is put first
on PYTHONPATH there; Python imports `sitecustomize` from the path when it starts). On rank 1 only, the serving loop
raises torch's out-of-memory error, as a GPU that runs out of memory does."""

import os

if os.environ.get("RANK") == "1":
    import torch

    import vera.workers

    def _out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (raised by the test on rank 1)")

    vera.workers._follow = _out_of_memory
