"""Wan2.1 LoRAs in the ecosystem's key layouts (diffusers, ComfyUI/kohya "diffusion_model.", musubi "lora_unet_"),
each written here in its own layout for the tiny config, merged into chosen streams: the merged weights equal
W + scale * alpha/rank * up @ down applied by hand, the other streams stay bit-identical, and keys that match
no layer are refused, listed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from bundles import random_bundle
from vera.errors import BadInput
from vera.model.bundle import load_bundle
from vera.model.wan_lora import lora_format, merge_wan_lora

RANK, ALPHA = 4, 2.0
# Wan's layer name -> (its musubi spelling, its diffusers spelling)
LAYERS = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
          "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
          "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj",
          "ffn.2": "ffn.net.2"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return random_bundle(tmp_path_factory.mktemp("wan_lora") / "bundle", config="vera-tiny")


def factors(model) -> dict:
    """Seeded (down, up) per Wan layer name of the first stream's blocks: (rank x in), (out x rank)."""
    g = torch.Generator().manual_seed(5)
    out = {}
    for depth in range(model.cfg.num_layers):
        for name in LAYERS:
            weight = model.get_parameter(f"blocks.{depth}.edit.{name}.weight")
            out[f"blocks.{depth}.{name}"] = (torch.randn(RANK, weight.shape[1], generator=g) * 0.1,
                                             torch.randn(weight.shape[0], RANK, generator=g) * 0.1)
    return out


def write(path, fmt: str, pairs: dict) -> None:
    """A LoRA file in `fmt`'s own key layout."""
    tensors = {}
    for layer, (down, up) in pairs.items():
        depth, name = layer.split(".", 2)[1], layer.split(".", 2)[2]
        if fmt == "non-diffusers":  # ComfyUI / kohya on Wan's original names
            stem = f"diffusion_model.{layer}"
            tensors.update({f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                            f"{stem}.alpha": torch.tensor(ALPHA)})
        elif fmt == "musubi":  # musubi-tuner: lora_unet_ + underscores
            stem = f"lora_unet_{layer.replace('.', '_')}"
            tensors.update({f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                            f"{stem}.alpha": torch.tensor(ALPHA)})
        else:  # diffusers' save_lora_weights: peft names, alpha already in the factors
            stem = f"transformer.blocks.{depth}.{LAYERS[name]}"
            tensors.update({f"{stem}.lora_A.weight": down * (ALPHA / RANK), f"{stem}.lora_B.weight": up})
    save_file(tensors, str(path))


@pytest.mark.parametrize("fmt", ["diffusers", "non-diffusers", "musubi"])
def test_each_format_merges_like_the_deltas_by_hand(bundle, tmp_path, fmt):
    base = load_bundle(bundle, device="cpu").transformer
    pairs = factors(base)
    path = tmp_path / f"{fmt}.safetensors"
    write(path, fmt, pairs)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert lora_format(f.keys()) == fmt
    model = load_bundle(bundle, device="cpu").transformer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merge_wan_lora(model, path, streams=("edit", "composite"), scale=0.7)
    after = model.state_dict()
    for layer, (down, up) in pairs.items():
        depth, name = layer.split(".", 2)[1:]
        for stream in ("edit", "composite"):
            key = f"blocks.{depth}.{stream}.{name}.weight"
            expected = before[key].double() + 0.7 * (ALPHA / RANK) * (up.double() @ down.double())
            torch.testing.assert_close(after[key].double(), expected, rtol=0, atol=1e-6, msg=key)
    untouched = [k for k in after if ".alpha." in k or not any(f".{n}." in k for n in LAYERS)]
    assert untouched and all(torch.equal(after[k], before[k]) for k in untouched)


def test_keys_that_match_nothing_are_listed(bundle, tmp_path):
    model = load_bundle(bundle, device="cpu").transformer
    pairs = factors(model)
    write(tmp_path / "good.safetensors", "non-diffusers", dict(list(pairs.items())[:1]))
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "good.safetensors"))
    tensors["diffusion_model.blocks.0.self_attn.q_img.lora_down.weight"] = torch.zeros(RANK, 32)
    tensors["diffusion_model.blocks.0.self_attn.q_img.lora_up.weight"] = torch.zeros(32, RANK)
    save_file(tensors, str(tmp_path / "odd.safetensors"))
    with pytest.raises(BadInput, match=r"odd\.safetensors: LoRA keys that match no layer.*q_img"):
        merge_wan_lora(model, tmp_path / "odd.safetensors")
    deep = {"diffusion_model.blocks.7.self_attn.q.lora_down.weight": torch.zeros(RANK, 32),
            "diffusion_model.blocks.7.self_attn.q.lora_up.weight": torch.zeros(32, RANK)}
    save_file(deep, str(tmp_path / "deep.safetensors"))  # a 14B LoRA's block 7 on a 2-block model
    with pytest.raises(BadInput, match=r"match no layer of this model: blocks\.7\.self_attn\.q \(edit\)"):
        merge_wan_lora(model, tmp_path / "deep.safetensors", streams=("edit",))


def test_a_bundle_names_its_loras_streams_and_scales(bundle, tmp_path):
    import shutil

    folder = tmp_path / "bundle"
    shutil.copytree(bundle, folder)
    base = load_bundle(folder, device="cpu").transformer.state_dict()
    write(folder / "style.safetensors", "musubi", factors(load_bundle(folder, device="cpu").transformer))
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["lora"] = [{"path": "style.safetensors", "streams": ["alpha"], "scale": 0.5}]
    (folder / "bundle.json").write_text(json.dumps(manifest))
    merged = load_bundle(folder, device="cpu").transformer.state_dict()
    changed = {k.split(".")[2] for k in merged if not torch.equal(merged[k], base[k])}
    assert changed == {"alpha"}
    manifest["lora"] = [{"path": "style.safetensors", "streams": ["matte"]}]
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BadInput, match="streams"):
        load_bundle(folder, device="cpu")
