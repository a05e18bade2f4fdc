"""Training on several gloo CPU processes against one process: DDP (test_fit's and test_train_loader's tiny
runs), FSDP2, Ulysses sequence parallelism and hybrid sharding over two "nodes"; sharded checkpoints resumed on
another process count; `vera-train export` of a sharded checkpoint rendering through `vera-render run`. The
two-process runs share one torchrun launch (`two_process_runs`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.distributed import TCPStore

from vera.cli import main as vera_render_main
from vera.errors import BadInput
from vera.train.checkpoints import list_checkpoints
from vera.train.config import FitConfig
from vera.train.export import export
from vera.train.fit import fit

import train_ranks
from test_fit import TINY as FIT_TINY
from test_train_loader import TINY as LOADER_TINY
from test_train_loader import final_tensors, write_public_train_set

# test_fit's tiny run, sharded, with a global batch (so one and two processes train on the same samples)
SHARDED = {"bundle": {"from": "random", "model": {"base": "vera-tiny"}, "patch": 8}, "export_dtype": "float32",
           "width": 32, "height": 32, "frames": 5, "global_batch": 2, "lr": 2e-3, "warmup": 2, "log_every": 1,
           "checkpoint_every": 10, "keep_checkpoints": 2, "ema": 0.9, "mask": "placement",
           "placement_drop": 0.5, "element_weight": 3.0, "steps": 20, "parallel": "fsdp"}
# Two processes reduce-scatter the gradient of their half batches; one process takes the mean of the whole
# batch. The sums round in a different order (float32, ~1e-7 relative per step) and AdamW keeps the updates
# ~lr in size, so 20 steps drift by a few 1e-6 (measured 2.9e-6 in weights, 4.8e-7 in logged loss).
WEIGHT_ATOL, LOSS_ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def public_set(tmp_path_factory):
    """test_train_loader's public-format records (two clip lengths at two sizes)."""
    return write_public_train_set(tmp_path_factory.mktemp("public"))


@pytest.fixture(scope="module")
def two_process_runs(dataset, public_set, one_process_run, tmp_path_factory):
    """The module's runs on 2 gloo processes, in one torchrun launch (tests/train_ranks.py): "fsdp", SHARDED's 20
    steps (checkpoints at 10 and 20); "sp", 10 steps as one Ulysses group; "resumed", one_process_run stopped at
    step 10 and resumed here; "ddp", test_fit's run at batch 1 a process; "loader", test_train_loader's with a
    reader worker a process and torch's object collectives (pickles) refused (tests/no_pickles: the bucket layout
    travels as tensors). The sharded runs' checkpoints are torch.distributed.checkpoint's, which plans with them."""
    folder = tmp_path_factory.mktemp("two")
    runs = {"fsdp": (SHARDED, dataset, folder / "fsdp"),
            "sp": ({**SHARDED, "steps": 10, "checkpoint_every": 1000, "sequence_parallel": 2}, dataset,
                   folder / "sp"),
            "resumed": (SHARDED, dataset, stopped_at_step_10(one_process_run, folder / "resumed")),
            "ddp": ({**FIT_TINY, "steps": 3, "batch": 1}, dataset, folder / "ddp"),
            "loader": ({**LOADER_TINY, "steps": 3, "batch": 1, "num_workers": 1}, public_set, folder / "loader")}
    return launch_on_two_processes(runs, folder, no_pickles={"loader"})


@pytest.fixture(scope="module")
def two_process_run(two_process_runs):
    """20 sharded steps on 2 gloo processes (checkpoints at 10 and 20)."""
    return two_process_runs["fsdp"]


@pytest.fixture(scope="module")
def one_process_run(dataset, tmp_path_factory):
    """The same 20 steps in this process (checkpoints at 10 and 20): the reference both directions compare to."""
    out = tmp_path_factory.mktemp("one") / "run"
    fit(FitConfig.from_dict(SHARDED), dataset, out, progress="none")
    return out


