"""SDE zoo and particle schemes against closed forms: OU / heat / VP marginals, Brownian
bridge mean and variance t(1-t)sigma^2 (forward and backward), Langevin on a double well,
blob and interaction particle flows."""

from __future__ import annotations

import math

import torch

from otgen.flows.paths import VPPath
from otgen.gradflows import (
    VPSDE,
    BrownianBridge,
    HeatSDE,
    InteractionEnergy,
    NegEntropy,
    OrnsteinUhlenbeck,
    double_well,
    langevin,
    particle_flow,
    quadratic_kernel,
)
from otgen.ode import sdeint
from otgen.ot import wasserstein_1d

D = torch.float64


def _moments(x):
    return x.mean(0), torch.cov(x.T)


def _gaussian_start(n, gen):
    m0 = torch.tensor([1.0, -2.0], dtype=D)
    L = torch.tensor([[0.6, 0.0], [0.4, 0.3]], dtype=D)
    return m0, L @ L.T, m0 + torch.randn(n, 2, generator=gen, dtype=D) @ L.T


def test_ou_and_heat_from_a_gaussian_match_the_closed_form(gen):
    n = 40000
    for sde, t in ((OrnsteinUhlenbeck(theta=1.5, mu=0.5, sigma=0.8), 0.7), (HeatSDE(0.5), 0.6)):
        m0, S0, x0 = _gaussian_start(n, gen)
        res = sdeint(sde, x0, t1=t, steps=100, method="heun", generator=gen)
        m, S = sde.marginal(t, m0, S0)
        mean, cov = _moments(res.x)
        # Monte-Carlo tolerance: 4 standard errors (the start is itself a sample)
        assert float((mean - m).abs().max()) < 4 * math.sqrt(float(S.diagonal().max()) / n)
        assert float((cov - S).abs().max()) < 4 * math.sqrt(2.0 / n) * float(S.diagonal().max())


def test_vp_sde_marginal_and_schedule_agree_with_vppath(gen):
    for schedule in ("linear", "cosine"):
        sde = VPSDE(schedule)
        t = torch.linspace(0.05, 0.95, 7, dtype=D)
        a_path, _ = VPPath(schedule).alpha(t)
        torch.testing.assert_close(sde.alpha(1 - t), a_path)
        torch.testing.assert_close(sde.sigma(1 - t) ** 2 + sde.alpha(1 - t) ** 2,
                                   torch.ones_like(t))
    sde, s, n = VPSDE(), 0.3, 40000
    m0, S0, x0 = _gaussian_start(n, gen)
    res = sdeint(sde, x0, t1=s, steps=200, method="heun", generator=gen)
    m, S = sde.marginal(s, m0, S0)
    mean, cov = _moments(res.x)
    assert float((mean - m).abs().max()) < 0.02 and float((cov - S).abs().max()) < 0.02


def test_brownian_bridge_forward_and_backward_marginals(gen):
    n, sigma = 20000, 0.7
    x0 = torch.tensor([[-1.0, 2.0]], dtype=D).expand(n, 2)
    x1 = torch.tensor([[3.0, 0.0]], dtype=D).expand(n, 2)
    bridge = BrownianBridge(x0, x1, sigma)
    for t in (0.3, 0.7):
        fwd = sdeint(bridge.forward(), x0, t0=0.0, t1=t, steps=60, generator=gen).x
        bwd = sdeint(bridge.backward(), x1, t0=1.0, t1=t, steps=60, generator=gen).x
        mean, var = bridge.marginal(t)
        assert abs(float(var) - sigma**2 * t * (1 - t)) < 1e-15
        for x in (fwd, bwd):
            assert float((x.mean(0) - mean[0]).abs().max()) < 4 * math.sqrt(float(var) / n)
            assert float((x.var(0) / var - 1).abs().max()) < 0.05
    # Euler-Maruyama reaches the end point up to the last step's noise sigma sqrt(h)
    end = sdeint(bridge.forward(), x0, t0=0.0, t1=1.0, steps=400, generator=gen).x
    assert float((end - x1).std()) < 2 * sigma * math.sqrt(1 / 400)


def test_langevin_double_well_approaches_the_target(gen):
    def grad(x):
        return torch.cat([4 * x[:, :1] * (x[:, :1] ** 2 - 1), x[:, 1:]], 1)

    ref = langevin(double_well, torch.randn(6000, 1, generator=gen, dtype=D), tau=5e-3,
                   steps=2000, generator=gen, save_every=None, grad_V=grad).xs[-1, :, 0]
    x0 = 0.2 * torch.randn(2000, 1, generator=gen, dtype=D) + 1.0  # all in the right well
    res = langevin(double_well, x0, tau=5e-3, steps=1200, generator=gen, save_every=300,
                   grad_V=grad)
    w2 = [float(wasserstein_1d(f[:, 0], ref, p=2.0)) for f in res.xs]
    assert all(b < a for a, b in zip(w2[:3], w2[1:4], strict=True)), w2
    assert w2[-1] < 0.25 * w2[0], w2
    # the mass crosses the barrier: both wells are populated at the end
    assert 0.3 < float((res.xs[-1, :, 0] < 0).double().mean()) < 0.7


def test_particle_schemes_heat_and_aggregation(gen):
    x0 = torch.randn(400, 1, generator=gen, dtype=D)
    heat = particle_flow(NegEntropy(), x0, tau=0.01, steps=50, save_every=25)
    assert abs(float(heat.xs[-1].var() - x0.var()) - 2 * 0.5) < 0.1  # var + 2t
    assert bool((heat.energies[1:] < heat.energies[:-1]).all())
    agg = particle_flow(InteractionEnergy(quadratic_kernel), x0, tau=0.01, steps=100,
                        save_every=None)
    assert abs(float(agg.xs[-1].var() / x0.var()) - math.exp(-2.0)) < 0.01
    torch.testing.assert_close(agg.xs[-1].mean(), x0.mean())  # momentum is conserved
