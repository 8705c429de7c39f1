"""Semi-discrete OT: closed forms in 1-D and 2-D, POT reference, duality, gradients, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from otgen.ot import laguerre
from otgen.ot.result import ConvergenceWarning
from otgen.ot.semidiscrete import (
    SemiDiscrete,
    SemiDiscreteMap,
    SemiDiscreteProblem,
    cell_masses,
    laguerre_assign,
    semidual_value,
)

DT = torch.float64


def uniform(d: int):
    """Sampler of the uniform law on [0, 1]^d."""

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, d, generator=generator, device=generator.device, dtype=DT)

    return sample


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=DT)


def cost_1d(y: list[float], edges: list[float], p: int = 2) -> float:
    """Exact sum_j int_{e_j}^{e_j+1} |x - y_j|^p dx for U[0, 1] cut at ``edges``."""

    def prim(u: float) -> float:  # antiderivative of |u|^p
        return math.copysign(abs(u) ** (p + 1) / (p + 1), u)

    return sum(
        prim(hi - yj) - prim(lo - yj) for yj, lo, hi in zip(y, edges[:-1], edges[1:], strict=True)
    )


def boundaries_1d(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Where (x - y_j)^2 - g_j = (x - y_j+1)^2 - g_j+1, for sorted 1-D atoms y (m, 1)."""
    y = y[:, 0]
    return (y[1:] ** 2 - y[:-1] ** 2 - (g[1:] - g[:-1])) / (2 * (y[1:] - y[:-1]))


QUIET = dict(progress=False, n_eval=100_000)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small-batch loops: intra-op threads only add sync cost (100x on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ closed forms in 1-D


@pytest.mark.parametrize("optimizer", ["asgd", "adam"])
def test_two_atoms_boundary_and_cost(optimizer, device):
    y, b = t(0.25, 0.75)[:, None].to(device), t(0.3, 0.7).to(device)
    prob = SemiDiscreteProblem(uniform(1), y, b)
    res = SemiDiscrete(optimizer=optimizer, tol=4e-3, **QUIET)(prob)
    assert res.converged and res.errors[-1] <= 4e-3
    assert res.plan is None and res.f is None and res.g.shape == (2,)
    assert res.g.device == res.cost.device == res.errors.device == y.device
    assert res.method == f"semidiscrete-{optimizer}"
    assert float(boundaries_1d(y, res.g)[0]) == pytest.approx(0.3, abs=1e-2)
    # (x - 0.25)^2 - g0 = (x - 0.75)^2 - g1 at x = 0.3  <=>  g1 - g0 = 0.2
    assert float(res.g[1] - res.g[0]) == pytest.approx(0.2, abs=1e-2)
    exact = cost_1d([0.25, 0.75], [0.0, 0.3, 1.0])  # = 0.0408333...
    assert exact == pytest.approx(0.00525 + 0.0355833333, rel=1e-9)
    assert float(res.cost) == pytest.approx(exact, rel=2e-2)
    assert float(res.objective) == pytest.approx(exact, rel=2e-2)


def test_three_atoms_1d():
    y, b = t(0.1, 0.5, 0.8)[:, None], t(0.2, 0.5, 0.3)
    res = SemiDiscrete(tol=5e-3, **QUIET)(SemiDiscreteProblem(uniform(1), y, b))
    assert res.converged
    # 1-D OT from U[0, 1] is monotone: cells are cut at the cumulative weights 0.2, 0.7
    torch.testing.assert_close(boundaries_1d(y, res.g), t(0.2, 0.7), atol=1e-2, rtol=0)
    exact = cost_1d([0.1, 0.5, 0.8], [0.0, 0.2, 0.7, 1.0])
    assert float(res.cost) == pytest.approx(exact, rel=2e-2)
    assert float(res.objective) == pytest.approx(exact, rel=2e-2)
    x = torch.linspace(0.01, 0.99, 99, dtype=DT)[:, None]
    expected = (x[:, 0] > 0.2).long() + (x[:, 0] > 0.7).long()
    far = ((x[:, 0] - 0.2).abs() > 0.02) & ((x[:, 0] - 0.7).abs() > 0.02)
    assert torch.equal(laguerre_assign(x, y, res.g)[far], expected[far])


def test_euclidean_cost_1d():
    y, b = t(0.25, 0.75)[:, None], t(0.3, 0.7)
    prob = SemiDiscreteProblem(uniform(1), y, b, cost="euclidean")
    res = SemiDiscrete(tol=5e-3, **QUIET)(prob)
    assert res.converged
    # |x - 0.25| - g0 = |x - 0.75| - g1 at x = 0.3  <=>  g1 - g0 = 0.4
    assert float(res.g[1] - res.g[0]) == pytest.approx(0.4, abs=1e-2)
    exact = cost_1d([0.25, 0.75], [0.0, 0.3, 1.0], p=1)
    assert float(res.cost) == pytest.approx(exact, rel=2e-2)


def test_warm_start_at_optimum_needs_no_iteration():
    y, b = t(0.25, 0.75)[:, None], t(0.3, 0.7)
    res = SemiDiscrete(n_iter=0, tol=1e-2, **QUIET)(
        SemiDiscreteProblem(uniform(1), y, b), g_init=t(0.0, 0.2)
    )
    assert res.converged and res.n_iter == 0 and res.errors.shape == (1,)
    torch.testing.assert_close(res.g, t(-0.1, 0.1))  # centred
    assert float(res.cost) == pytest.approx(cost_1d([0.25, 0.75], [0, 0.3, 1]), rel=1e-2)


# ------------------------------------------------------------------ 2-D


def test_quadrants_2d():
    y = t(0.25, 0.25, 0.75, 0.25, 0.25, 0.75, 0.75, 0.75).reshape(4, 2)
    res = SemiDiscrete(tol=1e-2, **QUIET)(SemiDiscreteProblem(uniform(2), y))
    assert res.converged
    # the quadrants already have mass 1/4: g is constant (0 after centring)
    assert float(res.g.abs().max()) < 1e-2
    # E|x - centre|^2 over a quadrant = 2 * int_0^1/2 (u - 1/4)^2 du / (1/2) = 2 / 48
    exact = 2 * cost_1d([0.25, 0.75], [0.0, 0.5, 1.0])
    assert exact == pytest.approx(2 / 48, rel=1e-12)
    assert float(res.cost) == pytest.approx(exact, rel=1e-2)
    assert float(res.objective) == pytest.approx(exact, rel=1e-2)
    T = SemiDiscreteMap.from_result(SemiDiscreteProblem(uniform(2), y), res)
    u = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]], dtype=DT)
    assert torch.equal(T.assign(u), torch.arange(4))
    torch.testing.assert_close(T(u), y)


