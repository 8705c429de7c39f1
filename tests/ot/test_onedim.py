"""1-D optimal transport from quantile functions: references, invariants, gradients."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otgen.ot.onedim import (
    monotone_map,
    quantile_function,
    wasserstein_1d,
    wasserstein_1d_cost,
)

DT = torch.float64


def _sample(n: int, m: int, seed: int, *, weights: bool = True):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=n), 2.0 * rng.normal(size=m) + 0.5
    a, b = rng.random(n) + 0.05, rng.random(m) + 0.05
    if not weights:
        a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    return u, v, a / a.sum(), b / b.sum()


def _t(*arrays):
    return tuple(torch.tensor(x, dtype=DT) for x in arrays)


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 7), (5, 9), (20, 13), (30, 30)])
def test_p1_matches_scipy(n, m):
    for seed in range(3):
        u, v, a, b = _sample(n, m, seed)
        ref = scipy.stats.wasserstein_distance(u, v, a, b)
        got = wasserstein_1d(*_t(u, v, a, b), p=1.0)
        assert got.dtype == DT and got.shape == ()
        assert abs(float(got) - ref) <= 1e-12 * max(1.0, ref)
        # unnormalised weights are normalised
        got2 = wasserstein_1d(*_t(u, v, 3.0 * a, 0.5 * b), p=1.0)
        assert abs(float(got2) - ref) <= 1e-12 * max(1.0, ref)


def test_pot_wasserstein_1d_returns_wp_to_the_p():
    # Pin POT's convention before comparing with it: ot.wasserstein_1d(p=2) equals the
    # exact LP cost ot.emd2 with cost |x - y|^2, i.e. W_2^2, not W_2.
    u, v, a, b = _sample(7, 11, 0)
    lp = ot.emd2(a, b, (u[:, None] - v[None, :]) ** 2)
    assert abs(ot.wasserstein_1d(u, v, a, b, p=2) - lp) <= 1e-12


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("weights", [True, False])
def test_matches_pot_and_lp(p, weights):
    for seed in range(3):
        u, v, a, b = _sample(8 + seed, 13, seed, weights=weights)
        ref = ot.wasserstein_1d(u, v, a, b, p=p)  # W_p^p
        lp = ot.emd2(a, b, np.abs(u[:, None] - v[None, :]) ** p)
        cost = wasserstein_1d_cost(*_t(u, v, a, b), p=p)
        dist = wasserstein_1d(*_t(u, v, a, b), p=p)
        assert abs(float(cost) - ref) <= 1e-10 * max(1.0, ref)
        assert abs(float(cost) - lp) <= 1e-10 * max(1.0, lp)
        assert abs(float(dist) - ref ** (1 / p)) <= 1e-10 * max(1.0, ref)


def test_equal_sizes_uniform_is_sorted_matching():
    u, v, _, _ = _sample(25, 25, 3)
    ref = np.mean((np.sort(u) - np.sort(v)) ** 2)
    u_t, v_t = _t(u, v)
    assert abs(float(wasserstein_1d_cost(u_t, v_t, p=2.0)) - ref) <= 1e-12
    uniform = torch.full((25,), 0.04, dtype=DT)  # general (merged-grid) path
    assert abs(float(wasserstein_1d_cost(u_t, v_t, uniform, uniform, p=2.0)) - ref) <= 1e-12


def test_p_below_one_is_monotone_coupling_cost():
    # For 0 < p < 1 the monotone coupling is feasible but not optimal: value >= LP optimum.
    u, v, a, b = _sample(6, 9, 1)
    cost = float(wasserstein_1d_cost(*_t(u, v, a, b), p=0.5))
    lp = ot.emd2(a, b, np.abs(u[:, None] - v[None, :]) ** 0.5)
    assert np.isfinite(cost) and cost >= lp - 1e-12


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.5])
def test_shift_gives_absolute_shift(p):
    u, _, a, _ = _sample(12, 1, 4)
    u_t, a_t = _t(u, a)
    for c in (-3.0, 0.25, 7.0):
        w = wasserstein_1d(u_t + c, u_t, a_t, a_t, p=p)
        assert abs(float(w) - abs(c)) <= 1e-12 * max(1.0, abs(c))
    assert float(wasserstein_1d(u_t, u_t, a_t, a_t, p=p)) == 0.0


def test_accepts_column_vectors_and_keeps_float32():
    u, v, a, b = _sample(5, 6, 5)
    u_t, v_t, a_t, b_t = _t(u, v, a, b)
    torch.testing.assert_close(
        wasserstein_1d(u_t[:, None], v_t[:, None], a_t, b_t), wasserstein_1d(u_t, v_t, a_t, b_t)
    )
    out = wasserstein_1d(u_t.float(), v_t.float(), a_t.float(), b_t.float(), p=2.0)
    assert out.dtype == torch.float32
    assert abs(float(out) - ot.wasserstein_1d(u, v, a, b, p=2) ** 0.5) <= 1e-5


def test_quantile_function():
    xs = torch.tensor([[-1.0, 0.0, 2.0]], dtype=DT)
    cws = torch.tensor([[0.25, 0.5, 1.0]], dtype=DT)
    qs = torch.tensor([[0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0, 1.0 + 1e-15]], dtype=DT)
    expected = torch.tensor([[-1.0, -1.0, -1.0, 0.0, 0.0, 2.0, 2.0, 2.0]], dtype=DT)
    torch.testing.assert_close(quantile_function(qs, cws, xs), expected)
    with pytest.raises(ValueError, match=r"`cws` and `xs` must have one shape"):
        quantile_function(qs, cws, xs[:, :2])


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0])
def test_gradcheck_points_and_weights(p):
    u, v, a, b = _sample(6, 9, 6)
    u_t, v_t, a_t, b_t = (t.requires_grad_(True) for t in _t(u, v, a, b))

    def fn(u, v, a, b):
        return wasserstein_1d(u, v, a, b, p=p)

    assert torch.autograd.gradcheck(fn, (u_t, v_t, a_t, b_t))


def test_gradient_of_shift_and_equal_sizes():
    u, v, _, _ = _sample(10, 10, 7)
    u_t, v_t = _t(u, v)
    u_t.requires_grad_(True)
    (grad,) = torch.autograd.grad(wasserstein_1d_cost(u_t, v_t, p=2.0), u_t)
    # d/du_(i) (1/n) sum (u_(i) - v_(i))^2 = 2/n (u_(i) - v_(i)) in sorted order
    iu, iv = np.argsort(u), np.argsort(v)
    expected = np.empty(10)
    expected[iu] = 2.0 / 10 * (u[iu] - v[iv])
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=DT))
    # W_p(u, u) has a zero (not NaN) gradient
    (g0,) = torch.autograd.grad(wasserstein_1d(u_t, u_t.detach(), p=2.0), u_t)
    assert torch.isfinite(g0).all()


# --------------------------------------------------------------------------- monotone map


def test_monotone_map_equal_sizes_is_sorted_matching():
    u, v, _, _ = _sample(15, 15, 8)
    u_t, v_t = _t(u, v)
    T = monotone_map(u_t, v_t)
    expected = np.empty(15)
    expected[np.argsort(u)] = np.sort(v)
    torch.testing.assert_close(T, torch.tensor(expected, dtype=DT))
    assert monotone_map(u_t[:, None], v_t[:, None]).shape == (15, 1)
    # the matching's cost is W_2^2
    cost = float(((T - u_t) ** 2).mean())
    assert abs(cost - float(wasserstein_1d_cost(u_t, v_t, p=2.0))) <= 1e-12


def test_monotone_map_weighted_is_nondecreasing_into_target():
    u, v, a, b = _sample(20, 7, 9)
    u_t, v_t, a_t, b_t = _t(u, v, a, b)
    T = monotone_map(u_t, v_t, a_t, b_t)
    order = torch.argsort(u_t)
    assert (torch.diff(T[order]) >= 0).all()
    assert torch.isin(T, v_t).all()
    # a two-point example: mass 3/4 at 0 and 1/4 at 1 onto two equal atoms
    T2 = monotone_map(
        torch.tensor([0.0, 1.0], dtype=DT),
        torch.tensor([5.0, 6.0], dtype=DT),
        torch.tensor([0.75, 0.25], dtype=DT),
    )
    torch.testing.assert_close(T2, torch.tensor([5.0, 6.0], dtype=DT))


def test_monotone_map_gradient_reaches_targets():
    u, v, _, _ = _sample(5, 5, 10)
    u_t, v_t = _t(u, v)
    v_t.requires_grad_(True)
    (grad,) = torch.autograd.grad(monotone_map(u_t, v_t).sum(), v_t)
    torch.testing.assert_close(grad, torch.ones(5, dtype=DT))


# --------------------------------------------------------------------------- errors


def test_error_messages():
    u = torch.tensor([0.0, 1.0, 2.0], dtype=DT)
    with pytest.raises(ValueError, match=r"`u` must be finite"):
        wasserstein_1d(torch.tensor([0.0, float("nan")], dtype=DT), u)
    with pytest.raises(ValueError, match=r"`v_weights` must be non-negative"):
        wasserstein_1d(u, u, None, torch.tensor([0.5, -0.1, 0.6], dtype=DT))
    with pytest.raises(ValueError, match=r"`u_weights` must have positive total mass"):
        wasserstein_1d(u, u, torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match=r"`u_weights` must have shape \(3,\)"):
        wasserstein_1d(u, u, torch.ones(2, dtype=DT))
    with pytest.raises(ValueError, match=r"`v` must hold points on the real line"):
        wasserstein_1d(u, torch.zeros(3, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"`u` must hold at least one point"):
        wasserstein_1d(u[:0], u)
    with pytest.raises(ValueError, match=r"`p` must be a finite number > 0"):
        wasserstein_1d(u, u, p=0.0)
    with pytest.raises(TypeError, match=r"`v` is a torch.float32 tensor"):
        wasserstein_1d(u, u.float())
    with pytest.raises(TypeError, match=r"`u` must be a torch.Tensor"):
        wasserstein_1d([0.0, 1.0], u)
    with pytest.raises(ValueError, match=r"`b` must be non-negative"):
        monotone_map(u, u, None, -torch.ones(3, dtype=DT))


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    m=st.integers(1, 30),
    scale=st.floats(1e-3, 1e3),
    p=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_finite_nonnegative_symmetric(n, m, scale, p, weighted, seed):
    rng = np.random.default_rng(seed)
    u, v = scale * rng.normal(size=n), scale * rng.standard_cauchy(size=m)
    a = rng.random(n) * (rng.random(n) > 0.3) if weighted else np.ones(n)
    b = rng.random(m) * (rng.random(m) > 0.3) if weighted else np.ones(m)
    a[0] += 0.1  # keep a positive mass even if every other weight was zeroed
    b[-1] += 0.1
    u_t, v_t, a_t, b_t = _t(u, v, a, b)
    w_uv = wasserstein_1d(u_t, v_t, a_t, b_t, p=p)
    w_vu = wasserstein_1d(v_t, u_t, b_t, a_t, p=p)
    assert torch.isfinite(w_uv) and float(w_uv) >= 0
    torch.testing.assert_close(w_uv, w_vu, rtol=1e-10, atol=1e-12 * scale)
    if p >= 1:
        ref = ot.wasserstein_1d(u, v, a / a.sum(), b / b.sum(), p=p) ** (1 / p)
        assert abs(float(w_uv) - ref) <= 1e-8 * max(ref, scale)
    T = monotone_map(u_t, v_t, a_t, b_t)
    assert torch.isfinite(T).all() and T.shape == (n,)
