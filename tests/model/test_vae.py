"""VAEs: PatchVAE is exact; WanVAE (a tiny random AutoencoderKLWan) has the right shapes and normalisation."""

import pytest
import torch

from vera.errors import BadInput
from vera.model.vae import PatchVAE, WanVAE, build_vae, decode_matte, encode_matte

TINY_WAN = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                temperal_downsample=[False, True, True],
                latents_mean=[0.5, -1.0, 2.0, 0.0], latents_std=[2.0, 0.5, 4.0, 1.0])


def test_patch_vae_is_lossless_and_shaped():
    vae = PatchVAE(4)
    video = torch.rand(2, 3, 5, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (2, 48, 5, 4, 6) == (2, vae.z_dim, *vae.latent_shape(5, 16, 24))
    assert torch.equal(vae.decode(latents), video)
    # each latent channel is one pixel of the 4x4 block: the latents are a permutation of the pixels
    assert torch.equal(latents.flatten().sort().values, video.flatten().sort().values)
    # a pixel's block lands in the latent cell below it
    assert torch.equal(latents[0, :, 0, 1, 2].sort().values,
                       video[0, :, 0, 4:8, 8:12].flatten().sort().values)


def test_patch_vae_rejects_sizes_off_its_grid():
    with pytest.raises(BadInput, match="multiple of 4"):
        PatchVAE(4).encode(torch.zeros(1, 3, 1, 10, 16))


def test_matte_passes_as_three_equal_channels_and_returns_clamped_mean():
    vae = PatchVAE(2)
    matte = torch.rand(1, 1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(decode_matte(vae, encode_matte(vae, matte)), matte, atol=1e-6)
    # out-of-range decodes: mean of the three channels, then clamped to [0, 1]
    rgb = torch.zeros(1, 3, 1, 2, 2)
    rgb[:, 0] = torch.tensor([[3.0, 3.0], [-0.5, 0.2]])
    rgb[:, 1] = torch.tensor([[3.0, -3.0], [-0.5, 0.4]])
    rgb[:, 2] = torch.tensor([[3.0, -1.5], [-5.0, 0.6]])
    out = decode_matte(vae, vae.encode(rgb))[0, 0, 0]
    expected = ((rgb.mean(dim=1)[0, 0] + 1) / 2).clamp(0, 1)
    assert torch.allclose(out, expected)
    assert out[0, 0] == 1.0 and out[1, 0] == 0.0 and 0 < out[0, 1] < 1


@pytest.fixture(scope="module")
def tiny_wan():
    return WanVAE.from_config(TINY_WAN, seed=0)


def test_wan_vae_round_trip_shapes(tiny_wan):
    video = torch.rand(1, 3, 5, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    latents = tiny_wan.encode(video)
    assert (tiny_wan.z_dim, tiny_wan.temporal_stride, tiny_wan.spatial_stride) == (4, 4, 8)
    assert latents.shape == (1, 4, 2, 4, 6) == (1, 4, *tiny_wan.latent_shape(5, 32, 48))
    decoded = tiny_wan.decode(latents)
    assert decoded.shape == video.shape and decoded.dtype == torch.float32
    assert decoded.abs().max() <= 1.0
    with pytest.raises(BadInput, match="4k\\+1"):
        tiny_wan.latent_shape(6, 32, 48)


def test_wan_vae_normalises_with_config_mean_and_std(tiny_wan):
    video = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    raw = tiny_wan.model.encode(video).latent_dist.mode()
    mean = torch.tensor(TINY_WAN["latents_mean"]).view(1, 4, 1, 1, 1)
    std = torch.tensor(TINY_WAN["latents_std"]).view(1, 4, 1, 1, 1)
    normalised = tiny_wan.encode(video)
    assert torch.allclose(normalised, (raw - mean) / std, atol=1e-6)
    # decode undoes the normalisation before the diffusers decoder
    assert torch.allclose(tiny_wan.decode(normalised), tiny_wan.model.decode(raw).sample, atol=1e-5)


def test_wan_vae_matte_is_mean_of_decoded_channels_clamped(tiny_wan):
    matte = torch.rand(1, 1, 5, 16, 16, generator=torch.Generator().manual_seed(4))
    latents = encode_matte(tiny_wan, matte)
    grey = (matte * 2 - 1).expand(-1, 3, -1, -1, -1)
    assert torch.allclose(latents, tiny_wan.encode(grey), atol=1e-6)
    out = decode_matte(tiny_wan, latents)
    rgb = tiny_wan.decode(latents)
    assert out.shape == matte.shape
    assert torch.allclose(out, ((rgb.mean(1, keepdim=True) + 1) / 2).clamp(0, 1), atol=1e-6)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_wan_vae_saves_and_loads_from_a_local_folder(tiny_wan, tmp_path):
    tiny_wan.save(tmp_path / "vae")
    assert list((tmp_path / "vae").glob("*.safetensors"))
    loaded = build_vae({"type": "wan", "path": "vae"}, tmp_path)
    video = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert torch.equal(loaded.encode(video), tiny_wan.encode(video))


def test_vae_folder_and_type_errors_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no config.json"):
        build_vae({"type": "wan", "path": "missing"}, tmp_path)
    with pytest.raises(BadInput, match="unknown VAE type"):
        build_vae({"type": "vqgan"}, tmp_path)


def small_tiles(vae):
    """diffusers' tile size made small (32 px, stride 16) so a 64 px frame spans several overlapping tiles."""
    vae.model.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                            tile_sample_stride_width=16)
    return vae


def test_small_frames_decode_untiled_and_tiling_changes_the_result(tiny_wan):
    """Wan and WanPipeline decode untiled; tiles blend at their overlaps, which is not the untiled result."""
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(6))  # 5 x 64x64 frames
    auto = small_tiles(WanVAE(tiny_wan.model))
    raw = latents * auto._std + auto._mean
    auto.model.disable_tiling()
    untiled = auto.model.decode(raw).sample
    tiled = small_tiles(WanVAE(tiny_wan.model, tiling="always")).decode(latents)
    assert torch.equal(small_tiles(auto).decode(latents), untiled)  # default: untiled for a small frame
    difference = (tiled - untiled).abs()
    assert difference.max() > 1e-3  # the seams a composited layer would carry
    assert torch.equal(small_tiles(WanVAE(tiny_wan.model, tiling="never")).decode(latents), untiled)


def test_frames_above_the_untiled_limit_are_tiled(tiny_wan):
    latents = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(7))  # one 64x64 frame
    video = torch.rand(1, 3, 1, 64, 64, generator=torch.Generator().manual_seed(8)) * 2 - 1
    always = small_tiles(WanVAE(tiny_wan.model, tiling="always"))
    expected = always.decode(latents), always.encode(video)
    limited = small_tiles(WanVAE(tiny_wan.model, max_untiled_pixels=64 * 64 - 1))  # one pixel too many
    assert torch.equal(limited.decode(latents), expected[0]) and torch.equal(limited.encode(video), expected[1])
    assert WanVAE(tiny_wan.model).max_untiled_pixels == 1280 * 720  # Wan2.1's largest size decodes untiled
    with pytest.raises(BadInput, match="tiling"):
        WanVAE(tiny_wan.model, tiling="sometimes")


