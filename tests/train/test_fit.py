"""The training loop: loss falls, exact resume, DDP on two CPU processes, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import vera.train.distributed as distributed_module
import vera.train.fit as fit_module
from vera.errors import BadInput
from vera.train.checkpoints import list_checkpoints
from vera.train.cli import main as train_main
from vera.train.config import FitConfig, load_config
from vera.train.fit import fit
from vera.train.masks import placement_mask

TINY = {"bundle": {"from": "random", "model": {"base": "vera-tiny"}, "patch": 8}, "export_dtype": "float16",
        "width": 32, "height": 32, "frames": 5, "batch": 2, "lr": 2e-3, "warmup": 2, "log_every": 2,
        "checkpoint_every": 1000, "ema": 0.9, "mask": "placement", "placement_drop": 0.5,
        "element_weight": 3.0}


def tiny(**changes) -> FitConfig:
    return FitConfig.from_dict({**TINY, **changes})


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def checkpoint_tensors(out: Path) -> dict:
    return load_file(str(list_checkpoints(out)[-1]))


@pytest.mark.slow
def test_loss_falls_on_a_tiny_run(dataset, tmp_path):
    summary = fit(tiny(steps=40, prompt_drop=0.0), dataset, tmp_path / "run", progress="none")
    log = read_log(tmp_path / "run")
    assert summary["steps"] == 40 and log[-1]["step"] == 40
    first, last = sum(r["loss"] for r in log[:3]) / 3, sum(r["loss"] for r in log[-3:]) / 3
    assert last < 0.85 * first, (first, last)
    # the exported bundle loads and holds the EMA weights, not the last raw weights
    from vera.model.bundle import load_bundle

    bundle = load_bundle(tmp_path / "run" / "bundle", device="cpu")
    ckpt = checkpoint_tensors(tmp_path / "run")
    stored = load_file(str(tmp_path / "run" / "bundle" / "transformer.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}  # export_dtype halves the bundle
    for name, value in bundle.transformer.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, ckpt[f"ema.{name}"].half().float())
    assert not all(torch.equal(ckpt[f"ema.{k}"], ckpt[f"model.{k}"]) for k in bundle.transformer.state_dict())


@pytest.mark.slow
def test_resume_continues_to_identical_weights(dataset, tmp_path):
    cfg = tiny(steps=6, prompt_drop=0.5, random_clip=True)
    fit(cfg, dataset, tmp_path / "straight", progress="none")
    fit(cfg, dataset, tmp_path / "resumed", max_steps=3, progress="none")
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["step_00000003.safetensors"]
    summary = fit(cfg, dataset, tmp_path / "resumed", progress="none")
    assert summary["steps"] == 6
    straight, resumed = checkpoint_tensors(tmp_path / "straight"), checkpoint_tensors(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:  # model, optimiser moments, EMA and RNG states
        assert torch.equal(straight[key], resumed[key]), key
    assert read_log(tmp_path / "straight")[-1]["loss"] == read_log(tmp_path / "resumed")[-1]["loss"]


def test_wall_clock_budget_stops_and_exports(dataset, tmp_path, monkeypatch):
    """A step takes 30 s on the (patched) clock; a budget of 1.5 minutes is spent after step 3: the run stops
    there, checkpoints step 3 and exports its bundle."""
    clock = [1000.0]
    real_loss = fit_module.flow_matching_loss

    def step_taking_30_s(*args, **kwargs):
        clock[0] += 30.0
        return real_loss(*args, **kwargs)

    patched_time = SimpleNamespace(monotonic=lambda: clock[0])
    monkeypatch.setattr(fit_module, "time", patched_time)
    monkeypatch.setattr(distributed_module, "time", patched_time)
    monkeypatch.setattr(fit_module, "flow_matching_loss", step_taking_30_s)
    summary = fit(tiny(steps=10_000), dataset, tmp_path / "run", max_minutes=1.5, progress="none")
    assert summary["stopped_by_clock"] and summary["steps"] == 3
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000003.safetensors"]
    assert (tmp_path / "run" / "bundle" / "bundle.json").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 3


def test_placement_mask_is_the_grown_bounding_box():
    alpha = torch.zeros(2, 10, 12).numpy()
    alpha[0, 3:5, 4:7] = 0.8
    boxes = placement_mask(alpha, margin=1)
    assert boxes[0, 2:6, 3:8].all() and boxes[0].sum() == 4 * 5
    assert boxes[1].sum() == 0  # no element on that frame: no placement


def test_config_errors_are_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 10\nfrmes: 5\n")
    code = train_main(["fit", "--config", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "frmes" in err and "Traceback" not in err
    good = tmp_path / "good.yaml"
    good.write_text("steps: 10\nframes: 9\nloss_weights: {alpha: 2.0}\n")
    assert load_config(good).loss_weights == {"alpha": 2.0}
    with pytest.raises(BadInput, match="4k\\+1"):
        FitConfig.from_dict({"frames": 4})
