"""Metrics: closed forms (sphere, linear decoder), Christoffel symbols, expected metric."""

from __future__ import annotations

import pytest
import torch

from conftest import sphere  # type: ignore[import-not-found]
from otgen.geometry import (
    ExpectedMetric,
    FunctionMetric,
    PullbackMetric,
    decoder_jacobian,
    monte_carlo_metric,
)

D64 = torch.float64


def _mlp(d_in: int, d_out: int, seed: int, last: torch.nn.Module | None = None):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(d_in, 16), torch.nn.Tanh(), torch.nn.Linear(16, d_out)]
    if last is not None:
        layers.append(last)
    return torch.nn.Sequential(*layers).double()


def test_sphere_pullback_metric_closed_form(gen):
    z = torch.randn(7, 2, generator=gen, dtype=D64)
    m = PullbackMetric(sphere)
    lam = 4 / (1 + z.square().sum(-1)) ** 2  # conformal factor of the round sphere
    assert torch.allclose(m.metric(z), lam[:, None, None] * torch.eye(2, dtype=D64),
                          atol=1e-14)
    assert torch.allclose(m.magnification(z), lam, atol=1e-14)


def test_jacobian_strategies_agree_with_autograd(gen):
    f = _mlp(3, 5, 0)
    z = torch.randn(4, 3, generator=gen, dtype=D64)
    ref = torch.stack([torch.autograd.functional.jacobian(f, zi) for zi in z])  # (4, 5, 3)
    for strategy in ("batch", "vmap", "loop"):
        assert torch.allclose(decoder_jacobian(f, z, strategy=strategy), ref, atol=1e-13)


def test_linear_decoder_metric_is_constant_and_flat(gen):
    a = torch.randn(5, 2, generator=gen, dtype=D64)
    m = PullbackMetric(lambda z: z @ a.T)
    z = torch.randn(6, 2, generator=gen, dtype=D64)
    assert torch.allclose(m.metric(z), (a.T @ a).expand(6, 2, 2), atol=1e-13)
    assert m.christoffel(z).abs().max() < 1e-12


def test_christoffel_of_conformal_metric(gen):
    """M = lam(z) I: Gamma^k_ij = 1/2 (d_kj g_i + d_ki g_j - d_ij g_k), g = grad log lam."""
    z = torch.randn(5, 2, generator=gen, dtype=D64)
    got = PullbackMetric(sphere).christoffel(z)
    g = -4 * z / (1 + z.square().sum(-1, keepdim=True))  # grad of log(4 / (1 + r^2)^2)
    eye = torch.eye(2, dtype=D64)
    want = 0.5 * (torch.einsum("kj,ni->nkij", eye, g) + torch.einsum("ki,nj->nkij", eye, g)
                  - torch.einsum("ij,nk->nkij", eye, g))
    assert torch.allclose(got, want, atol=1e-12)


def test_acceleration_matches_normal_projection(gen):
    """For a pullback metric the geodesic ODE is J^T (J a + f''[v, v]) = 0."""
    f = _mlp(2, 6, 1)
    m = PullbackMetric(f)
    z, v = torch.randn(5, 2, generator=gen, dtype=D64), torch.randn(5, 2, generator=gen,
                                                                       dtype=D64)
    a = m.geodesic_acceleration(z, v)
    fv = lambda x: torch.func.jvp(f, (x,), (v,))[1]  # noqa: E731
    second = torch.func.jvp(fv, (z,), (v,))[1]  # f''[v, v], (5, 6)
    j = decoder_jacobian(f, z)
    residual = torch.einsum("ndi,nd->ni", j, torch.einsum("ndi,ni->nd", j, a) + second)
    assert residual.abs().max() < 1e-11
    # and the explicit-metric route gives the same acceleration
    fm = FunctionMetric(m.metric)
    assert torch.allclose(fm.geodesic_acceleration(z, v), a, atol=1e-11)


def test_expected_metric_is_mean_plus_std_pullback(gen):
    mu, sd = _mlp(2, 4, 2), _mlp(2, 4, 3, torch.nn.Softplus())
    z = torch.randn(5, 2, generator=gen, dtype=D64)
    jm, js = decoder_jacobian(mu, z), decoder_jacobian(sd, z)
    want = jm.transpose(1, 2) @ jm + js.transpose(1, 2) @ js
    assert torch.allclose(ExpectedMetric(mu, sd).metric(z), want, atol=1e-13)


def test_expected_metric_equals_monte_carlo_average(gen):
    """E_eps[J^T J] of f = mu + sigma * eps, estimated with 20000 draws of eps."""
    mu, sd = _mlp(2, 4, 4), _mlp(2, 4, 5, torch.nn.Softplus())
    z = torch.randn(3, 2, generator=gen, dtype=D64)
    exact = ExpectedMetric(mu, sd).metric(z)
    mc = monte_carlo_metric(mu, sd, z, 20000, generator=torch.Generator().manual_seed(1))
    rel = (mc - exact).norm(dim=(1, 2)) / exact.norm(dim=(1, 2))
    assert rel.max() < 0.02
    # the Monte-Carlo error shrinks like S^{-1/2}: 100 draws are visibly worse
    few = monte_carlo_metric(mu, sd, z, 100, generator=torch.Generator().manual_seed(1))
    assert ((few - exact).norm(dim=(1, 2)) / exact.norm(dim=(1, 2))).max() > rel.max()


def test_metric_is_differentiable_in_decoder_parameters(gen):
    f = _mlp(2, 3, 6)
    z = torch.randn(4, 2, generator=gen, dtype=D64)
    PullbackMetric(f).magnification(z).sum().backward()
    # the metric does not depend on the output bias f[2].bias; every weight gets a gradient
    for p in (f[0].weight, f[0].bias, f[2].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # directional finite difference of the magnification in the first weight
    w = f[0].weight
    dw = torch.randn(w.shape, generator=gen, dtype=D64)
    h = 1e-6
    with torch.no_grad():
        w += h * dw
        up = PullbackMetric(f).magnification(z).sum()
        w -= 2 * h * dw
        down = PullbackMetric(f).magnification(z).sum()
        w += h * dw
    assert torch.isclose((up - down) / (2 * h), (w.grad * dw).sum(), rtol=1e-6)


def test_bad_inputs_name_the_argument():
    m = PullbackMetric(sphere)
    with pytest.raises(ValueError, match="`z` must be a point cloud of shape"):
        m.metric(torch.zeros(2, dtype=D64))
    with pytest.raises(TypeError, match="`decoder` must be callable"):
        PullbackMetric(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`fn` must return metrics of shape"):
        FunctionMetric(lambda z: z).metric(torch.zeros(3, 2, dtype=D64))
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        decoder_jacobian(sphere, torch.zeros(3, 2, dtype=D64), strategy="fast")  # type: ignore[arg-type]
