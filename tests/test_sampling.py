"""Flow-matching sampling: seeded determinism, CFG in one batch, conditioning on every stream, shifted sigmas."""

import dataclasses

import pytest
import torch

from vera.errors import BadInput
from vera.model.configs import CONFIGS
from vera.model.dit import VeraMoT
from vera.sampling import make_scheduler, sample

CFG = dataclasses.replace(CONFIGS["vera-tiny"], z_dim=4, mask_channels=4)
LATENT = (2, 4, 4)  # f, h, w


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VeraMoT(CFG).eval()
    with torch.no_grad():  # let the conditioning channels matter (they start at zero)
        for stream in m.streams:
            stream.patch_embedding.weight.normal_(std=0.2)
    return m


def inputs(seed=1, batch=1):
    g = torch.Generator().manual_seed(seed)
    condition = torch.randn(batch, CFG.z_dim + CFG.mask_channels, *LATENT, generator=g)
    context = torch.randn(batch, CFG.text_len, CFG.text_dim, generator=g)
    negative = torch.randn(batch, CFG.text_len, CFG.text_dim, generator=g)
    return condition, context, negative


class Recorder(torch.nn.Module):
    """Wraps a model and keeps every forward's inputs."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.cfg, self.calls = inner, inner.cfg, []

    def forward(self, x, t, context):
        self.calls.append((x.clone(), t.clone(), context.clone()))
        return self.inner(x, t, context)


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_same_seed_same_result_other_seed_other_result(model, sampler):
    condition, context, negative = inputs()
    run = lambda seed: sample(model, condition, context, negative, steps=3, guidance=4.0, shift=3.0,  # noqa
                              sampler=sampler, seed=seed)
    a, b, c = run(7), run(7), run(8)
    assert a.shape == (1, 3, CFG.z_dim, *LATENT) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.1


def test_cfg_runs_both_branches_in_one_batch_with_conditioning_on_every_stream(model):
    condition, context, negative = inputs(batch=2)
    rec = Recorder(model)
    sample(rec, condition, context, negative, steps=3, guidance=5.0, shift=3.0, seed=0)
    assert len(rec.calls) == 3  # one forward per step
    for x, t, ctx in rec.calls:
        assert x.shape == (4, 3, CFG.in_dim, *LATENT)  # 2B
        assert torch.equal(ctx, torch.cat([context, negative]))
        assert torch.equal(x[:2], x[2:])  # the same noisy latents in both branches
        for s in range(3):  # every stream sees the source latents + mask after its own noisy latent
            assert torch.equal(x[:2, s, CFG.z_dim:], condition)
        assert t.shape == (4,) and torch.all(t == t[0])
    assert rec.calls[0][1][0] > rec.calls[-1][1][0]  # from noise towards data


def test_guidance_mixes_negative_and_positive_velocity():
    """A fake model whose velocity is the context's mean: one Euler step from sigma 1 to 0 gives
    x0 = noise - v with v = v_neg + g (v_pos - v_neg)."""
    class ContextVelocity(torch.nn.Module):
        cfg = CFG

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, context):
            return context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1, 1).expand(-1, 3, CFG.z_dim, *x.shape[3:]).clone()

    condition, _, _ = inputs()
    context = torch.full((1, CFG.text_len, CFG.text_dim), 2.0)
    negative = torch.full((1, CFG.text_len, CFG.text_dim), 0.5)
    out = sample(ContextVelocity(), condition, context, negative, steps=1, guidance=3.0, shift=1.0,
                 sampler="euler", seed=5)
    noise = torch.randn((1, 3, CFG.z_dim, *LATENT), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(out, noise - (0.5 + 3.0 * (2.0 - 0.5)), atol=1e-5)


def test_no_negative_or_guidance_one_means_a_single_branch(model):
    condition, context, negative = inputs()
    rec = Recorder(model)
    sample(rec, condition, context, negative, steps=2, guidance=1.0, shift=3.0, seed=0)
    assert [c[0].shape[0] for c in rec.calls] == [1, 1]


def test_progress_advances_once_per_step(model):
    class Count:
        n = 0

        def advance(self, n=1, note=""):
            self.n += n

    condition, context, negative = inputs()
    progress = Count()
    sample(model, condition, context, negative, steps=4, guidance=2.0, shift=3.0, seed=0, progress=progress)
    assert progress.n == 4


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_schedules_are_shifted_flow_sigmas(sampler):
    plain, shifted = make_scheduler(sampler, 1.0), make_scheduler(sampler, 5.0)
    plain.set_timesteps(10)
    shifted.set_timesteps(10)
    s = plain.sigmas[:-1].double()
    expected = 5.0 * s / (1.0 + 4.0 * s)
    if sampler == "euler":  # diffusers' Euler shifts an evenly spaced schedule between its own ends
        sig = shifted.sigmas[:-1].double()
        unshifted = sig / (5.0 - 4.0 * sig)
        steps = unshifted.diff()
        assert sig[0] == 1.0 and torch.allclose(steps, steps[0].expand_as(steps), atol=1e-5)
    else:
        assert torch.allclose(shifted.sigmas[:-1].double(), expected, atol=1e-4)
    assert shifted.sigmas[-1] == 0.0
    assert torch.allclose(shifted.timesteps.double(), shifted.sigmas[:-1].double() * 1000, atol=1.0)


def test_bad_sampler_and_steps_are_bad_input(model):
    condition, context, negative = inputs()
    with pytest.raises(BadInput, match="unknown sampler"):
        sample(model, condition, context, negative, steps=2, guidance=2.0, shift=3.0, sampler="ddim")
    with pytest.raises(BadInput, match="at least 1"):
        sample(model, condition, context, negative, steps=0, guidance=2.0, shift=3.0)