def test_out_of_memory_untiled_retries_in_tiles(tiny_wan, monkeypatch, capsys):
    latents = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    vae = small_tiles(WanVAE(tiny_wan.model))
    expected = small_tiles(WanVAE(tiny_wan.model, tiling="always")).decode(latents)
    decode = vae.model.decode

    def decode_or_oom(z, *args, **kwargs):
        # torch raises torch.OutOfMemoryError (alias torch.cuda.OutOfMemoryError) when a CUDA allocation fails
        if not vae.model.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(vae.model, "decode", decode_or_oom)
    assert torch.equal(vae.decode(latents), expected)
    assert "out of memory" in capsys.readouterr().err
    with pytest.raises(torch.OutOfMemoryError):
        WanVAE(vae.model, tiling="never").decode(latents)


def test_bundle_vae_stays_float32_when_the_transformer_runs_in_bfloat16(tmp_path, monkeypatch):
    """As in Wan2.1 and diffusers' Wan example: the VAE keeps float32 whatever the transformer's dtype."""
    from vera.model import bundle as bundle_module

    folder = bundle_module.create_random_bundle(tmp_path / "b", "vera-tiny", seed=0,
                                                vae=WanVAE.from_config(TINY_WAN))
    # what resolve_device("auto") returns on a CUDA machine, on this CPU
    monkeypatch.setattr(bundle_module, "resolve_device", lambda device: (torch.device("cpu"), torch.bfloat16))
    bundle = bundle_module.load_bundle(folder, cache_dir=tmp_path / "cache")
    assert next(bundle.transformer.parameters()).dtype == torch.bfloat16
    assert bundle.vae.dtype == torch.float32 and next(bundle.vae.model.parameters()).dtype == torch.float32


def test_bundle_vae_tiling_choice_loads_and_saves_again(tmp_path):
    import json

    from vera.model.bundle import create_random_bundle, load_bundle, save_bundle

    folder = create_random_bundle(tmp_path / "b", "vera-tiny", seed=0,
                                  vae=WanVAE.from_config(TINY_WAN, tiling="always"))
    assert json.loads((folder / "bundle.json").read_text())["vae"] == {"type": "wan", "path": "vae",
                                                                        "tiling": "always"}
    bundle = load_bundle(folder, device="cpu", cache_dir=tmp_path / "cache")
    assert bundle.vae.tiling == "always"
    copy = save_bundle(bundle, tmp_path / "copy")
    assert load_bundle(copy, device="cpu", cache_dir=tmp_path / "cache").vae.tiling == "always"
