"""The Vera network: parity with diffusers' Wan2.1 DiT, joint attention, sizes, conditioning, mask packing."""

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel

from vera.errors import BadInput
from vera.model.checkpoint import stream_state_from_diffusers
from vera.model.configs import CONFIGS, STREAMS, VeraConfig, get_config
from vera.model.dit import VeraMoT, build_on_meta, count_parameters, pack_mask, stream_parameter_count

# Small but complete: 2 layers, 2 heads of 24 (RoPE split 8/8/8), Wan's 16 latent channels.
SMALL = VeraConfig(dim=48, ffn_dim=64, num_heads=2, num_layers=2, z_dim=16, mask_channels=4, text_dim=16,
                   freq_dim=32)


def diffusers_wan(cfg: VeraConfig, seed: int) -> WanTransformer3DModel:
    """A diffusers Wan2.1 T2V DiT of cfg's size with random weights (biases and norms perturbed too)."""
    torch.manual_seed(seed)
    wan = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.z_dim, out_channels=cfg.z_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, eps=cfg.eps).eval()
    with torch.no_grad():
        for p in wan.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return wan


def vera_from_diffusers(cfg: VeraConfig, wans) -> VeraMoT:
    """Each stream gets one diffusers model's weights (renamed by our key functions); conditioning weights 0."""
    model = VeraMoT(cfg).eval()
    state = {}
    for name, wan in zip(STREAMS, wans):
        stream = stream_state_from_diffusers(wan.state_dict())
        patch = stream["patch_embedding.weight"]
        stream["patch_embedding.weight"] = torch.cat(
            [patch, torch.zeros(patch.shape[0], cfg.in_dim - cfg.z_dim, *patch.shape[2:])], dim=1)
        state.update({f"{name}.{key}": value for key, value in stream.items()})
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def parity_models():
    wans = [diffusers_wan(SMALL, seed) for seed in range(len(STREAMS))]
    return wans, vera_from_diffusers(SMALL, wans)


def inputs(cfg, batch=2, frames=3, height=4, width=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, len(STREAMS), cfg.in_dim, frames, height, width, generator=gen)
    t = torch.tensor([12.5, 730.0])[:batch]
    context = torch.randn(batch, 7, cfg.text_dim, generator=gen)
    return x, t, context


def test_isolated_streams_equal_diffusers_wan(parity_models):
    wans, model = parity_models
    x, t, context = inputs(SMALL)  # the conditioning channels are random: zero weights must ignore them
    with torch.no_grad():
        out = model(x, t, context, isolate_streams=True)
        assert out.shape == (2, 3, SMALL.out_dim, 3, 4, 6)
        for i, wan in enumerate(wans):
            ref = wan(x[:, i, :SMALL.z_dim], t, context, return_dict=False)[0]
            assert ref.abs().max() > 0.1  # a real signal, not zeros
            torch.testing.assert_close(out[:, i], ref, rtol=0, atol=1e-5)


def test_joint_attention_couples_the_streams(parity_models):
    _, model = parity_models
    x, t, context = inputs(SMALL)
    changed = x.clone()
    changed[:, 0, :SMALL.z_dim] += torch.randn_like(changed[:, 0, :SMALL.z_dim])  # only the edit stream's latent
    with torch.no_grad():
        joint, joint_changed = model(x, t, context), model(changed, t, context)
        alone, alone_changed = (model(x, t, context, isolate_streams=True),
                                model(changed, t, context, isolate_streams=True))
    for i in (1, 2):
        assert (joint[:, i] - joint_changed[:, i]).abs().max() > 1e-3
        torch.testing.assert_close(alone[:, i], alone_changed[:, i], rtol=0, atol=0)
    # and the joint result is not the isolated one
    assert (joint - alone).abs().max() > 1e-3


