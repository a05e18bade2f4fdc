"""Flow-matching sampling: seeded determinism, CFG in one batch, conditioning on every stream, and Wan2.1's sigma
grids and UniPC trajectory."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler

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


def shifted(s, shift):
    return shift * s / (1 + (shift - 1) * s)


def wan_grid(start, steps, shift):
    """Wan2.1's grids as its code states them: `steps` evenly spaced sigmas from `start` towards 0 (0 dropped),
    shifted once. Euler (`fm_solvers.get_sampling_sigmas`) starts at 1; UniPC (`FlowUniPCMultistepScheduler`)
    at its largest training sigma 1 - 1/1000, stored as float32."""
    return [shifted(start - k * start / steps, shift) for k in range(steps)]


UNIPC_START = float(np.float32(0.999))


@pytest.mark.parametrize("steps,shift", [(50, 5.0), (12, 2.0), (10, 1.0), (1, 3.0)])
def test_euler_sigmas_are_wans_grid_shifted_once(steps, shift):
    scheduler = make_scheduler("euler", shift, steps)
    expected = wan_grid(1.0, steps, shift)
    assert torch.allclose(scheduler.sigmas.double(), torch.tensor(expected + [0.0], dtype=torch.float64),
                          atol=1e-6)
    assert torch.allclose(scheduler.timesteps.double(), torch.tensor(expected, dtype=torch.float64) * 1000,
                          atol=1e-3)


def test_euler_last_sigma_at_50_steps_shift_5():
    # shift*s/(1+(shift-1)s) at s = 1/50: 5/54 = 0.0926 (a double shift gives 0.024)
    assert make_scheduler("euler", 5.0, 50).sigmas[-2].item() == pytest.approx(5 / 54, abs=1e-6)


@pytest.mark.parametrize("steps,shift", [(50, 5.0), (30, 8.0), (12, 2.0), (7, 1.0), (1, 5.0)])
def test_unipc_sigmas_and_timesteps_are_wans(steps, shift):
    scheduler = make_scheduler("unipc", shift, steps)
    expected = wan_grid(UNIPC_START, steps, shift)
    assert torch.allclose(scheduler.sigmas.double(), torch.tensor(expected + [0.0], dtype=torch.float64),
                          atol=1e-6)
    # Wan's timesteps are 1000 sigma truncated to int64
    assert scheduler.timesteps.tolist() == [int(s * 1000) for s in expected]


def test_unipc_last_timesteps_at_50_steps_shift_5_are_wans():
    timesteps = make_scheduler("unipc", 5.0, 50).timesteps.tolist()
    assert timesteps[-2:] == [172, 92]  # Wan2.1; diffusers' default grid gives [175, 96]
    assert timesteps[0] == 999


def toy_field(z, t):
    """A velocity that depends non-linearly on the latents z and on the timestep t the model is given."""
    z, t = z.double(), torch.as_tensor(t, dtype=torch.float64) / 1000
    return torch.sin(z) * (1 + t) + 0.3 * torch.cos(7 * t) - 0.5 * z * t ** 2


class ToyVelocity(torch.nn.Module):
    cfg = CFG

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.timesteps = []

    def forward(self, x, t, context):
        self.timesteps.append(t[0].item())
        return toy_field(x[:, :, :CFG.z_dim], t[0]).float()


def unipc_reference(velocity, x, sigmas, timesteps):
    """UniPC (Zhao et al. 2023) as Wan2.1's FlowUniPCMultistepScheduler configures it, written from the method's
    formulas, in float64: data prediction m = x - sigma v; alpha = 1 - sigma, lambda = log(alpha / sigma);
    B(h) = e^h - 1 ("bh2"); solver order 2 with a first-order first step and last step; the UniC corrector
    before every step but the first, of the previous step's order; the final sigma 0; the model sees
    `timesteps[i]` while the solver uses `sigmas[i]`."""
    def lam(s):
        return math.log((1 - s) / s) if s > 0 else math.inf

    def b_coeffs(h, order):  # b_k = h phi_k(h) k! / B(h) for the data-prediction form (hh = -h)
        hh = -h
        phi, out, fact = math.expm1(hh) / hh - 1, [], 1
        for k in range(1, order + 1):
            out.append(phi * fact / math.expm1(hh))
            fact *= k + 1
            phi = phi / hh - 1 / fact
        return out

    def advance(x_from, s_from, s_to, m_from, correction):
        """x at s_to: the exponential-integrator step on m_from, minus alpha B(h) times the correction."""
        if s_to == 0:
            return m_from  # lambda = inf: the step lands on the data prediction
        h = lam(s_to) - lam(s_from)
        return s_to / s_from * x_from - (1 - s_to) * math.expm1(-h) * (m_from + correction)

    n = len(timesteps)
    x, last_x, ms, orders = x.double(), None, [], []
    for i in range(n):
        m = x - sigmas[i] * velocity(x, timesteps[i])
        if i > 0:  # UniC: redo the last step from last_x with m included
            h = lam(sigmas[i]) - lam(sigmas[i - 1])
            if orders[-1] == 1:
                correction = 0.5 * (m - ms[-1])
            else:
                r = (lam(sigmas[i - 2]) - lam(sigmas[i - 1])) / h
                rho = np.linalg.solve([[1.0, 1.0], [r, 1.0]], b_coeffs(h, 2))
                correction = rho[0] * (ms[-2] - ms[-1]) / r + rho[1] * (m - ms[-1])
            x = advance(last_x, sigmas[i - 1], sigmas[i], ms[-1], correction)
        order = min(2, n - i, i + 1)
        if order == 1:
            correction = 0.0
        else:  # UniP-2: rho = 1/2 on the previous data prediction's slope
            r = (lam(sigmas[i - 1]) - lam(sigmas[i])) / (lam(sigmas[i + 1]) - lam(sigmas[i]))
            correction = 0.5 * (ms[-1] - m) / r
        last_x = x
        x = advance(x, sigmas[i], sigmas[i + 1], m, correction)
        ms.append(m)
        orders.append(order)
    return x


@pytest.mark.parametrize("steps,shift", [(10, 5.0), (6, 3.0)])
def test_unipc_trajectory_matches_wans_flow_unipc_on_a_toy_field(steps, shift):
    condition, context, _ = inputs()
    toy = ToyVelocity()
    out = sample(toy, condition, context, None, steps=steps, guidance=1.0, shift=shift, sampler="unipc", seed=3)
    grid = wan_grid(UNIPC_START, steps, shift)
    sigmas = [float(np.float32(s)) for s in grid] + [0.0]  # the scheduler keeps its sigmas in float32
    timesteps = [int(s * 1000) for s in grid]
    assert toy.timesteps == timesteps
    noise = torch.randn((1, 3, CFG.z_dim, *LATENT), generator=torch.Generator().manual_seed(3))
    expected = unipc_reference(toy_field, noise, sigmas, timesteps)
    assert (out.double() - expected).abs().max() < 1e-5
    # the check can tell grids apart: diffusers' default UniPC grid ends elsewhere and lands > 1e-3 away
    default = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    default.set_timesteps(steps)
    other = unipc_reference(toy_field, noise, default.sigmas.double().tolist(), default.timesteps.tolist())
    assert (other - expected).abs().max() > 1e-3


def test_euler_trajectory_is_explicit_euler_on_wans_grid():
    condition, context, _ = inputs()
    out = sample(ToyVelocity(), condition, context, None, steps=8, guidance=1.0, shift=2.0, sampler="euler", seed=4)
    sigmas = wan_grid(1.0, 8, 2.0) + [0.0]
    x = torch.randn((1, 3, CFG.z_dim, *LATENT), generator=torch.Generator().manual_seed(4)).double()
    for i in range(8):
        x = x + (sigmas[i + 1] - sigmas[i]) * toy_field(x, sigmas[i] * 1000)
    assert (out.double() - x).abs().max() < 1e-4


def test_bad_sampler_and_steps_are_bad_input(model):
    condition, context, negative = inputs()
    with pytest.raises(BadInput, match="unknown sampler"):
        sample(model, condition, context, negative, steps=2, guidance=2.0, shift=3.0, sampler="ddim")
    with pytest.raises(BadInput, match="at least 1"):
        sample(model, condition, context, negative, steps=0, guidance=2.0, shift=3.0)
