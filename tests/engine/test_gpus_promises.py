"""Promises of docs/gpus.md that had no test: the degree refusal naming the possible degrees, sharded weights
refused with `--memory layers` / `--fp8`, `--fp8` from the command line, `torchrun ... -m vera.cli run`, and
`cuda:N` in the shot's model.device picking that card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vera.render as render
from bundles import base_spec, write_plates, write_spec
from vera.cli import main
from vera.errors import BadInput
from vera.model.bundle import load_bundle
from vera.model.configs import CONFIGS
from vera.model.dit import build_on_meta
from vera.parallel import apply_sequence_parallel, parallelize
from vera.plan import Strategy
from vera.status import status


def one_rank_mesh(size):
    """What apply_sequence_parallel asks of a 1-D DeviceMesh of `size` ranks (it refuses before any collective)."""
    return SimpleNamespace(get_group=lambda: None, size=lambda: size, get_local_rank=lambda: 0)


@pytest.mark.parametrize("config, degree, possible", [("vera-1.3b", 5, "1, 2, 3, 4, 6, 12"),
                                                      ("vera-14b", 3, "1, 2, 4, 5, 8, 10, 20, 40")])
def test_a_degree_that_does_not_divide_the_heads_names_the_possible_ones(config, degree, possible):
    """"another degree is refused (exit 2) naming the possible ones" (12 heads for 1.3B, 40 for 14B)."""
    model = build_on_meta(CONFIGS[config])
    with pytest.raises(BadInput, match=f"degree {degree} does not divide .* \\(possible degrees: {possible}\\)"):
        apply_sequence_parallel(model, one_rank_mesh(degree))


@pytest.mark.parametrize("memory, fp8", [("layers", False), ("resident", True)])
def test_sharded_weights_with_streamed_layers_or_fp8_are_refused(memory, fp8):
    """"sharded weights do not combine with --memory layers or --fp8 (refused ...)"."""
    model = build_on_meta(CONFIGS["vera-1.3b"])
    strategy = Strategy(devices=2, shard_weights=True, memory=memory, fp8_storage=fp8)
    with pytest.raises(BadInput, match="sharded weights do not combine"):
        parallelize(model, mesh=UntouchedMesh(), strategy=strategy)


class UntouchedMesh:
    """A DeviceMesh that parallelize must not reach: the refusal comes before any parallelism is applied."""

    def __getitem__(self, name):
        raise AssertionError(f"parallelize went past the refusal and used the mesh's {name!r} dimension")


def test_fp8_from_the_command_line_stores_the_weights_as_float8(tmp_path, tiny_bundle, monkeypatch):
    """`vera-render run SHOT --fp8`: the transformer the render uses holds float8 Linear weights."""
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    loaded = []
    real = render._load_bundle

    def spy(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(render, "_load_bundle", spy)
    assert main(["run", str(spec), "--window", "0", "--fp8", "--progress", "none"]) == 0
    linear_dtypes = {m.weight.dtype for m in loaded[0].transformer.blocks.modules()
                     if isinstance(m, torch.nn.Linear)}
    assert linear_dtypes == {torch.float8_e4m3fn}


@pytest.mark.slow
def test_torchrun_runs_vera_cli_run(tmp_path, tiny_bundle):
    """`torchrun --nproc-per-node N -m vera.cli run SHOT.json`: the same workers as --devices N (here 2 on gloo)."""
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "vera.cli", "run",
                           str(spec), "--progress", "none"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vera-render: 2 workers on cpu" in done.stderr
    assert status(tmp_path / "out", verify=True)["complete"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {w["status"] for w in manifest["windows"].values()} == {"done"}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_n_in_the_shot_picks_that_card(tiny_bundle):
    """gpus.md: "`--device cuda:N` in the shot's model.device picks the card" (the last card here)."""
    n = torch.cuda.device_count() - 1
    bundle = load_bundle(tiny_bundle, device=f"cuda:{n}")
    assert {p.device for p in bundle.transformer.parameters()} == {torch.device("cuda", n)}
