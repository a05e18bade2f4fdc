"""Memory tiers (vera.offload): blocks streamed from CPU memory and fp8 weight storage give the resident model's
output. There is no GPU here, so streaming is run with onload device = CPU: that proves the hooks are installed
per joint block and leave the numbers alone; it cannot show the memory saved (docs/gpus.md)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vera.model.configs import VeraConfig
from vera.model.dit import JointBlock, VeraMoT
from vera.loading import load_placed_bundle
from vera.offload import apply_fp8_storage, apply_layer_offload
from vera.plan import Strategy

CONFIG = VeraConfig(dim=48, ffn_dim=96, num_heads=4, num_layers=3, z_dim=4, mask_channels=4, text_dim=32,
                    freq_dim=32, text_len=8)


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, CONFIG.in_dim, 2, 4, 8, generator=g), torch.tensor([600.0, 600.0]),
            torch.randn(2, CONFIG.text_len, CONFIG.text_dim, generator=g))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VeraMoT(CONFIG).eval().requires_grad_(False)


def test_blocks_streamed_from_cpu_equal_the_resident_model(model):
    from diffusers.hooks import HookRegistry

    offloaded = apply_layer_offload(copy.deepcopy(model), torch.device("cpu"))
    groups = {name: HookRegistry.check_if_exists_or_initialize(module).get_hook("group_offloading")
              for name, module in offloaded.named_modules()}
    blocks = [name for name, module in offloaded.named_modules() if isinstance(module, JointBlock)]
    hooked = sorted(name for name, hook in groups.items() if hook is not None)
    # one group per joint block, plus the root's group (the three streams' embedders and heads)
    assert hooked == sorted(["", *blocks])
    assert len({id(groups[name].group) for name in blocks}) == CONFIG.num_layers
    assert all(groups[name].group.modules == [offloaded.get_submodule(name)] for name in blocks)
    x, t, context = inputs()
    with torch.no_grad():
        assert torch.equal(offloaded(x, t, context), model(x, t, context))


def test_fp8_weight_storage_is_close_to_bf16(model):
    """Weights stored as float8_e4m3 (3 mantissa bits) and computed in bf16, against the same weights in bf16."""
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    fp8 = apply_fp8_storage(copy.deepcopy(model).to(torch.bfloat16))
    block = fp8.blocks[0].edit
    assert block.self_attn.q.weight.dtype == torch.float8_e4m3fn and block.ffn[2].weight.dtype == torch.float8_e4m3fn
    assert block.self_attn.norm_q.weight.dtype == torch.bfloat16  # norms and embedders are not cast (as diffusers)
    assert fp8.edit.patch_embedding.weight.dtype == torch.bfloat16
    x, t, context = inputs()
    with torch.no_grad():
        reference = model(x, t, context)
        out_bf16, out_fp8 = bf16(x, t, context).float(), fp8(x, t, context).float()
        other = VeraMoT(CONFIG).eval()(x, t, context)  # another random model: the scale of "different"
    assert block.self_attn.q.weight.dtype == torch.float8_e4m3fn  # cast back after running

    def error(a):
        return float((a - reference).abs().mean() / reference.abs().mean())

    assert error(out_bf16) < 0.01
    assert error(out_fp8) < 0.06 and error(out_fp8) < error(other) / 10


def test_parts_and_layers_render_equals_resident(tmp_path):
    """The pipeline with the VAE on the device only while it runs and the blocks streamed: the same layers."""
    from bundles import make_shot, write_plate
    from test_vae import TINY_WAN

    from vera.model.bundle import create_random_bundle, load_bundle
    from vera.model.vae import WanVAE
    from vera.pipeline import render_frames

    folder = create_random_bundle(tmp_path / "bundle", "vera-tiny", seed=3, vae=WanVAE.from_config(TINY_WAN))
    write_plate(tmp_path / "plate", 1, 5, 64, 48)
    spec = make_shot(tmp_path, folder, str(tmp_path / "plate" / "plate.####.exr"), 1, 5)
    resident = load_bundle(folder, device="cpu", cache_dir=tmp_path / "cache")
    layers = load_placed_bundle(folder, device="cpu", cache_dir=tmp_path / "cache", strategy=Strategy(memory="layers"))
    moves = []
    original_to = layers.vae.to
    layers.vae.to = lambda device=None, dtype=None: moves.append(str(device)) or original_to(device, dtype)
    a = render_frames(resident, spec, [1, 2, 3, 4, 5], seed=4)
    b = render_frames(layers, spec, [1, 2, 3, 4, 5], seed=4)
    assert moves == ["cpu", "cpu", "cpu", "cpu"]  # to the device and back, around encode and around decode
    assert all(np.array_equal(a[f][0], b[f][0]) and np.array_equal(a[f][1], b[f][1]) for f in a)
    assert layers.memory == "layers" and resident.memory == "resident"
