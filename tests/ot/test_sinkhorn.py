"""Sinkhorn: convergence to exact OT, marginals, stability at small eps, warm start,
online = dense, envelope gradients, agreement with POT."""

from __future__ import annotations

import warnings

import numpy as np
import ot as pot
import pytest
import torch

from otgen.ot import ConvergenceWarning, LinearProblem, Sinkhorn, dual_objective, solve

D = torch.float64


def _cloud(n, d, seed, shift=0.0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=D) + shift).to(dtype)


def _weights(n, seed):
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=D) + 0.1
    return w / w.sum()


def test_converges_to_exact_as_eps_vanishes():
    x, y = _cloud(60, 2, 0), _cloud(50, 2, 1, 1.0)
    a, b = _weights(60, 0), _weights(50, 1)
    exact = float(solve(x, y, a, b).cost)
    gaps = []
    for rel in (1e-1, 1e-2, 1e-3):
        res = solve(x, y, a, b, method="sinkhorn", eps_rel=rel)
        assert res.converged
        gaps.append(abs(float(res.cost) - exact))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] / exact < 2e-3


def test_marginals_within_tolerance_and_errors_recorded():
    x, y = _cloud(80, 3, 2), _cloud(70, 3, 3)
    a, b = _weights(80, 2), _weights(70, 3)
    res = solve(x, y, a, b, method="sinkhorn", eps_rel=0.01, tol=1e-9)
    err = (res.plan.sum(1) - a).abs().sum() + (res.plan.sum(0) - b).abs().sum()
    assert res.converged and float(err) <= 1e-9
    assert res.errors.ndim == 1 and float(res.errors[-1]) <= 1e-9
    assert res.n_iter >= len(res.errors)


def test_plan_matches_pot_log_sinkhorn():
    x, y = _cloud(40, 2, 4), _cloud(40, 2, 5, 0.5)
    C = pot.dist(x.numpy(), y.numpy())
    eps = 0.05 * C.mean()
    res = solve(x, y, method="sinkhorn", eps=eps, tol=1e-12)
    ref = pot.sinkhorn(pot.unif(40), pot.unif(40), C, eps, method="sinkhorn_log",
                       stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(res.plan.numpy(), ref, atol=1e-10)


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float64, 1e-4), (torch.float32, 1e-3)])
def test_no_nan_at_small_eps(dtype, rel):
    x, y = _cloud(150, 2, 6, dtype=dtype), _cloud(150, 2, 7, 2.0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = solve(x, y, method="sinkhorn", eps_rel=rel, max_iter=3000)
    for t in (res.cost, res.f, res.g, res.plan, res.objective):
        assert torch.isfinite(t).all()
    assert t.dtype == dtype
    assert float(res.plan.sum()) == pytest.approx(1.0, rel=1e-3)  # no vanishing mass
    exact = float(solve(x.double(), y.double()).cost)
    assert float(res.cost) == pytest.approx(exact, rel=5e-3)


def test_warm_start_converges_immediately():
    x, y = _cloud(100, 2, 8), _cloud(90, 2, 9)
    res = solve(x, y, method="sinkhorn", eps_rel=0.01, tol=1e-8)
    again = solve(x, y, method="sinkhorn", eps=res.eps, tol=1e-8, init=(res.f, res.g))
    assert again.converged and again.n_iter <= 2
    assert float(again.cost) == pytest.approx(float(res.cost), rel=1e-7)


def test_non_convergence_warns_and_strict_raises():
    x, y = _cloud(60, 2, 10), _cloud(60, 2, 11)
    prob = LinearProblem(x, y)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = Sinkhorn(eps_rel=1e-3, max_iter=3)(prob)
    assert not res.converged and res.n_iter == 3
    with pytest.raises(RuntimeError, match="did not converge"):
        Sinkhorn(eps_rel=1e-3, max_iter=3, strict=True)(prob)


def test_online_mode_equals_dense_mode():
    x, y = _cloud(90, 2, 12), _cloud(110, 2, 13, 0.5)
    a, b = _weights(90, 4), _weights(110, 5)
    dense = solve(x, y, a, b, method="sinkhorn", eps_rel=0.02, tol=1e-10)
    online = solve(x, y, a, b, method="sinkhorn", eps_rel=0.02, tol=1e-10, online=True,
                   memory_budget=300_000)
    assert online.plan is None and online.method == "sinkhorn-online"
    assert float(online.cost) == pytest.approx(float(dense.cost), rel=1e-8)
    assert float(online.objective) == pytest.approx(float(dense.objective), rel=1e-8)
    shift = (online.f - dense.f).mean()  # potentials are defined up to (+c, -c)
    torch.testing.assert_close(online.f - shift, dense.f, atol=1e-7, rtol=0)
    torch.testing.assert_close(online.g + shift, dense.g, atol=1e-7, rtol=0)


def test_memory_budget_selects_online_automatically():
    x, y = _cloud(50, 2, 14), _cloud(50, 2, 15)
    res = Sinkhorn(eps_rel=0.05, memory_budget=30_000)(LinearProblem(x, y))
    assert res.method == "sinkhorn-online" and res.converged


def test_objective_equals_entropic_dual_and_primal():
    x, y = _cloud(40, 2, 16), _cloud(30, 2, 17)
    a, b = _weights(40, 6), _weights(30, 7)
    res = solve(x, y, a, b, method="sinkhorn", eps_rel=0.05, tol=1e-12)
    C = torch.cdist(x, y) ** 2
    dual = dual_objective(res.f, res.g, a, b, C=C, eps=res.eps)
    P = res.plan
    kl = (P * (P / (a[:, None] * b[None, :])).log()).sum() - P.sum() + 1.0
    primal = (C * P).sum() + res.eps * kl
    assert float(res.objective) == pytest.approx(float(dual), rel=1e-10)
    assert float(res.objective) == pytest.approx(float(primal), rel=1e-9)


def test_envelope_gradient_in_x_matches_finite_differences():
    x, y = _cloud(15, 2, 18).requires_grad_(), _cloud(12, 2, 19, 1.0)
    kw = dict(method="sinkhorn", eps=0.1, tol=1e-13)
    (grad,) = torch.autograd.grad(solve(x, y, **kw).objective, x)
    direction = _cloud(15, 2, 20)
    h = 1e-5
    with torch.no_grad():
        fd = (solve(x + h * direction, y, **kw).objective
              - solve(x - h * direction, y, **kw).objective) / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-6)