def test_fresh_model_ignores_conditioning_until_trained():
    torch.manual_seed(1)
    model = VeraMoT(get_config("vera-tiny")).eval()
    cfg = model.cfg
    x, t, context = inputs(cfg, frames=2)
    other = x.clone()
    other[:, :, cfg.z_dim:] = torch.rand_like(other[:, :, cfg.z_dim:])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, context), model(other, t, context), rtol=0, atol=0)
        for stream in model.streams:
            assert stream.patch_embedding.weight[:, cfg.z_dim:].abs().max() == 0
            assert stream.patch_embedding.weight[:, :cfg.z_dim].abs().max() > 0


@pytest.mark.parametrize("name, wan_sizes", [
    ("vera-1.3b", dict(num_attention_heads=12, ffn_dim=8960, num_layers=30)),
    ("vera-14b", dict(num_attention_heads=40, ffn_dim=13824, num_layers=40)),
])
def test_parameter_counts_are_three_wan_streams_plus_conditioning(name, wan_sizes):
    cfg = CONFIGS[name]
    with torch.device("meta"):
        wan = WanTransformer3DModel(**wan_sizes)  # diffusers' defaults are Wan2.1's shared settings
    wan_count = count_parameters(wan)
    assert wan_count == {"vera-1.3b": 1_418_996_800, "vera-14b": 14_288_491_584}[name]
    model = build_on_meta(cfg)
    assert all(p.is_meta for p in model.parameters())
    conditioning = cfg.dim * (cfg.in_dim - cfg.z_dim) * 4
    for name in STREAMS:
        assert stream_parameter_count(model, name) == wan_count + conditioning
    assert count_parameters(model) == 3 * (wan_count + conditioning)


def test_bfloat16_forward_keeps_float32_islands():
    torch.manual_seed(2)
    model = VeraMoT(get_config("vera-tiny")).eval()
    x, t, context = inputs(model.cfg, frames=2)
    with torch.no_grad():
        ref = model(x, t, context)
        out = model.to(torch.bfloat16)(x.bfloat16(), t, context.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(3)
    model = VeraMoT(get_config("vera-tiny"))
    x, t, context = inputs(model.cfg, frames=2)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        model(x, t, context).square().mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0]["blocks.0.alpha.self_attn.q.weight"].abs().max() > 0
    assert grads[0]["edit.time_embedding.0.weight"].abs().max() > 0  # reaches the embedders through the layers
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_bad_input_shapes_are_named():
    model = VeraMoT(get_config("vera-tiny"))
    x, t, context = inputs(model.cfg, frames=2)
    with pytest.raises(ValueError, match="in_dim|36"):
        model(x[:, :, :16], t, context)
    with pytest.raises(ValueError, match="multiple of the patch"):
        model(x[..., :5], t, context)


def test_pack_mask_groups_frames_like_wan_i2v():
    frames, height, width = 9, 16, 24
    mask = torch.zeros(1, 1, frames, height, width)
    for f in range(frames):
        mask[0, 0, f] = f / 10
    mask[0, 0, 5, :8, :8] = 1.0  # one corner of frame 5 fully masked
    packed = pack_mask(mask, temporal_stride=4, spatial_stride=8)
    assert packed.shape == (1, 4, 3, 2, 3)
    # latent frame 0 = frame 0 four times; latent frame 1 = frames 1..4; latent frame 2 = frames 5..8
    torch.testing.assert_close(packed[0, :, 0, 1, 1], torch.zeros(4))
    torch.testing.assert_close(packed[0, :, 1, 1, 1], torch.tensor([0.1, 0.2, 0.3, 0.4]))
    torch.testing.assert_close(packed[0, :, 2, 1, 1], torch.tensor([0.5, 0.6, 0.7, 0.8]))
    assert packed[0, 0, 2, 0, 0] == 1.0  # the masked corner covers that whole latent cell
    # the latent shape may be given instead of the strides
    torch.testing.assert_close(pack_mask(mask, (16, 3, 2, 3)), packed)
    torch.testing.assert_close(pack_mask(mask, latent_shape=(3, 2, 3)), packed)
    with pytest.raises(ValueError, match="4k\\+1"):
        pack_mask(mask[:, :, :8])


