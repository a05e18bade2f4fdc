"""One rank of several `vera-train` runs in one torchrun launch (tests/train/test_fit_sharded.py,
tests/train/test_distill.py): the commands of a job list, one after another, in one gloo process group.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/train_ranks.py JOBS.json

JOBS.json is a list of {"argv": vera-train's arguments, "no_pickles": true to refuse torch's object collectives
during that run (tests/no_pickles)}. Each run joins the group this script makes and leaves it open
(vera.train.distributed.init_distributed), as `torchrun -m vera.train.cli ...` once per command would run them,
without starting and importing the processes again for each. `launch` starts it from a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

from no_pickles.refuse import refused
from vera.train.cli import main


def run(jobs: Path) -> int:
    dist.init_process_group("gloo")
    for job in json.loads(jobs.read_text()):
        with refused() if job.get("no_pickles") else contextlib.nullcontext():
            code = main(job["argv"])
        if code:
            return code  # the launcher stops the other rank
    dist.destroy_process_group()
    return 0


def launch(jobs: list[dict], folder: Path) -> None:
    """Run `jobs` (this module's JOBS.json entries) on 2 gloo processes in one torchrun launch; fails the calling
    test with the launch's error output if any job fails."""
    (folder / "jobs.json").write_text(json.dumps(jobs))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
         str(folder / "jobs.json")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
