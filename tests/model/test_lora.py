"""LoRA fine-tuning for studios: adapters on the demo bundle, a small file, base weights untouched, and a render
that changes with the adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vera.errors import BadInput
from vera.model.bundle import load_bundle
from vera.model.bundle_manifest import DEMO_PATH
from vera.model.lora import TARGETS, lora_settings, target_pattern
from vera.train.config import FitConfig
from vera.train.fit import fit

LORA_RUN = {"bundle": {"from": str(DEMO_PATH)}, "width": 64, "height": 48, "frames": 5, "batch": 2, "steps": 6,
            "lr": 1e-3, "warmup": 1, "log_every": 2, "checkpoint_every": 1000, "ema": None, "mask": "placement",
            "lora": {"rank": 4, "alpha": 4}, "export_dtype": "float32"}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from vera.train.synth import generate

    root = tmp_path_factory.mktemp("lora")
    generate(root / "shots", 4, seed=11, size=(64, 48), frames=5)
    summary = fit(FitConfig.from_dict(LORA_RUN), root / "shots", root / "run", progress="none")
    return root / "run", summary


@pytest.mark.slow
def test_adapter_file_is_small_and_base_weights_unchanged(lora_run):
    run, summary = lora_run
    bundle = run / "bundle"
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["lora"] == {"path": "lora.safetensors", "scale": 1.0}
    adapter = bundle / "lora.safetensors"
    base_bytes = (DEMO_PATH / "transformer.safetensors").stat().st_size
    assert adapter.stat().st_size < 0.1 * base_bytes  # rank 4 on a dim-192 model: a few percent of the weights
    tensors = load_file(str(adapter))
    assert all(".lora_A." in k or ".lora_B." in k for k in tensors)
    assert any(t.abs().max() > 0 for k, t in tensors.items() if ".lora_B." in k)  # B starts at 0: it trained
    base, exported = load_file(str(DEMO_PATH / "transformer.safetensors")), load_file(
        str(bundle / "transformer.safetensors"))
    assert base.keys() == exported.keys()
    assert all(torch.equal(base[k].float(), exported[k].float()) for k in base)


@pytest.mark.slow
def test_render_with_the_adapter_differs_from_without(lora_run):
    from bundles import base_spec, write_plates, write_spec

    run, _ = lora_run
    from vera.pipeline import render_frames
    from vera.shot import ShotSpec

    outputs = {}
    for name, bundle in (("with", run / "bundle"), ("without", DEMO_PATH)):
        shot = run.parent / f"shot_{name}"
        write_plates(shot, 1001, 1005)
        spec = ShotSpec.load(write_spec(shot, {**base_spec(bundle), "plate": {
            "path": "plate.####.exr", "first": 1001, "last": 1005, "colorspace": "sRGB - Texture"},
            "sampler": {"steps": 3}, "window": {"frames": 5, "overlap": 0}}))
        loaded = load_bundle(bundle, device="cpu")
        outputs[name] = render_frames(loaded, spec, list(range(1001, 1006)), seed=3)
    diff = max(float(np.abs(outputs["with"][f][0] - outputs["without"][f][0]).max()) for f in outputs["with"])
    assert diff > 1e-3


@pytest.mark.slow
def test_merged_adapter_equals_the_adapted_network(lora_run):
    """load_bundle merges W + B A into the weights: the same function as the unmerged adapted model."""
    from vera.model.lora import add_lora

    run, _ = lora_run
    merged = load_bundle(run / "bundle", device="cpu").transformer
    adapted = load_bundle(DEMO_PATH, device="cpu").transformer
    add_lora(adapted, 4, 4)
    from peft import set_peft_model_state_dict

    from vera.model.dit import block_first_key

    set_peft_model_state_dict(adapted, {block_first_key(k): v for k, v in
                                        load_file(str(run / "bundle" / "lora.safetensors")).items()})
    cfg = merged.cfg
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, cfg.in_dim, 2, 4, 6, generator=gen)
    t, context = torch.tensor([400.0]), torch.randn(1, 5, cfg.text_dim, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t, context), adapted(x, t, context), rtol=0, atol=1e-5)
    assert type(merged.blocks[0].edit.self_attn.q) is torch.nn.Linear  # no adapter wrapper left at render time


def test_lora_settings_are_checked():
    assert target_pattern(TARGETS).startswith(r"blocks\.\d+\.")
    with pytest.raises(BadInput, match="unknown target"):
        lora_settings(4, targets=["self_attn.x"])
    with pytest.raises(BadInput, match="rank must be"):
        lora_settings(0)
    with pytest.raises(BadInput, match="lora must be"):
        FitConfig.from_dict({**LORA_RUN, "lora": {"rank": 0}})