def test_partial_coverage_is_the_area_mean():
    mask = torch.zeros(1, 1, 1, 8, 8)
    mask[..., :4, :] = 1.0
    assert pack_mask(mask, 4, 8).flatten().tolist() == [0.5] * 4


def test_config_round_trips_through_json_and_rejects_unknown_fields():
    for cfg in CONFIGS.values():
        data = json.loads(json.dumps(cfg.to_dict()))
        assert VeraConfig.from_dict(data) == cfg
    assert CONFIGS["vera-1.3b"].in_dim == 36 and CONFIGS["vera-1.3b"].out_dim == 16
    with pytest.raises(BadInput, match="wibble"):
        VeraConfig.from_dict({**CONFIGS["vera-tiny"].to_dict(), "wibble": 1})
    with pytest.raises(BadInput, match="in_dim"):
        VeraConfig.from_dict({**CONFIGS["vera-tiny"].to_dict(), "in_dim": 7})
    with pytest.raises(BadInput, match="head dim"):
        VeraConfig(dim=10, ffn_dim=8, num_heads=5, num_layers=1)
    with pytest.raises(BadInput, match="vera-tiny"):
        get_config("vera-huge")


def relative_mean_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).abs().mean() / ref.abs().mean())


class Bf16MatmulsOnly(torch.overrides.TorchFunctionMode):
    """Wan2.1's bf16 recipe by construction: every Linear, convolution and attention computes on bf16-rounded
    inputs and weights, and everything else (residual stream, norms, modulation) stays float32."""

    ROUNDED = {F.linear, F.conv3d, F.scaled_dot_product_attention}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.ROUNDED:
            low = lambda a: a.bfloat16() if torch.is_tensor(a) and a.is_floating_point() else a
            return func(*map(low, args), **{k: low(v) for k, v in kwargs.items()}).float()
        return func(*args, **kwargs)


def test_bf16_recipe_matches_wans_float32_residual_at_depth():
    """bf16 weights must err no more than 1.5x Wan2.1's recipe (bf16 matmuls, float32 residual stream) at a real
    model's depth; rounding the residual to bf16 after every block (the old recipe) erred 2.5x more at 12 layers."""
    cfg = VeraConfig(dim=96, ffn_dim=192, num_heads=2, num_layers=12, text_dim=32, freq_dim=32)
    torch.manual_seed(5)
    model = VeraMoT(cfg).eval()
    x, t, context = inputs(cfg, frames=2, height=4, width=6)
    with torch.no_grad():
        ref = model(x, t, context)
        with Bf16MatmulsOnly():
            wan_recipe = model(x, t, context)
        ours = model.to(torch.bfloat16)(x, t, context)
    wan_error, our_error = relative_mean_error(wan_recipe, ref), relative_mean_error(ours, ref)
    assert 0 < wan_error < 0.05
    assert our_error <= 1.5 * wan_error, (our_error, wan_error)


def test_checkpoint_written_before_the_joint_block_restructure_loads():
    """The embedded demo transformer is stored stream-first, the layout of the model code before JointBlock
    existed; its outputs on fixed inputs were recorded by that code (commit 223dfa8's parent, run from a
    checkout of it on core/vera/assets/demo/transformer.safetensors; re-recorded when the demo was retrained)
    in tests/data/demo_transformer_forward.safetensors."""
    from pathlib import Path

    from safetensors.torch import load_file

    from vera.model.checkpoint import load_vera

    recorded = load_file(Path(__file__).parents[1] / "data" / "demo_transformer_forward.safetensors")
    model = load_vera(Path(__file__).parents[2] / "core" / "vera" / "assets" / "demo" / "transformer.safetensors")
    with torch.no_grad():
        out = model(recorded["x"], recorded["t"], recorded["context"])
        isolated = model(recorded["x"], recorded["t"], recorded["context"], isolate_streams=True)
    torch.testing.assert_close(out, recorded["out"], rtol=0, atol=1e-5)
    # isolation was a block-diagonal mask then, separate attentions now: equal up to float32 summation order
    torch.testing.assert_close(isolated, recorded["isolated"], rtol=0, atol=1e-5)
