"""Dual side: the Kantorovich critic and the semi-discrete dual against known W1 / W2, and
the c-transform gradient against finite differences of exact OT."""

from __future__ import annotations

import pytest
import torch

from otgen.generative import KantorovichCritic, SemiDual, gradient_penalty, make_critic
from otgen.ot import solve, wasserstein_1d, wasserstein_1d_cost


def _gaussians_1d(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = 1.5 + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.slow
def test_critic_dual_value_matches_exact_w1_within_5_percent():
    x, y = _gaussians_1d(300)
    exact = float(wasserstein_1d(x[:, 0], y[:, 0], p=1))
    res = KantorovichCritic(steps=250, progress=False)(x, y)
    assert abs(float(res.value) - exact) <= 0.05 * exact
    assert res.max_grad_norm < 1.1  # the penalty keeps the critic (nearly) 1-Lipschitz
    assert res.value.dtype == torch.float64


def test_spectrally_normalised_relu_critic_is_a_lower_bound():
    # every layer has operator norm <= 1 and relu is 1-Lipschitz: weak duality, value <= W1
    x, y = _gaussians_1d(300, seed=1)
    exact = float(wasserstein_1d(x[:, 0], y[:, 0], p=1))
    res = KantorovichCritic(steps=150, gp_weight=0.0, spectral_norm=True, activation="relu",
                            progress=False)(x, y)
    assert 0.0 < float(res.value) <= exact * (1 + 1e-9)
    assert res.max_grad_norm <= 1.0 + 1e-6


def test_two_sided_penalty_is_zero_only_at_unit_slope():
    x, y = _gaussians_1d(50)
    torch.manual_seed(0)
    lin = torch.nn.Linear(1, 1).double()
    with torch.no_grad():
        lin.weight.fill_(-1.0)  # |h'| = 1 with the wrong sign: both penalties vanish
    crit = torch.nn.Sequential(lin, torch.nn.Flatten(0))
    assert float(gradient_penalty(crit, x, y, one_sided=False)) == pytest.approx(0.0)
    with torch.no_grad():
        lin.weight.fill_(0.5)
    assert float(gradient_penalty(crit, x, y, one_sided=False)) == pytest.approx(0.25)
    assert float(gradient_penalty(crit, x, y, one_sided=True)) == 0.0
    with torch.no_grad():
        lin.weight.fill_(2.0)
    assert float(gradient_penalty(crit, x, y, one_sided=True)) == pytest.approx(1.0)


def test_semidual_ascent_reaches_the_semidiscrete_w2_within_5_percent():
    g = torch.Generator().manual_seed(0)
    y = 1.0 + 0.5 * torch.randn(50, 1, generator=g, dtype=torch.float64)
    # W2^2(N(0, 1), nu) through the quantile function of N(0, 1) on a fine midpoint grid
    q = torch.special.ndtri((torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000)
    exact = float(wasserstein_1d_cost(q, y[:, 0], p=2))
    dual = SemiDual(y)
    for _ in range(600):
        dual.ascent_step(torch.randn(1024, 1, generator=g, dtype=torch.float64), lr=2.0)
    value = float(dual.value(torch.randn(100_000, 1, generator=g, dtype=torch.float64)))
    assert abs(value - exact) <= 0.05 * exact
    assert float(dual.h.sum()) == pytest.approx(0.0, abs=1e-9)  # kept centred


def test_c_transform_generator_gradient_matches_finite_differences_of_exact_w2():
    # generator g_theta(z) = a z + c, z ~ N(0, 1) (quadrature nodes), onto m sorted atoms;
    # W2^2(g_theta # N(0, 1), nu) is exact through the quantile functions, and the optimal
    # h~ follows from the cell boundaries x_j = a Phi^{-1}(j / m) + c.
    g = torch.Generator().manual_seed(3)
    m, N = 7, 7 * 3000
    y = torch.sort(2.0 * torch.randn(m, generator=g, dtype=torch.float64)).values[:, None]
    q = torch.special.ndtri((torch.arange(N, dtype=torch.float64) + 0.5) / N)[:, None]
    a = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)

    def w2sq(a_: float, c_: float) -> float:
        return float(wasserstein_1d_cost(a_ * q[:, 0] + c_, y[:, 0], p=2))

    with torch.no_grad():
        xb = a * torch.special.ndtri(torch.arange(1, m, dtype=torch.float64) / m) + c
        steps = (xb - y[1:, 0]).square() - (xb - y[:-1, 0]).square()  # h_j - h_{j-1}
        h = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps, 0)])
    dual = SemiDual(y)
    with torch.no_grad():
        dual.h.copy_(h - h.mean())
    x = a * q + c
    # strong duality: F(h~) = mean h~^c(x) + <b, h~> equals the exact cost
    assert float(dual.value(x)) == pytest.approx(w2sq(1.3, 0.2), rel=1e-9)
    dual.generator_loss(x).backward()
    t = 1e-5
    fd_a = (w2sq(1.3 + t, 0.2) - w2sq(1.3 - t, 0.2)) / (2 * t)
    fd_c = (w2sq(1.3, 0.2 + t) - w2sq(1.3, 0.2 - t)) / (2 * t)
    assert float(a.grad) == pytest.approx(fd_a, rel=1e-6)
    assert float(c.grad) == pytest.approx(fd_c, rel=1e-6, abs=1e-9)


def test_c_transform_gradient_in_the_plane_matches_exact_ot():
    # 2-D: points within 0.05 of well-separated atoms, so the identity plan is optimal and
    # h~ = 0 (nearest-atom Laguerre cells) is an optimal dual with a unique argmin per point
    g = torch.Generator().manual_seed(5)
    n = 40
    y = 3.0 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = y + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # a shift of the points
    dual = SemiDual(y)
    x = z + theta
    assert float(dual.value(x)) == pytest.approx(float(solve(z, y).cost), rel=1e-12)
    dual.generator_loss(x).backward()
    e = torch.randn(2, generator=g, dtype=torch.float64)
    t = 1e-6
    fd = (float(solve(z + t * e, y).cost) - float(solve(z - t * e, y).cost)) / (2 * t)
    assert float((theta.grad * e).sum()) == pytest.approx(fd, rel=1e-5)


def test_make_critic_shapes_dtype_and_bad_input():
    crit = make_critic(3, hidden=8, depth=1).double()
    out = crit(torch.zeros(4, 3, dtype=torch.float64))
    assert out.shape == (4,) and out.dtype == torch.float64
    with pytest.raises(ValueError, match="activation"):
        make_critic(3, activation="sigmoid")
    with pytest.raises(ValueError, match="`y`"):
        SemiDual(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        SemiDual(torch.zeros(3, 2), torch.ones(3))
