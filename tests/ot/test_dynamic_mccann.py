"""McCann displacement interpolation: Gaussian closed form, geodesic property, coupling
marginals."""

from __future__ import annotations

import pytest
import torch

from otgen.ot import (
    gaussian_displacement,
    gaussian_mccann,
    mccann_interpolation,
    wasserstein,
)

D = torch.float64
m0, S0 = torch.tensor([0.0, 0.0], dtype=D), torch.tensor([[1.0, 0.0], [0.0, 0.25]], dtype=D)
m1, S1 = torch.tensor([2.0, 1.0], dtype=D), torch.tensor([[0.5, 0.3], [0.3, 1.5]], dtype=D)


def sample(m, S, n, seed):
    g = torch.Generator().manual_seed(seed)
    return m + torch.randn(n, 2, dtype=D, generator=g) @ torch.linalg.cholesky(S).T


def test_exact_mccann_path_between_gaussian_samples_matches_closed_form():
    x, y = sample(m0, S0, 1500, 0), sample(m1, S1, 1500, 1)
    ts = torch.tensor([0.25, 0.5, 0.75], dtype=D)
    path = mccann_interpolation(x, y, ts)
    means, covs = gaussian_displacement(m0, S0, m1, S1, ts)
    for k in range(3):
        p = path.points[k]
        assert torch.allclose(p.mean(0), means[k], atol=0.08)
        assert torch.allclose(torch.cov(p.T), covs[k], atol=0.12)
    # and the samples' own path is the Gaussian path of their empirical moments
    mx, my = x.mean(0), y.mean(0)
    mt, St = gaussian_mccann(mx, torch.cov(x.T), my, torch.cov(y.T), 0.5)
    assert torch.allclose(path.points[1].mean(0), mt, atol=1e-12)
    assert torch.allclose(torch.cov(path.points[1].T), St, atol=0.06)


def test_exact_path_is_a_constant_speed_geodesic():
    x, y = sample(m0, S0, 40, 2), sample(m1, S1, 40, 3)
    ts = torch.tensor([0.0, 0.3, 0.6, 1.0], dtype=D)
    path = mccann_interpolation(x, y, ts)
    w01 = float(wasserstein(x, y))
    assert float(2 * path.action) == pytest.approx(w01**2, rel=1e-10)
    for i, j in ((0, 1), (1, 2), (1, 3)):
        wij = float(wasserstein(path.points[i], path.points[j]))
        assert wij == pytest.approx(float(ts[j] - ts[i]) * w01, rel=1e-8)
    assert torch.allclose(path.points[0].sort(0).values, x.sort(0).values)
    assert torch.allclose(path.at(1.0).sort(0).values, y.sort(0).values)


def test_entropic_path_keeps_marginal_means_and_mass():
    x, y = sample(m0, S0, 30, 4), sample(m1, S1, 45, 5)
    path = mccann_interpolation(x, y, [0.0, 0.5, 1.0], method="sinkhorn", eps=0.1)
    assert float(path.weights.sum()) == pytest.approx(1.0, abs=1e-6)
    for k, t in enumerate((0.0, 0.5, 1.0)):
        mean = (path.weights[:, None] * path.points[k]).sum(0)
        assert torch.allclose(mean, (1 - t) * x.mean(0) + t * y.mean(0), atol=1e-5)
    # the entropic plan's action exceeds the exact one (blur moves extra mass)
    exact = mccann_interpolation(x, y, 0.5)
    assert float(path.action) > float(exact.action)


def test_gaussian_displacement_endpoints_and_errors():
    means, covs = gaussian_displacement(m0, S0, m1, S1, [0.0, 1.0])
    assert torch.allclose(means[0], m0) and torch.allclose(means[1], m1)
    assert torch.allclose(covs[0], S0, atol=1e-10) and torch.allclose(covs[1], S1, atol=1e-10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gaussian_displacement(m0, S0, m1, S1, [1.5])
    with pytest.raises(ValueError, match="squared Euclidean"):
        mccann_interpolation(m0[None], m1[None], cost="euclidean")
