"""Promises of docs/training.md that had no test: `keep_checkpoints` pruning, an interrupted `step_N.partial/`
ignored on resume, `--no-resume`, `activation_checkpointing: true` and gradient clipping (tiny runs on the CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import vera.model.dit as dit
from vera.model.configs import CONFIGS
from test_fit import TINY, read_log, tiny
from vera.train.cli import main as vera_train
from vera.train.checkpoints import list_checkpoints
from vera.train.fit import fit


def test_pruning_partial_checkpoints_and_no_resume(dataset, tmp_path):
    out = tmp_path / "run"
    fit(tiny(steps=4, checkpoint_every=1, keep_checkpoints=2), dataset, out, progress="none")
    # "checkpoints/ (the last keep_checkpoints)"
    assert [p.name for p in list_checkpoints(out)] == ["step_00000003.safetensors", "step_00000004.safetensors"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000003.safetensors", "step_00000004.safetensors"]

    # an interrupted sharded checkpoint (never renamed from step_N.partial/) is ignored on resume
    partial = out / "checkpoints" / "step_00000009.partial"
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"half written")
    summary = fit(tiny(steps=5, checkpoint_every=1, keep_checkpoints=2), dataset, out, progress="none")
    assert summary["steps"] == 5
    assert [r["step"] for r in read_log(out)] == [2, 4, 5]  # resumed at 4, not at 9 nor from 0

    # --no-resume starts over even though checkpoints exist
    config = tmp_path / "again.json"
    config.write_text(json.dumps({**TINY, "steps": 2}))
    assert vera_train(["fit", "--config", str(config), "--data", str(dataset), "--out", str(out), "--no-resume",
                       "--progress", "none"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert [r["step"] for r in read_log(out)][-1:] == [2]


def test_activation_checkpointing_recomputes_each_block_and_trains_the_same(dataset, tmp_path, monkeypatch):
    """training.md: `activation_checkpointing: true` recomputes each joint block in the backward pass: every
    block runs its forward twice per training forward (once more in backward), and the weights come out the same."""
    runs = {}  # block -> forwards with autograd on, for the run in progress
    real = dit.JointBlock.forward

    def counted(self, *args, **kwargs):
        if torch.is_grad_enabled():
            runs[self] = runs.get(self, 0) + 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(dit.JointBlock, "forward", counted)
    fit(tiny(steps=2, activation_checkpointing=True), dataset, tmp_path / "ckpt", progress="none")
    recomputed = sorted(runs.values())
    runs.clear()
    fit(tiny(steps=2), dataset, tmp_path / "plain", progress="none")
    plain = sorted(runs.values())
    layers = CONFIGS["vera-tiny"].num_layers
    assert len(plain) == len(recomputed) == layers and plain[0] > 0, (plain, recomputed)
    assert recomputed == [2 * n for n in plain], f"block forwards with checkpointing {recomputed}, without {plain}"
    a = load_file(str(list_checkpoints(tmp_path / "ckpt")[-1]))
    b = load_file(str(list_checkpoints(tmp_path / "plain")[-1]))
    for key in (k for k in a if k.startswith("model.")):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_gradients_are_clipped_to_grad_clip(dataset, tmp_path, monkeypatch):
    norms = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        before = real(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        norms.append((max_norm, float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    fit(tiny(steps=2, grad_clip=1e-3), dataset, tmp_path / "run", progress="none")
    assert [n[0] for n in norms] == [1e-3, 1e-3]
    for max_norm, before, after in norms:
        assert before > max_norm and after <= max_norm * (1 + 1e-4), (before, after)
    assert [r["grad_norm"] for r in read_log(tmp_path / "run")][-1] == pytest.approx(norms[-1][1])