def launch_on_two_processes(runs: dict, folder: Path, no_pickles=()) -> dict:
    """`vera-train fit` of each {name: (config, data, run folder)} on 2 gloo processes, one after another in one
    torchrun launch (those named in `no_pickles` without torch's object collectives); returns {name: folder}."""
    jobs = []
    for name, (config, data, out) in runs.items():
        path = folder / f"{name}_config.json"
        path.write_text(json.dumps(config))
        jobs.append({"argv": ["fit", "--config", str(path), "--data", str(data), "--out", str(out), "--progress",
                              "none"], "no_pickles": name in no_pickles})
    train_ranks.launch(jobs, folder)
    return {name: out for name, (_, _, out) in runs.items()}


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def bundle_weights(run: Path) -> dict:
    return load_file(str(run / "bundle" / "transformer.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=WEIGHT_ATOL, msg=key)


def stopped_at_step_10(run: Path, resumed: Path) -> Path:
    """A run folder holding only what `run` had at step 10 (its config, initial bundle and step-10 checkpoint)."""
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.json", resumed)
    shutil.copytree(run / "init_bundle", resumed / "init_bundle")
    shutil.copytree(run / "checkpoints" / "step_00000010", resumed / "checkpoints" / "step_00000010")
    return resumed


def assert_continues(resumed: Path, uninterrupted: Path) -> None:
    """The resumed run logged steps 11-20 only (it did not start over), as the uninterrupted run did them."""
    tail = losses(resumed)
    assert len(tail) == 10
    assert max(abs(a - b) for a, b in zip(tail, losses(uninterrupted)[10:])) <= LOSS_ATOL
    assert_same_weights(bundle_weights(resumed), bundle_weights(uninterrupted))


@pytest.mark.slow
def test_two_process_fsdp_equals_one_process(two_process_run, one_process_run):
    checkpoints = list_checkpoints(two_process_run)
    assert [p.name for p in checkpoints] == ["step_00000010", "step_00000020"]
    # each rank wrote its own shard files: the folder is not one consolidated file
    assert len(list(checkpoints[-1].glob("shard-*.safetensors"))) == 2
    two, one = losses(two_process_run), losses(one_process_run)
    assert len(two) == len(one) == 20
    assert max(abs(a - b) for a, b in zip(two, one)) <= LOSS_ATOL
    assert one[-1] < one[0]  # it trains
    assert_same_weights(bundle_weights(two_process_run), bundle_weights(one_process_run))


@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_on_one(two_process_run, dataset, tmp_path):
    """Stopped at step 10 on two processes, resumed on one: continues as the uninterrupted run."""
    resumed = stopped_at_step_10(two_process_run, tmp_path / "resumed")
    summary = fit(FitConfig.from_dict(SHARDED), dataset, resumed, progress="none")
    assert summary["steps"] == 20
    assert_continues(resumed, two_process_run)


@pytest.mark.slow
def test_checkpoint_of_one_process_resumes_on_two(one_process_run, two_process_runs):
    """The other direction (docs/training.md: the reader re-slices the shards for whatever number of processes
    resumes): stopped at step 10 on one process, resumed under torchrun on two, it continues as the uninterrupted
    one-process run."""
    assert_continues(two_process_runs["resumed"], one_process_run)


@pytest.mark.slow
def test_export_of_a_sharded_checkpoint_renders(two_process_run, tmp_path):
    from bundles import base_spec, write_plates, write_spec

    exported = export(list_checkpoints(two_process_run)[-1], tmp_path / "bundle")
    assert_same_weights(load_file(str(exported / "transformer.safetensors")), bundle_weights(two_process_run))
    shot = tmp_path / "shot"
    write_plates(shot)
    spec = write_spec(shot, base_spec(exported))
    assert vera_render_main(["run", str(spec), "--progress", "none"]) == 0
    assert len(list((shot / "out").glob("*.exr"))) == 13


@pytest.mark.slow
def test_export_without_ema_asks_for_raw(dataset, tmp_path):
    fit(FitConfig.from_dict({**SHARDED, "ema": None, "steps": 2}), dataset, tmp_path / "run", progress="none")
    with pytest.raises(BadInput, match="--raw"):
        export(list_checkpoints(tmp_path / "run")[-1], tmp_path / "bundle")
    assert (export(list_checkpoints(tmp_path / "run")[-1], tmp_path / "bundle", use_ema=False)
            / "bundle.json").is_file()


@pytest.mark.parametrize("change, message", [({"parallel": "zero3"}, "parallel must be one of"),
                                             ({"global_batch": 0}, "global_batch must be positive")])
def test_parallel_settings_are_checked(change, message):
    with pytest.raises(BadInput, match=message):
        FitConfig.from_dict({**SHARDED, **change})


def test_global_batch_must_split_over_the_processes():
    with pytest.raises(BadInput, match="does not split over 4 processes"):
        FitConfig.from_dict({**SHARDED, "global_batch": 6}).batch_per_process(4)


@pytest.mark.slow
def test_sequence_parallel_training_equals_one_process(two_process_runs, dataset, tmp_path):
    """2 processes as one Ulysses group (each holding half of every stream's tokens, FSDP over both) train like
    one process on the same samples; the same tolerance as FSDP alone (reduction order)."""
    config = {**SHARDED, "steps": 10, "checkpoint_every": 1000}
    fit(FitConfig.from_dict(config), dataset, tmp_path / "one", progress="none")
    sp, one = losses(two_process_runs["sp"]), losses(tmp_path / "one")
    assert len(sp) == len(one) == 10
    assert max(abs(a - b) for a, b in zip(sp, one)) <= LOSS_ATOL
    assert_same_weights(bundle_weights(two_process_runs["sp"]), bundle_weights(tmp_path / "one"))


def test_sequence_parallel_needs_fsdp():
    with pytest.raises(BadInput, match="sequence_parallel must be 1"):
        FitConfig.from_dict({**SHARDED, "parallel": "ddp", "sequence_parallel": 2})


@pytest.mark.slow
def test_two_nodes_through_rendezvous_train_hybrid_sharded_as_one_process(dataset, tmp_path):
    """Two torchrun launchers (two "nodes" of one process each) meet through the c10d rendezvous; parallel hsdp
    then replicates across the nodes and shards inside each (here: 1 process per node). Same result as one."""
    config = {**SHARDED, "steps": 6, "checkpoint_every": 1000, "parallel": "hsdp"}
    path = tmp_path / "hsdp.json"
    path.write_text(json.dumps(config))
    # The rendezvous store lives in this process on a port the OS picks and stays bound for the whole run (no
    # window for another program to take it); both launchers join it as clients (is_host=false).
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    nodes = [subprocess.Popen(
        [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank), "--rdzv-backend",
         "c10d", "--rdzv-endpoint", f"127.0.0.1:{store.port}", "--rdzv-conf", "is_host=false",
         "--rdzv-id", "vera-test", "-m", "vera.train.cli", "fit",
         "--config", str(path), "--data", str(dataset), "--out", str(tmp_path / "hsdp"), "--progress", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    fit(FitConfig.from_dict({**config, "parallel": "fsdp"}), dataset, tmp_path / "one", progress="none")
    assert max(abs(a - b) for a, b in zip(losses(tmp_path / "hsdp"), losses(tmp_path / "one"))) <= LOSS_ATOL
    assert_same_weights(bundle_weights(tmp_path / "hsdp"), bundle_weights(tmp_path / "one"))


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(two_process_runs, dataset, tmp_path):
    """test_fit's run: 2 CPU processes x batch 1 == 1 process x batch 2: the same samples, noise and update."""
    ddp = two_process_runs["ddp"]
    fit(FitConfig.from_dict({**FIT_TINY, "steps": 3, "batch": 2}), dataset, tmp_path / "single", progress="none")
    two, single = final_tensors(ddp), final_tensors(tmp_path / "single")
    for key in (k for k in single if k.startswith("model.")):
        torch.testing.assert_close(two[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    assert json.loads((ddp / "summary.json").read_text())["steps"] == 3


@pytest.mark.slow
def test_two_processes_with_workers_and_buckets_train_as_one(two_process_runs, public_set, tmp_path):
    """test_train_loader's run: 2 gloo processes x batch 1, each with a worker, == 1 in-process reader x batch 2
    (same samples per bucket and step; DDP's averaged gradients equal the whole batch's to float rounding)."""
    ddp = two_process_runs["loader"]
    fit(FitConfig.from_dict({**LOADER_TINY, "steps": 3, "batch": 2}), public_set, tmp_path / "one", progress="none")
    # the loss (mean over both ranks) is the one process's at every step: the same samples, noise and drops
    np.testing.assert_allclose(losses(ddp), losses(tmp_path / "one"), rtol=1e-6)
    # weights to 1e-4 (lr 2e-3): AdamW divides by the root of the second moment, so where a gradient element is
    # near 0 the all-reduce's rounding moves its update by a visible fraction of lr (measured: one element of
    # 24,576 in composite.head by 2.5e-5, everything else below 6e-6)
    two, one = final_tensors(ddp), final_tensors(tmp_path / "one")
    for key in (k for k in one if k.startswith("model.")):
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-4, msg=key)
