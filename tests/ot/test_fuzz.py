"""Hypothesis fuzzing of the public OT entry points over shapes, weights, scales, dtypes.

Each property is checked on every generated case: finite outputs, non-negative costs,
plan marginals, agreement of the exact solver with POT, and the ordering
``exact <= sinkhorn cost``.
"""

from __future__ import annotations

import warnings

import numpy as np
import ot as pot
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otgen.ot import (
    ConvergenceWarning,
    barycentric_projection,
    c_transform,
    sinkhorn_divergence,
    solve,
    wasserstein,
)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    n = draw(st.integers(1, 25))
    m = draw(st.integers(1, 25))
    d = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
    y = (scale * torch.randn(m, d, generator=g, dtype=torch.float64) + scale).to(dtype)
    uniform = draw(st.booleans())
    if uniform:
        a = b = None
    else:
        a = torch.rand(n, generator=g, dtype=torch.float64) + 0.01
        b = torch.rand(m, generator=g, dtype=torch.float64) + 0.01
        if draw(st.booleans()) and n > 1:  # some zero weights
            a[0] = 0.0
        a, b = (a / a.sum()).to(dtype), (b / b.sum()).to(dtype)
    return x, y, a, b


def _weights(w, k, like):
    return torch.full((k,), 1.0 / k, dtype=like.dtype) if w is None else w


@SETTINGS
@given(problems())
def test_exact_solver_properties(case):
    x, y, a, b = case
    res = solve(x, y, a, b)
    aw, bw = _weights(a, len(x), x), _weights(b, len(y), y)
    tol = 1e-9 if x.dtype == torch.float64 else 1e-4
    assert res.converged
    assert torch.isfinite(res.cost) and float(res.cost) >= 0
    assert float((res.plan.sum(1) - aw).abs().sum()) <= tol * max(1, len(x))
    C = pot.dist(x.double().numpy(), y.double().numpy())
    ref = pot.emd2(aw.double().numpy(), bw.double().numpy() * float(aw.sum() / bw.sum()), C,
                   numItermax=10**7)
    assert np.isclose(float(res.cost), ref, rtol=1e-4, atol=1e-6 * (1 + C.max()))
    # distance of a cloud to itself is zero, to round-off of the cost scale
    assert float(wasserstein(x, x, aw, aw)) <= 1e-3 * (1 + float(x.abs().max()))


@SETTINGS
@given(problems(), st.sampled_from([0.05, 0.01]))
def test_sinkhorn_properties(case, rel):
    x, y, a, b = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = solve(x, y, a, b, method="sinkhorn", eps_rel=rel, max_iter=2000)
    for t in (res.cost, res.objective, res.f, res.g, res.plan):
        assert torch.isfinite(t).all()
    assert res.cost.dtype == x.dtype
    exact = float(solve(x.double(), y.double(), None if a is None else a.double(),
                        None if b is None else b.double()).cost)
    # the entropic plan is feasible up to its marginal error e, so its cost cannot be below
    # the LP optimum by more than e * max(C) (plus round-off)
    cmax = float((torch.cdist(x.double(), y.double()) ** 2).max())
    rel = 1e-3 if x.dtype == torch.float32 else 1e-9
    if res.converged:
        slack = float(res.errors[-1]) * cmax + rel * (exact + cmax)
        assert float(res.cost) >= exact - slack


@SETTINGS
@given(problems())
def test_divergence_and_duality_properties(case):
    x, y, a, b = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = sinkhorn_divergence(x, y, a, b, eps_rel=0.1, max_iter=2000)
    assert torch.isfinite(s) and float(s) >= 0
    g = torch.zeros(len(y), dtype=x.dtype)
    f = c_transform(g, x, y)
    assert torch.isfinite(f).all() and float(f.min()) >= 0  # min_j |x - y_j|^2 >= 0
    res = solve(x, y, a, b)
    keep = res.plan.sum(1) > 0
    T = barycentric_projection(res.plan[keep], y)
    assert T.shape == (int(keep.sum()), y.shape[1]) and torch.isfinite(T).all()
