"""Primal side: minibatch OT losses and the WAE objective against closed forms."""

from __future__ import annotations

import pytest
import torch

from otgen.generative import kantorovich_loss, mmd_penalty, wae_loss
from otgen.ot import solve, wasserstein


def test_exact_loss_is_w2_squared_with_the_plan_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(20, 2, generator=g, dtype=torch.float64) + 1.0
    loss = kantorovich_loss(x, y, loss="exact")
    assert float(loss) == pytest.approx(float(wasserstein(x.detach(), y)) ** 2, rel=1e-12)
    loss.backward()
    # envelope theorem: d/dx_i of (1/n) sum |x_i - y_sigma(i)|^2 = 2 (x_i - y_sigma(i)) / n
    plan = solve(x.detach(), y).dense_plan()  # (20, 20) permutation / 20
    partner = y[plan.argmax(dim=1)]
    assert torch.allclose(x.grad, 2 * (x.detach() - partner) / 20, atol=1e-12)


def test_sinkhorn_loss_vanishes_on_equal_clouds_and_is_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64)
    assert float(kantorovich_loss(x, x.clone())) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([0.5, 0.0], dtype=torch.float64)
    val = float(kantorovich_loss(x, x + shift, eps=1e-3))
    assert val == pytest.approx(0.25, rel=0.05)  # S_eps -> W2^2 = |shift|^2 as eps -> 0
    with pytest.raises(ValueError, match="loss"):
        kantorovich_loss(x, x, loss="kl")
    with pytest.raises(ValueError, match="eps"):
        kantorovich_loss(x, x, loss="exact", eps=0.1)


def _mmd_reference(z: torch.Tensor, w: torch.Tensor, scales: tuple[float, ...]) -> float:
    k = z.shape[1]

    def kern(u: torch.Tensor, v: torch.Tensor) -> float:
        d2 = float((u - v).square().sum())
        return sum(2 * k * s / (2 * k * s + d2) for s in scales)

    n, m = len(z), len(w)
    zz = sum(kern(z[i], z[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    ww = sum(kern(w[i], w[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    zw = sum(kern(z[i], w[j]) for i in range(n) for j in range(m)) / (n * m)
    return zz + ww - 2 * zw


def test_mmd_penalty_matches_the_u_statistic_and_is_differentiable():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, generator=g, dtype=torch.float64)
    scales = (0.5, 1.0, 2.0)
    val = mmd_penalty(z, w, scales=scales)
    assert float(val) == pytest.approx(_mmd_reference(z.detach(), w, scales), rel=1e-12)
    assert torch.autograd.gradcheck(lambda t: mmd_penalty(t, w, scales=scales), (z,))


def test_mmd_penalty_separates_shifted_priors():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(256, 2, generator=g, dtype=torch.float64)
    w = torch.randn(256, 2, generator=g, dtype=torch.float64)
    same = float(mmd_penalty(z, w))
    shifted = float(mmd_penalty(z + 1.0, w))
    assert abs(same) < 0.05 and shifted > 10 * abs(same)


def test_wae_loss_terms():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    z = torch.randn(16, 2, generator=g, dtype=torch.float64)
    loss, rec, pen = wae_loss(x, x + 0.5, z, z.clone(), lam=3.0, penalty="mmd")
    assert float(rec) == pytest.approx(4 * 0.25)  # |0.5|^2 summed over 4 features
    assert float(loss) == pytest.approx(float(rec) + 3.0 * float(pen))
    _, _, pen_s = wae_loss(x, x, z, z.clone(), penalty="sinkhorn")
    assert float(pen_s) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="penalty"):
        wae_loss(x, x, z, z, penalty="kl")
