"""Exact OT: agreement with POT and scipy, known optima, duality, gradients."""

from __future__ import annotations

import numpy as np
import ot as pot
import pytest
import scipy.optimize
import scipy.stats
import torch

from otgen.ot import (
    Exact,
    LinearProblem,
    assignment,
    c_transform,
    duality_gap,
    solve,
    wasserstein,
)

D = torch.float64


def _cloud(n, d, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D) + shift


def _weights(n, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, generator=g, dtype=D) + 0.1
    return w / w.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pot_emd2_nonuniform(seed):
    x, y = _cloud(40, 3, seed), _cloud(55, 3, seed + 10, 1.0)
    a, b = _weights(40, seed), _weights(55, seed + 1)
    res = solve(x, y, a, b)
    ref = pot.emd2(a.numpy(), b.numpy(), pot.dist(x.numpy(), y.numpy()), numItermax=10**7)
    assert res.converged
    assert float(res.cost) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(res.plan.sum(1), a, atol=1e-12, rtol=0)
    torch.testing.assert_close(res.plan.sum(0), b, atol=1e-12, rtol=0)


def test_uniform_equal_size_is_assignment_and_matches_scipy():
    x, y = _cloud(120, 2, 3), _cloud(120, 2, 4, 0.5)
    res = solve(x, y)
    C = torch.cdist(x, y) ** 2
    r, c = scipy.optimize.linear_sum_assignment(C.numpy())
    assert float(res.cost) == pytest.approx(C.numpy()[r, c].mean(), rel=1e-10)
    # the optimal vertex is a permutation: n entries of mass 1/n
    assert res.plan_values is not None and res.plan_values.numel() >= 120
    big = res.plan_values[res.plan_values > 1e-12]
    assert big.numel() == 120
    torch.testing.assert_close(big, torch.full_like(big, 1 / 120))


def test_known_permutation_optimum():
    x = _cloud(50, 2, 5)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    res = solve(x, x[perm])
    assert float(res.cost) == pytest.approx(0.0, abs=1e-14)
    i, j = res.plan_indices[:, res.plan_values > 0]
    assert torch.equal(perm[j], i)


def test_duality_gap_and_feasibility():
    x, y = _cloud(60, 2, 6), _cloud(45, 2, 7, 1.0)
    a, b = _weights(60, 2), _weights(45, 3)
    res = solve(x, y, a, b)
    C = torch.cdist(x, y) ** 2
    gap, viol = duality_gap(res.plan, res.f, res.g, C, a, b)
    assert abs(float(gap)) < 1e-10
    assert float(viol) < 1e-10


def test_c_transform_of_optimal_potential_is_optimal():
    x, y = _cloud(70, 2, 8), _cloud(70, 2, 9, 0.3)
    res = solve(x, y)
    f_c = c_transform(res.g, x, y)
    assert torch.all(f_c >= res.f - 1e-10)  # the c-transform can only improve f
    dual = f_c.mean() + res.g.mean()
    assert float(dual) == pytest.approx(float(res.cost), abs=1e-10)


def test_transpose_symmetry():
    x, y = _cloud(30, 2, 10), _cloud(25, 2, 11)
    a, b = _weights(30, 4), _weights(25, 5)
    r1, r2 = solve(x, y, a, b), solve(y, x, b, a)
    assert float(r1.cost) == pytest.approx(float(r2.cost), rel=1e-12)


def test_w1_one_dimensional_matches_scipy():
    u, v = _cloud(80, 1, 12), _cloud(60, 1, 13, 2.0)
    a, b = _weights(80, 6), _weights(60, 7)
    w1 = wasserstein(u, v, a, b, p=1)
    ref = scipy.stats.wasserstein_distance(u[:, 0].numpy(), v[:, 0].numpy(), a.numpy(), b.numpy())
    assert float(w1) == pytest.approx(ref, rel=1e-10)


def test_w2_gradient_matches_finite_differences():
    x, y = _cloud(12, 2, 14).requires_grad_(), _cloud(15, 2, 15, 1.0)
    w = wasserstein(x, y)
    (grad,) = torch.autograd.grad(w, x)
    direction = _cloud(12, 2, 16)
    h = 1e-6
    with torch.no_grad():
        fd = (wasserstein(x + h * direction, y) - wasserstein(x - h * direction, y)) / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_gradient_in_weights_is_dual_potential():
    x, y = _cloud(10, 2, 17), _cloud(10, 2, 18)
    a = _weights(10, 8).requires_grad_()
    res = solve(x, y, a, None)
    (ga,) = torch.autograd.grad(res.cost, a)
    torch.testing.assert_close(ga, res.f)
    # mass-preserving finite difference of the LP value agrees with <f, da>
    da = torch.zeros(10, dtype=D)
    da[0], da[1] = 1.0, -1.0
    h = 1e-7
    with torch.no_grad():
        up = solve(x, y, a + h * da, None).cost
        dn = solve(x, y, a - h * da, None).cost
    assert float((up - dn) / (2 * h)) == pytest.approx(float(ga @ da), rel=1e-5, abs=1e-7)


def test_zero_weights_are_allowed():
    x, y = _cloud(8, 2, 19), _cloud(6, 2, 20)
    a = torch.tensor([0.0, 0.2, 0.2, 0.0, 0.2, 0.2, 0.2, 0.0], dtype=D)
    res = solve(x, y, a)
    ref = pot.emd2(a.numpy(), np.full(6, 1 / 6), pot.dist(x.numpy(), y.numpy()))
    assert float(res.cost) == pytest.approx(ref, rel=1e-12)
    assert float(res.plan[a == 0].abs().sum()) == 0.0


def test_iteration_limit_is_reported_not_silent():
    x, y = _cloud(200, 2, 21), _cloud(200, 2, 22)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = Exact(max_iter=10)(LinearProblem(x, y))
    assert not res.converged
    with pytest.raises(RuntimeError, match="max_iter"):
        Exact(max_iter=10, strict=True)(LinearProblem(x, y))


def test_float32_keeps_dtype():
    x, y = _cloud(20, 2, 23).float(), _cloud(20, 2, 24).float()
    res = solve(x, y)
    assert res.cost.dtype == torch.float32 and res.plan.dtype == torch.float32


@pytest.mark.parametrize(("n", "d"), [(64, 2), (300, 2), (600, 2), (100, 20)])
def test_assignment_route_matches_network_simplex(n, d):
    x, y = _cloud(n, d, 30), _cloud(n, d, 31, 0.5)
    with_duals = solve(x, y)
    fast = solve(x, y, duals=False)
    assert fast.f is None and fast.g is None
    assert float(fast.cost) == pytest.approx(float(with_duals.cost), rel=1e-10)
    sigma = assignment(x, y)
    assert torch.equal(torch.sort(sigma).values, torch.arange(n))  # a permutation
    C = torch.cdist(x, y) ** 2
    assert float(C[torch.arange(n), sigma].mean()) == pytest.approx(float(with_duals.cost),
                                                                   rel=1e-10)


def test_assignment_route_gradient_equals_envelope_gradient():
    x, y = _cloud(20, 2, 32).requires_grad_(), _cloud(20, 2, 33)
    g1 = torch.autograd.grad(solve(x, y).cost, x)[0]
    g2 = torch.autograd.grad(solve(x, y, duals=False).cost, x)[0]
    torch.testing.assert_close(g1, g2)
