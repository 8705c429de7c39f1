"""Curves: spline smoothness, reparametrisation invariance of length, discrete lengths."""

from __future__ import annotations

import torch

from conftest import sphere  # type: ignore[import-not-found]
from otgen.geometry import (
    CubicSpline,
    DiscreteCurve,
    PullbackMetric,
    curve_energy,
    curve_length,
    polyline_length,
    straight_line,
)
from otgen.geometry.curves import AbstractCurve

D64 = torch.float64


def _spline(gen, b=3, k=5):
    z0, z1 = torch.randn(b, 2, generator=gen, dtype=D64), torch.randn(b, 2, generator=gen,
                                                                         dtype=D64)
    c = CubicSpline(z0, z1, k, values=0.3 * torch.randn(b, k - 1, 2, generator=gen,
                                                           dtype=D64))
    with torch.no_grad():
        c.end_curvature.copy_(torch.randn(b, 2, 2, generator=gen, dtype=D64))
    return c


class _Reparametrised(AbstractCurve):
    """t -> c(phi(t)) with phi(t) = (e^{a t} - 1) / (e^a - 1), increasing from 0 to 1."""

    def __init__(self, c: AbstractCurve, a: float = 2.0) -> None:
        super().__init__(c.begin, c.end)
        self.c, self.a = c, a

    def evaluate(self, t):
        a = self.a
        phi = torch.expm1(a * t) / torch.expm1(torch.tensor(a, dtype=t.dtype))
        dphi = a * torch.exp(a * t) / torch.expm1(torch.tensor(a, dtype=t.dtype))
        x, v, acc = self.c.evaluate(phi)
        return x, v * dphi[None, :, None], acc * dphi[None, :, None] ** 2


def test_spline_ends_and_c2_continuity(gen):
    c = _spline(gen)
    x = c(torch.tensor([0.0, 1.0], dtype=D64))
    assert torch.allclose(x[:, 0], c.begin) and torch.allclose(x[:, 1], c.end)
    knots = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=D64)
    for left, right in zip(c.evaluate(knots - 1e-12), c.evaluate(knots + 1e-12), strict=True):
        assert torch.allclose(left, right, atol=1e-9)  # position, velocity, acceleration
    # derivatives are those of the positions (central differences)
    t, h = torch.tensor([0.13, 0.5, 0.91], dtype=D64), 1e-6
    x, v, acc = c.evaluate(t)
    assert torch.allclose((c(t + h) - c(t - h)) / (2 * h), v, atol=1e-8)
    assert torch.allclose((c.velocity(t + h) - c.velocity(t - h)) / (2 * h), acc, atol=1e-7)


def test_length_is_invariant_to_reparametrisation_energy_is_not(gen):
    m = PullbackMetric(sphere)
    c = _spline(gen)
    r = _Reparametrised(c)
    l0, l1 = curve_length(m, c, n=200), curve_length(m, r, n=200)
    assert torch.allclose(l0, l1, rtol=1e-6)  # quadrature nodes do not meet the knots
    e0, e1 = curve_energy(m, c, n=200), curve_energy(m, r, n=200)
    assert (e1 > e0 * 1.01).all()  # a non-uniform speed costs energy
    assert (e0 >= l0**2 * (1 - 1e-12)).all()  # Cauchy-Schwarz: E >= L^2


def test_polyline_length_converges_to_curve_length(gen):
    m = PullbackMetric(sphere)
    c = _spline(gen, b=2)
    exact = curve_length(m, c, n=400)
    errs = [(polyline_length(m, c(n + 1)) - exact).abs().max() for n in (32, 64)]
    assert errs[1] < errs[0] / 3  # second order: about 4x smaller per halving
    assert errs[1] / exact.min() < 5e-3


def test_straight_line_length_is_mahalanobis(gen):
    a = torch.randn(4, 2, generator=gen, dtype=D64)
    m = PullbackMetric(lambda z: z @ a.T)
    z0, z1 = torch.randn(3, 2, generator=gen, dtype=D64), torch.randn(3, 2, generator=gen,
                                                                         dtype=D64)
    d = z1 - z0
    want = torch.einsum("ni,ij,nj->n", d, a.T @ a, d).sqrt()
    assert torch.allclose(polyline_length(m, straight_line(z0, z1, 5)), want, atol=1e-12)
    assert torch.allclose(curve_length(m, DiscreteCurve(z0, z1, 4), n=8), want, atol=1e-12)
    assert torch.allclose(curve_length(m, CubicSpline(z0, z1, 4), n=8), want, atol=1e-12)
