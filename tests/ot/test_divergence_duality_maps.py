"""Sinkhorn divergence, c-transforms and dual objective, transport maps and McCann paths."""

from __future__ import annotations

import pytest
import torch

from otgen.ot import (
    barycentric_projection,
    c_transform,
    c_transform_targets,
    displacement_interpolation,
    dual_objective,
    entropic_map,
    interpolate_coupling,
    sinkhorn_divergence,
    solve,
    wasserstein,
)

D = torch.float64


def _cloud(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=D) + shift


# --- Sinkhorn divergence -------------------------------------------------------------------

def test_divergence_of_a_measure_with_itself_is_zero():
    x = _cloud(60, 2, 0)
    assert float(sinkhorn_divergence(x, x, eps=0.05)) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_divergence_is_non_negative_and_symmetric(seed):
    x, y = _cloud(40, 2, seed), _cloud(30, 2, seed + 100, 0.05 * seed)
    s_xy = sinkhorn_divergence(x, y, eps=0.5, tol=1e-10)
    s_yx = sinkhorn_divergence(y, x, eps=0.5, tol=1e-10)
    assert float(s_xy) >= 0.0
    assert float(s_xy) == pytest.approx(float(s_yx), rel=1e-7, abs=1e-12)


def test_divergence_tends_to_w2_squared_as_eps_vanishes():
    x, y = _cloud(50, 2, 1), _cloud(50, 2, 2, 1.5)
    w2sq = float(wasserstein(x, y) ** 2)
    errs = [abs(float(sinkhorn_divergence(x, y, eps=e)) - w2sq) for e in (1.0, 0.3, 0.1)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] / w2sq < 1e-2


def test_divergence_gradient_matches_finite_differences():
    x, y = _cloud(12, 2, 3).requires_grad_(), _cloud(10, 2, 4, 1.0)
    kw = dict(eps=0.3, tol=1e-13)
    (g,) = torch.autograd.grad(sinkhorn_divergence(x, y, **kw), x)
    dx = _cloud(12, 2, 5)
    h = 1e-5
    with torch.no_grad():
        fd = (sinkhorn_divergence(x + h * dx, y, **kw)
              - sinkhorn_divergence(x - h * dx, y, **kw)) / (2 * h)
    assert float((g * dx).sum()) == pytest.approx(float(fd), rel=1e-5)


def test_divergence_descent_moves_cloud_onto_target():
    x, y = _cloud(20, 2, 6).requires_grad_(), _cloud(20, 2, 7, 2.0)
    kw = dict(eps=0.5, tol=1e-6)
    start = float(sinkhorn_divergence(x.detach(), y, **kw))
    opt = torch.optim.SGD([x], lr=10.0)  # 1/n-weighted gradients: lr ~ n / 2
    for _ in range(15):
        opt.zero_grad()
        sinkhorn_divergence(x, y, **kw).backward()
        opt.step()
    assert float(sinkhorn_divergence(x.detach(), y, **kw)) < 0.05 * start


# --- duality --------------------------------------------------------------------------------

def test_hard_c_transform_matches_brute_force():
    x, y, g = _cloud(7, 2, 8), _cloud(5, 2, 9), _cloud(5, 1, 10)[:, 0]
    expected = torch.tensor(
        [min(float(((xi - yj) ** 2).sum() - gj) for yj, gj in zip(y, g, strict=True))
         for xi in x], dtype=D)
    torch.testing.assert_close(c_transform(g, x, y), expected)


def test_soft_c_transform_tends_to_hard_one():
    x, y, g = _cloud(20, 2, 11), _cloud(15, 2, 12), _cloud(15, 1, 13)[:, 0]
    hard = c_transform(g, x, y)
    gaps = [float((c_transform(g, x, y, eps=e) - hard).abs().max()) for e in (1.0, 0.1, 0.01)]
    assert gaps[0] > gaps[1] > gaps[2]
    # soft-min <= min + eps log m and >= min
    assert gaps[2] <= 0.01 * torch.log(torch.tensor(15.0)) + 1e-12


def test_c_transform_pair_is_feasible_and_lower_bounds_the_cost():
    x, y = _cloud(30, 2, 14), _cloud(25, 2, 15, 1.0)
    g = _cloud(25, 1, 16)[:, 0]  # an arbitrary potential
    f = c_transform(g, x, y)
    C = torch.cdist(x, y) ** 2
    assert float((f[:, None] + g[None, :] - C).max()) <= 1e-12
    a, b = torch.full((30,), 1 / 30, dtype=D), torch.full((25,), 1 / 25, dtype=D)
    assert float(dual_objective(f, g, a, b)) <= float(solve(x, y).cost) + 1e-12
    # double transform improves the dual objective (g^{cc} >= g)
    g2 = c_transform_targets(f, x, y)
    assert torch.all(g2 >= g - 1e-12)


def test_sinkhorn_potentials_are_soft_c_transforms_of_each_other():
    x, y = _cloud(30, 2, 17), _cloud(30, 2, 18)
    res = solve(x, y, method="sinkhorn", eps=1.0, tol=1e-12)
    torch.testing.assert_close(c_transform_targets(res.f, x, y, eps=1.0), res.g, atol=1e-9,
                               rtol=0)


# --- maps and displacement interpolation ----------------------------------------------------

def test_barycentric_projection_of_a_permutation_recovers_it():
    x = _cloud(40, 2, 19)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    y = x[perm] + 0.01
    res = solve(x, y)
    T = barycentric_projection(res, y)
    torch.testing.assert_close(T, x + 0.01)


def test_entropic_map_tends_to_exact_map():
    x = _cloud(30, 2, 20)
    y = 2.0 * x + 1.0  # the Brenier map is affine and the matching is i -> i
    errs = []
    for eps in (8.0, 2.0, 0.5):
        res = solve(x, y, method="sinkhorn", eps=eps, tol=1e-8)
        assert res.converged
        errs.append(float((entropic_map(x, y, res.g, eps=eps) - y).abs().max()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.3 * errs[0]


def test_mccann_interpolant_is_a_constant_speed_geodesic():
    x, y = _cloud(25, 2, 21), _cloud(25, 2, 22, 2.0)
    res = solve(x, y)
    w = float(wasserstein(x, y))
    for t in (0.25, 0.5, 0.8):
        pts, mass = interpolate_coupling(x, y, res, t)
        assert float(mass.sum()) == pytest.approx(1.0)
        w0t = float(wasserstein(x, pts, None, mass))
        wt1 = float(wasserstein(pts, y, mass, None))
        assert w0t == pytest.approx(t * w, rel=1e-8)
        assert wt1 == pytest.approx((1 - t) * w, rel=1e-8)


def test_displacement_interpolation_endpoints():
    x, tx = _cloud(5, 3, 23), _cloud(5, 3, 24)
    torch.testing.assert_close(displacement_interpolation(x, tx, 0.0), x)
    torch.testing.assert_close(displacement_interpolation(x, tx, 1.0), tx)
    torch.testing.assert_close(displacement_interpolation(x, tx, 0.5), (x + tx) / 2)
