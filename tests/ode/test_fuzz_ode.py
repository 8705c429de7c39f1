"""Hypothesis fuzzing of ``otgen.ode.integrate`` over states, dtypes, spans and steppers.

Property on every generated case: a linear ODE dx/dt = A x, solved forward or backward,
matches ``torch.linalg.matrix_exp`` within the accuracy the stepper's order promises, keeps
the state's shape and dtype, and reports a positive NFE.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otgen.ode import integrate

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

#: method -> (steps, tolerance relative to |x0|) for |A| <= 1 over |t1 - t0| <= 1
TOLS = {"euler": (400, 5e-3), "midpoint": (100, 1e-4), "heun": (100, 1e-4),
        "rk4": (50, 1e-7), "dopri5": (None, 1e-5)}


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 4), st.sampled_from(sorted(TOLS)),
       st.floats(-1.0, 1.0), st.floats(0.1, 1.0), st.sampled_from([1, -1]),
       st.sampled_from([torch.float64, torch.float32]), st.integers(0, 2**31 - 1))
def test_linear_ode_matches_matrix_exponential(b, d, method, t0, span, direction, dtype,
                                               seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    A = A / max(1.0, float(torch.linalg.matrix_norm(A, ord=2)))  # |A| <= 1
    x0 = torch.randn(b, d, generator=g, dtype=torch.float64)
    t1 = t0 + direction * span
    steps, tol = TOLS[method]
    res = integrate(lambda t, x: x @ A.T.to(x.dtype), x0.to(dtype), t0=t0, t1=t1,
                    method=method, steps=steps, atol=1e-9, rtol=1e-9)
    exact = x0 @ torch.linalg.matrix_exp((t1 - t0) * A).T
    assert res.x.shape == (b, d) and res.x.dtype == dtype
    assert res.nfe > 0
    tol = max(tol, 1e-5) if dtype == torch.float32 else tol
    err = float((res.x.double() - exact).abs().max())
    assert err <= tol * (1.0 + float(x0.abs().max())), (method, err)
