"""Multiscale Sinkhorn (kd-tree coarse stages + block-truncated kernel): the truncation
bound is rigorous, the solution equals the dense engine's, and a too-aggressive truncation
is caught by the full-plan check and finished densely."""

from __future__ import annotations

import math

import pytest
import torch

import otgen.ot._multiscale as ms
from otgen.ot import Sinkhorn, solve
from otgen.ot.costs import Euclidean
from otgen.ot.problem import LinearProblem

D = torch.float64


def _clouds(n, m, seed, dtype=D):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=D)
    y = torch.randn(m, 2, generator=g, dtype=D) * torch.tensor([1.5, 0.5], dtype=D) + 1.0
    a = torch.rand(n, generator=g, dtype=D) + 0.2
    b = torch.rand(m, generator=g, dtype=D) + 0.2
    return x.to(dtype), y.to(dtype), (a / a.sum()).to(dtype), (b / b.sum()).to(dtype)


def _marginal_error(plan, a, b):
    return float((plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum())


def test_kd_order_is_a_balanced_partition_into_compact_cells():
    x = torch.rand(1000, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    perm, bounds = ms.kd_order(x, 5)
    assert torch.equal(torch.sort(perm).values, torch.arange(1000))
    for level, bd in enumerate(bounds):
        sizes = [e - s for s, e in zip(bd[:-1], bd[1:], strict=True)]
        assert len(sizes) == 2**level and max(sizes) - min(sizes) <= 1
    xs = x[perm]
    # 32 leaves of a median kd-tree on U[0,1]^2: each leaf's box is ~1/32 of the square
    areas = [float((xs[s:e].amax(0) - xs[s:e].amin(0)).prod())
             for s, e in zip(bounds[-1][:-1], bounds[-1][1:], strict=True)]
    assert sum(areas) < 1.0 and max(areas) < 0.1


def test_truncation_bound_dominates_every_entry():
    x, y, a, b = _clouds(800, 700, 1)
    eps = 0.05
    res = solve(x, y, a, b, method="sinkhorn", eps=eps, multiscale=False)
    gen = torch.Generator().manual_seed(3)
    f = res.f + 0.02 * torch.randn(800, generator=gen, dtype=D)  # off-optimal potentials
    g = res.g + 0.02 * torch.randn(700, generator=gen, dtype=D)
    px, bx = ms.kd_order(x, 4)
    py, by = ms.kd_order(y, 4)
    op = ms.BlockKernel(x[px], y[py], bx[4], by[4], 4)
    fs, gs = f[px], g[py]
    z = (fs[:, None] + gs[None, :] - torch.cdist(x[px], y[py]) ** 2) / eps
    keep = op.keep_mask(fs, gs, eps)
    true_max = torch.stack([torch.stack([z[r0:r1, c0:c1].max() for c0, c1 in zip(
        by[4][:-1], by[4][1:], strict=True)]) for r0, r1 in zip(bx[4][:-1], bx[4][1:],
                                                                 strict=True)])
    needed = true_max > ms._log_theta(D)
    assert bool((keep | ~needed).all()), "a leaf pair with entries above θ was dropped"
    assert 0.0 < float(keep.double().mean()) < 1.0  # the test is not vacuous


@pytest.mark.parametrize("rel", [0.05, 0.005])
def test_multiscale_equals_dense_float64(rel):
    x, y, a, b = _clouds(2000, 1700, 2)
    dense = solve(x, y, a, b, method="sinkhorn", eps_rel=rel, multiscale=False)
    multi = solve(x, y, a, b, method="sinkhorn", eps_rel=rel, multiscale=True)
    assert multi.method == "sinkhorn-multiscale"
    assert multi.converged and _marginal_error(multi.plan, a, b) <= 1e-6
    assert float(multi.cost) == pytest.approx(float(dense.cost), rel=1e-6)
    # potentials are unique up to (f + c, g - c)
    shift = float((multi.f - dense.f).mean())
    # (both solves stop at marginal error 1e-6: potentials agree to ~1e-4 eps)
    assert float((multi.f - dense.f - shift).abs().max()) < 2e-4 * multi.eps
    assert float((multi.g - dense.g + shift).abs().max()) < 2e-4 * multi.eps


def test_multiscale_float32_auto_selected_and_accurate():
    x, y, a, b = _clouds(4096, 4200, 4, dtype=torch.float32)
    res = solve(x, y, a, b, method="sinkhorn", eps_rel=0.005, tol=1e-3)
    assert res.method == "sinkhorn-multiscale" and res.converged
    assert _marginal_error(res.plan.double(), a.double(), b.double()) <= 1.05e-3
    ref = solve(x.double(), y.double(), a.double(), b.double(), method="sinkhorn",
                eps=res.eps, multiscale=False)
    assert float(res.cost) == pytest.approx(float(ref.cost), rel=3e-3)


def test_aggressive_truncation_is_caught_and_finished_densely(monkeypatch):
    x, y, a, b = _clouds(1500, 1500, 5)
    monkeypatch.setattr(ms, "_log_theta", lambda dtype: -0.5)  # drops real mass
    res = solve(x, y, a, b, method="sinkhorn", eps_rel=0.01, multiscale=True)
    monkeypatch.undo()
    ref = solve(x, y, a, b, method="sinkhorn", eps_rel=0.01, multiscale=False)
    assert res.converged and _marginal_error(res.plan, a, b) <= 1e-6
    assert float(res.cost) == pytest.approx(float(ref.cost), rel=1e-6)


def test_multiscale_gradient_matches_dense():
    x, y, a, b = _clouds(1200, 1100, 6)
    grads = []
    for flag in (True, False):
        xx = x.clone().requires_grad_(True)
        res = Sinkhorn(eps_rel=0.01, multiscale=flag)(LinearProblem(xx, y, a, b))
        (gx,) = torch.autograd.grad(res.cost, xx)
        grads.append(gx)
    assert torch.allclose(grads[0], grads[1], atol=1e-6 * float(grads[1].abs().max()))


def test_multiscale_requires_squared_euclidean():
    x, y, a, b = _clouds(50, 40, 7)
    with pytest.raises(ValueError, match="multiscale"):
        Sinkhorn(multiscale=True)(LinearProblem(x, y, a, b, cost=Euclidean()))


def test_high_dimension_is_not_eligible():
    assert ms.multiscale_eligible(10_000, 10_000, 2)
    assert not ms.multiscale_eligible(10_000, 10_000, 64)
    assert not ms.multiscale_eligible(1000, 10_000, 2)
    assert math.isfinite(ms.exp_floor(torch.float32))


# ---------------------------------------------------------------- online (no stored kernel)
def test_online_multiscale_equals_dense_solution(monkeypatch):
    monkeypatch.setattr(ms, "MIN_POINTS", 1000)  # exercise the engine on a small problem
    x, y, a, b = _clouds(1600, 1700, 8)
    ref = Sinkhorn(eps_rel=0.005, multiscale=False)(LinearProblem(x, y, a, b))
    res = Sinkhorn(eps_rel=0.005, online=True)(LinearProblem(x, y, a, b))
    assert res.method == "sinkhorn-online-multiscale" and res.converged
    assert float(res.objective) == pytest.approx(float(ref.objective), rel=1e-6)
    assert float(res.cost) == pytest.approx(float(ref.cost), rel=1e-5)
    # its marginal error, recomputed on the full plan of its potentials
    P = a[:, None] * b[None, :] * torch.exp(
        (res.f[:, None] + res.g[None, :] - torch.cdist(x, y) ** 2) / res.eps)
    assert _marginal_error(P, a, b) <= 1.01e-6


def test_truncated_sinkhorn_divergence_equals_dense(monkeypatch):
    from otgen.ot import sinkhorn_divergence

    monkeypatch.setattr(ms, "MIN_POINTS", 1000)
    x, y, _, _ = _clouds(1500, 1400, 9)
    s_trunc = sinkhorn_divergence(x, y, eps_rel=0.01, online=True)
    s_dense = sinkhorn_divergence(x, y, eps_rel=0.01, online=False)
    assert float(s_trunc) == pytest.approx(float(s_dense), rel=1e-5)
    s_self = sinkhorn_divergence(x, x, eps_rel=0.01, online=True)
    assert 0.0 <= float(s_self) < 1e-9 * float(s_dense) + 1e-12


def test_staleness_ignores_the_potential_gauge():
    from otgen.ot._truncated import TruncatedSoftmin

    x, y, _, _ = _clouds(600, 500, 10)
    px, bx = ms.kd_order(x, 4)
    py, by = ms.kd_order(y, 4)
    op = TruncatedSoftmin(x[px], y[py], bx[4], by[4], 4)
    f, g = torch.zeros(600, dtype=D), torch.zeros(500, dtype=D)
    op.update_mask(f, g, 0.1)
    assert not op.stale(f + 5.0, g - 5.0, 0.1)  # f + g unchanged: nothing can grow
    assert op.stale(f + 0.3, g + 0.2, 0.1)  # every term grew by e^5
