"""Sharded weights (FSDP2), Ulysses sequence parallelism and CFG parallelism on several gloo processes give what
one process computes (vera.parallel). Each test is one torchrun launch of tests/parallel_worker.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def torchrun(nproc: int, tmp_path) -> dict:
    out = tmp_path / f"parallel{nproc}.json"
    path = [str(ROOT / "core"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           str(ROOT / "tests" / "parallel_worker.py"), str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 4])
def test_sharded_sequence_and_cfg_parallel_equal_one_process(nproc, tmp_path):
    results = torchrun(nproc, tmp_path)
    assert results["reference_abs_mean"] > 0.1  # a non-trivial output to compare
    gradients = {k: results.pop(k) for k in list(results) if k.endswith("/gradients")}
    # training through sharded weights (and Ulysses): FSDP's average over ranks gives one process's gradients
    assert set(gradients) == {f"fsdp{nproc}/gradients", f"sp{nproc}+fsdp/gradients"} | (
        {"cfg2+sp2+fsdp/gradients"} if nproc == 4 else set())
    assert all(error <= 1e-5 for error in gradients.values()), gradients
    loaded = {k: results.pop(k) for k in list(results) if k.endswith("/loaded")}
    # sharded weights read rank by rank from the checkpoint file (each rank only its rows)
    assert set(loaded) == {k.replace("/gradients", "/loaded") for k in gradients}
    assert all(error <= 1e-5 for error in loaded.values()), loaded
    compared = {k: v for k, v in results.items() if k not in ("reference_abs_mean", "refused")}
    expected = {f"sp{nproc}", f"fsdp{nproc}", f"sp{nproc}+fsdp", "cfg2", f"sp{nproc}+layers"} | (
        {"cfg2+sp2+fsdp"} if nproc == 4 else set())
    assert set(compared) == expected | {f"{name}/isolated" for name in expected}
    # float32; the only differences are summation orders inside one matmul/softmax (none with a changed shape)
    assert all(error <= 1e-5 for error in compared.values()), compared
    refused = results["refused"]
    assert f"degree {nproc} does not divide the model's 3 attention heads" in refused["heads"]
    assert f"degree {nproc} does not divide the 3 tokens per stream" in refused["tokens"]