def test_matches_pot_on_a_big_sample():
    g = torch.Generator().manual_seed(3)
    y = torch.rand(5, 2, generator=g, dtype=DT)
    b = t(0.1, 0.15, 0.2, 0.25, 0.3)
    res = SemiDiscrete(tol=1e-2, **QUIET)(SemiDiscreteProblem(uniform(2), y, b))
    assert res.converged
    n = 10_000  # discrete approximation of the source
    x = uniform(2)(n, torch.Generator().manual_seed(4))
    M = ot.dist(x.numpy(), y.numpy())
    ref = ot.emd2(np.full(n, 1 / n), b.numpy(), M)
    assert float(res.cost) == pytest.approx(ref, rel=5e-2)  # sampling error of x: ~1.5%
    # weak duality holds exactly on the empirical measure, for any g
    for gg in (res.g, torch.zeros(5, dtype=DT), torch.randn(5, generator=g, dtype=DT)):
        assert float(semidual_value(x, y, gg, b)) <= ref + 1e-12
    # on the same sample, the semi-dual of the returned g is near-optimal
    assert float(semidual_value(x, y, res.g, b)) == pytest.approx(ref, rel=1e-2)


# ------------------------------------------------------------------ gradients


def test_gradients_envelope():
    y = t(0.25, 0.75)[:, None].requires_grad_()
    b = t(0.3, 0.7).requires_grad_()
    res = SemiDiscrete(tol=4e-3, **QUIET)(SemiDiscreteProblem(uniform(1), y, b))
    gy, gb = torch.autograd.grad(res.cost, (y, b), retain_graph=True)
    # d/dy_j int_cell_j (x - y_j)^2 = 2 b_j (y_j - mean of cell j); cells [0, .3], [.3, 1]
    torch.testing.assert_close(gy[:, 0], t(2 * 0.3 * 0.10, 2 * 0.7 * 0.10), atol=6e-3, rtol=0)
    torch.testing.assert_close(gb, res.g)
    oy, ob = torch.autograd.grad(res.objective, (y, b))
    torch.testing.assert_close(oy, gy, atol=1e-12, rtol=0)
    torch.testing.assert_close(ob, res.g)
    x = uniform(1)(1000, torch.Generator().manual_seed(0)).requires_grad_()
    (gx,) = torch.autograd.grad(semidual_value(x, y.detach(), res.g, b.detach()), (x,))
    T = SemiDiscreteMap(y.detach(), res.g)
    torch.testing.assert_close(gx, 2 * (x - T(x)) / 1000)


