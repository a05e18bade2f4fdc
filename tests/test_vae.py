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
    assert loaded.model.use_tiling  # large frames decode in tiles


def test_vae_folder_and_type_errors_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no config.json"):
        build_vae({"type": "wan", "path": "missing"}, tmp_path)
    with pytest.raises(BadInput, match="unknown VAE type"):
        build_vae({"type": "vqgan"}, tmp_path)
