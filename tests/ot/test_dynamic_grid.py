"""Benamou--Brenier on a grid: operators against formulas, W2^2 of discretised Gaussians,
convergence under refinement, McCann moments, invariants."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.fft
import torch

from otgen.ot import (
    BenamouBrenier,
    GridProblem,
    benamou_brenier,
    gaussian_w2_squared,
    solve,
    wasserstein_1d_cost,
)
from otgen.ot.bb_grid import _largest_root, _Ops, dct_matrix

D = torch.float64


def bump1(N: int, m: float, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.arange(N, dtype=D) + 0.5) / N
    return torch.exp(-0.5 * ((x - m) / s) ** 2), x


def discrete_w2_1d(r0: torch.Tensor, r1: torch.Tensor, x: torch.Tensor) -> float:
    return float(wasserstein_1d_cost(x, x, r0 / r0.sum(), r1 / r1.sum(), p=2))


def test_dct_matrix_is_scipy_dct_and_diagonalises_neumann_laplacian():
    n, h = 12, 0.1
    C = dct_matrix(n)
    v = torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(C @ v, torch.as_tensor(scipy.fft.dct(v.numpy(), type=2, norm="ortho")),
                          atol=1e-12)
    assert torch.allclose(C @ C.T, torch.eye(n, dtype=D), atol=1e-12)
    L = (torch.diag(torch.full((n - 1,), 1.0, dtype=D), 1) + torch.diag(
        torch.full((n - 1,), 1.0, dtype=D), -1) - 2 * torch.eye(n, dtype=D))
    L[0, 0] = L[-1, -1] = -1.0  # Neumann ends
    L /= h**2
    lam = -(2 - 2 * torch.cos(math.pi * torch.arange(n, dtype=D) / n)) / h**2
    assert torch.allclose(C @ L @ C.T, torch.diag(lam), atol=1e-9)


@pytest.mark.parametrize("gamma", [1e-2, 1.0, 30.0])
def test_cubic_prox_root_is_the_largest_real_root(gamma):
    g = torch.Generator().manual_seed(1)
    f0 = 3 * torch.randn(400, dtype=D, generator=g)
    c = 10 * torch.rand(400, dtype=D, generator=g) ** 4
    f = _largest_root(f0, c, gamma)
    for i in range(0, 400, 7):
        coeffs = [1, 2 * gamma - f0[i].item(), gamma**2 - 2 * gamma * f0[i].item(),
                  -f0[i].item() * gamma**2 - c[i].item()]
        roots = np.roots(coeffs)
        real = max(r.real for r in roots if abs(r.imag) < 1e-6 * max(1.0, abs(r)))
        assert f[i].item() == pytest.approx(real, rel=1e-8, abs=1e-8)


def test_continuity_projection_is_idempotent_and_exact():
    r0, _ = bump1(10, 0.3, 0.1)
    r1, _ = bump1(10, 0.7, 0.1)
    prob = GridProblem(r0, r1)
    ops = _Ops(prob, 6)
    g = torch.Generator().manual_seed(2)
    U = [torch.randn(7, 10, dtype=D, generator=g), torch.randn(6, 11, dtype=D, generator=g)]
    P1 = ops.project_continuity(U)
    assert float(ops.div(P1).abs().max()) < 1e-10
    assert torch.equal(P1[0][0], prob.rho0) and torch.equal(P1[0][-1], prob.rho1)
    assert float(P1[1][:, [0, -1]].abs().max()) == 0.0
    P2 = ops.project_continuity(P1)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(P1, P2, strict=True))


def _refinement_errors(sizes):
    errs, res = [], None
    for N in sizes:
        r0, x = bump1(N, 0.3, 0.05)
        r1, _ = bump1(N, 0.65, 0.08)
        res = benamou_brenier(r0, r1, time_steps=N // 2, tol=1e-5, iterations=4000)
        errs.append(abs(float(res.w2_squared) / discrete_w2_1d(r0, r1, x) - 1))
    return errs, res


def test_1d_gaussians_w2_matches_discrete_and_converges_with_refinement():
    errs, res = _refinement_errors((32, 64))
    exact = 0.35**2 + 0.03**2  # continuous Gaussians: |dm|^2 + (s0 - s1)^2
    assert float(res.w2_squared) == pytest.approx(exact, rel=2e-3)
    assert errs[1] < 1e-3
    assert errs[0] > 2.5 * errs[1]  # converges as the grid refines (~ 4x per halving)


@pytest.mark.slow
def test_1d_refinement_three_levels_second_order():
    errs, _ = _refinement_errors((32, 64, 128))
    assert errs[0] > errs[1] > errs[2]
    assert errs[0] / errs[2] > 8


def test_1d_path_is_mccann_and_conserves_mass():
    N = 32
    r0, x = bump1(N, 0.3, 0.05)
    r1, _ = bump1(N, 0.65, 0.08)
    res = benamou_brenier(r0, r1, time_steps=16, tol=1e-5, iterations=3000)
    h = 1.0 / N
    assert torch.allclose(res.rho.sum(1) * h, torch.ones(17, dtype=D), atol=1e-10)
    for i in (4, 8, 12):  # moments of N(m_t, s_t): m_t, s_t linear in t
        t = float(res.ts[i])
        p = res.rho[i] * h
        mean = float((p * x).sum())
        std = math.sqrt(float((p * (x - mean) ** 2).sum()))
        assert mean == pytest.approx(0.3 + 0.35 * t, abs=2e-3)
        assert std == pytest.approx(0.05 + 0.03 * t, abs=4e-3)


def test_2d_gaussians_match_bures_and_discrete_ot_and_are_curl_free():
    m0, S0 = torch.tensor([0.35, 0.4], dtype=D), torch.tensor([[6e-3, 0], [0, 4e-3]], dtype=D)
    m1, S1 = torch.tensor([0.62, 0.6], dtype=D), torch.tensor([[4e-3, 2e-3], [2e-3, 8e-3]],
                                                               dtype=D)
    N = 16
    x = (torch.arange(N, dtype=D) + 0.5) / N
    X = torch.stack(torch.meshgrid(x, x, indexing="ij"), -1)

    def dens(m, S):
        Z = X - m
        return torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", Z, torch.linalg.inv(S), Z))

    r0, r1 = dens(m0, S0), dens(m1, S1)
    res = benamou_brenier(r0, r1, time_steps=16, tol=1e-4, iterations=3000)
    pts = X.reshape(-1, 2)
    ref = float(solve(pts, pts, (r0 / r0.sum()).reshape(-1), (r1 / r1.sum()).reshape(-1)).cost)
    bures = float(gaussian_w2_squared(m0, S0, m1, S1))
    assert res.converged
    assert float(res.w2_squared) == pytest.approx(ref, rel=5e-3)
    assert float(res.w2_squared) == pytest.approx(bures, rel=1.5e-2)
    assert res.momentum.shape == (16, N, N, 2) and res.rho.shape == (17, N, N)
    curl = res.curl()
    assert curl is not None and curl < 0.1


def test_time_reversal_symmetry():
    r0, _ = bump1(16, 0.3, 0.08)
    r1, _ = bump1(16, 0.6, 0.1)
    a = benamou_brenier(r0, r1, time_steps=8, tol=1e-5, iterations=3000)
    b = benamou_brenier(r1, r0, time_steps=8, tol=1e-5, iterations=3000)
    assert a.converged and b.converged
    assert float(a.action) == pytest.approx(float(b.action), rel=1e-3)
    assert torch.allclose(a.rho, b.rho.flip(0), atol=3e-3 * float(a.rho.max()))


def test_nonconvergence_is_reported_and_inputs_checked():
    r0, _ = bump1(16, 0.3, 0.05)
    r1, _ = bump1(16, 0.6, 0.1)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = benamou_brenier(r0, r1, time_steps=8, iterations=10, tol=1e-12, check_every=5)
    assert not res.converged and res.n_iter == 10
    with pytest.raises(RuntimeError, match="did not converge"):
        benamou_brenier(r0, r1, iterations=10, tol=1e-12, strict=True)
    with pytest.raises(ValueError, match="non-negative"):
        GridProblem(-r0, r1)
    with pytest.raises(ValueError, match="share shape"):
        GridProblem(r0, r1[:8])
    with pytest.raises(ValueError, match="alpha"):
        BenamouBrenier(alpha=2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GridProblem(r0.float(), r1.float(), extent=(2.0,))