# ------------------------------------------------------------------ helpers and plumbing


def test_helpers_nearest_neighbour_masses_and_blocks(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=gen, dtype=DT), torch.randn(7, 3, generator=gen, dtype=DT)
    zero = torch.zeros(7, dtype=DT)
    assert torch.equal(laguerre_assign(x, y, zero), torch.cdist(x, y).argmin(1))
    g = torch.randn(7, generator=gen, dtype=DT)
    idx = laguerre_assign(x, y, g)
    assert torch.equal(idx, (torch.cdist(x, y) ** 2 - g).argmin(1))
    masses = cell_masses(x, y, g)
    assert masses.shape == (7,) and float(masses.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(masses, torch.bincount(idx, minlength=7).to(DT) / 300)
    value = semidual_value(x, y, g)
    monkeypatch.setattr(laguerre, "_BLOCK_ELEMS", 20)  # 2 rows per block
    assert torch.equal(laguerre_assign(x, y, g), idx)
    torch.testing.assert_close(semidual_value(x, y, g), value)
    assert torch.equal(laguerre_assign(x, y, g, cost=lambda a, c: torch.cdist(a, c) ** 2), idx)


def test_reproducible_and_dtype_preserved():
    y = torch.tensor([[0.2], [0.6]], dtype=torch.float32)

    def sampler32(n, generator):
        return torch.rand(n, 1, generator=generator)

    solver = SemiDiscrete(n_iter=300, tol=0.05, seed=7, progress=False, n_eval=20_000)
    r1, r2 = solver(SemiDiscreteProblem(sampler32, y)), solver(SemiDiscreteProblem(sampler32, y))
    assert torch.equal(r1.g, r2.g) and r1.cost.dtype == torch.float32
    r3 = SemiDiscrete(
        n_iter=300,
        tol=0.05,
        progress=False,
        n_eval=20_000,
        generator=torch.Generator().manual_seed(7),
    )(SemiDiscreteProblem(sampler32, y))
    assert torch.equal(r3.g, r1.g)


def test_not_converged_warns_and_strict_raises():
    y, b = t(0.25, 0.75)[:, None], t(0.3, 0.7)
    prob = SemiDiscreteProblem(uniform(1), y, b)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = SemiDiscrete(n_iter=1, tol=1e-3, lr=1e-4, **QUIET)(prob)
    assert not res.converged and res.n_iter == 1 and res.errors[-1] > 1e-3
    with pytest.raises(RuntimeError, match="did not converge"), warnings.catch_warnings():
        warnings.simplefilter("error")
        SemiDiscrete(n_iter=1, tol=1e-3, lr=1e-4, strict=True, **QUIET)(prob)


def test_bad_inputs():
    y = t(0.25, 0.75)[:, None]
    with pytest.raises(ValueError, match="`b` must be non-negative"):
        SemiDiscreteProblem(uniform(1), y, t(-0.3, 1.3))
    with pytest.raises(ValueError, match="`y` must be finite"):
        SemiDiscreteProblem(uniform(1), t(0.25, math.nan)[:, None])
    with pytest.raises(ValueError, match=r"`sampler` must return .* shape \(n, d\) = \(2, 1\)"):
        SemiDiscreteProblem(uniform(3), y)
    with pytest.raises(ValueError, match="sum\\(b\\) = 1"):
        SemiDiscreteProblem(uniform(1), y, t(0.3, 0.3))
    with pytest.raises(TypeError, match="`sampler` must be a callable"):
        SemiDiscreteProblem(torch.rand(5, 1), y)
    with pytest.raises(ValueError, match="must be finite"):
        SemiDiscreteProblem(lambda n, g: torch.full((n, 1), math.nan, dtype=DT), y)
    with pytest.raises(ValueError, match=r"`g` must have shape \(m,\) = \(2,\)"):
        laguerre_assign(t(0.1)[:, None], y, t(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        SemiDiscrete(optimizer="sgd")
    with pytest.raises(ValueError, match="`tol` must be a finite number > 0"):
        SemiDiscrete(tol=0.0)
