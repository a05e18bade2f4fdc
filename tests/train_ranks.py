"""One rank of several `vera-train` runs in one torchrun launch (tests/train/test_fit_sharded.py,
tests/train/test_distill.py): the commands of a job list, one after another, in one gloo process group.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/train_ranks.py JOBS.json

JOBS.json is a list of `vera-train` argument lists. Each run joins the group this script makes and leaves it
open (vera.train.distributed.init_distributed), as `torchrun -m vera.train.cli ...` once per command would run
them, without starting and importing the processes again for each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from vera.train.cli import main


def run(jobs: Path) -> int:
    dist.init_process_group("gloo")
    for argv in json.loads(jobs.read_text()):
        code = main(argv)
        if code:
            return code  # the launcher stops the other rank
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