def test_envelope_gradient_in_y_and_weights():
    x, y = _cloud(10, 2, 21), _cloud(11, 2, 22).requires_grad_()
    a = _weights(10, 8).requires_grad_()
    kw = dict(method="sinkhorn", eps=0.2, tol=1e-13)
    res = solve(x, y, a, None, **kw)
    gy, ga = torch.autograd.grad(res.objective, (y, a))
    torch.testing.assert_close(ga, res.f)
    dy = _cloud(11, 2, 23)
    da = torch.zeros(10, dtype=D)
    da[2], da[5] = 1.0, -1.0
    h = 1e-6
    with torch.no_grad():
        fdy = (solve(x, y + h * dy, a, None, **kw).objective
               - solve(x, y - h * dy, a, None, **kw).objective) / (2 * h)
        fda = (solve(x, y, a + h * da, None, **kw).objective
               - solve(x, y, a - h * da, None, **kw).objective) / (2 * h)
    assert float((gy * dy).sum()) == pytest.approx(float(fdy), rel=1e-5)
    assert float(ga @ da) == pytest.approx(float(fda), rel=1e-5)


def test_online_gradient_equals_dense_gradient():
    x, y = _cloud(30, 2, 24).requires_grad_(), _cloud(40, 2, 25)
    g1 = torch.autograd.grad(solve(x, y, method="sinkhorn", eps=0.1, tol=1e-12).cost, x)[0]
    g2 = torch.autograd.grad(solve(x, y, method="sinkhorn", eps=0.1, tol=1e-12, online=True,
                                   memory_budget=100_000).cost, x)[0]
    torch.testing.assert_close(g1, g2, atol=1e-9, rtol=1e-7)


def test_transpose_symmetry_and_cost_scaling():
    x, y = _cloud(30, 2, 26), _cloud(35, 2, 27)
    r = solve(x, y, method="sinkhorn", eps=0.1, tol=1e-12)
    rt = solve(y, x, method="sinkhorn", eps=0.1, tol=1e-12)
    torch.testing.assert_close(r.plan, rt.plan.T, atol=1e-10, rtol=0)
    # scaling the cost and eps by the same factor leaves the plan unchanged
    rs = solve(3 * x, 3 * y, method="sinkhorn", eps=0.9, tol=1e-12)
    torch.testing.assert_close(r.plan, rs.plan, atol=1e-10, rtol=0)
    assert float(rs.cost) == pytest.approx(9 * float(r.cost), rel=1e-9)


def test_custom_callable_cost():
    x, y = _cloud(20, 2, 28), _cloud(25, 2, 29)

    def l1(u, v):
        return (u[:, None, :] - v[None, :, :]).abs().sum(-1)

    res = solve(x, y, method="sinkhorn", cost=l1, eps_rel=0.005)
    ref = pot.emd2(pot.unif(20), pot.unif(25), pot.dist(x.numpy(), y.numpy(), "cityblock"))
    assert float(res.cost) == pytest.approx(ref, rel=2e-2)


@pytest.mark.parametrize("online", [False, True])
def test_values_consistent_when_stopped_during_eps_scaling(online):
    x, y = _cloud(60, 2, 30), _cloud(60, 2, 31, 1.0)
    with pytest.warns(ConvergenceWarning):
        res = solve(x, y, method="sinkhorn", eps_rel=1e-3, max_iter=3, online=online,
                    memory_budget=50_000 if online else 2 * 1024**3)
    assert not res.converged and res.eps > 1e-3 * float((torch.cdist(x, y) ** 2).mean())
    exact = float(solve(x, y).cost)
    assert torch.isfinite(res.cost) and 0.5 * exact < float(res.cost) < 10 * exact
    if res.plan is not None:  # the plan is the one the potentials describe
        C = torch.cdist(x, y) ** 2
        P = torch.exp((res.f[:, None] + res.g[None, :] - C) / res.eps) / 3600
        torch.testing.assert_close(res.plan, P, atol=1e-8, rtol=1e-6)

