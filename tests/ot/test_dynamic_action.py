"""Least-action dynamic OT: diagnostics against closed forms, the Gaussian (Bures) value
and map, the Hungarian matching of two clouds, HJ residual, curl, and input errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from otgen.ot import (
    DynamicProblem,
    LeastAction,
    assignment,
    bures_map,
    gaussian_w2_squared,
    least_action,
    wasserstein,
)
from otgen.ot.dynamic_diag import curl_rms, hj_residual, integrate_action, straightness

D = torch.float64


def gaussian_sampler(m, S):
    L = torch.linalg.cholesky(S)

    def draw(n, generator=None):
        return m + torch.randn(n, m.shape[0], dtype=D, generator=generator) @ L.T

    return draw


# --------------------------------------------------------------------------- diagnostics


def test_integrate_action_closed_forms():
    x0 = torch.linspace(-1, 2, 7, dtype=D)[:, None]
    # u = a x: x_t = x0 e^{a t}; action = a x0^2 (e^{2a} - 1) / 4
    a = 0.7
    x1, act, xs = integrate_action(lambda t, x: a * x, x0, steps=64, method="rk4", record=True)
    assert torch.allclose(x1, x0 * math.exp(a), atol=1e-10)
    assert torch.allclose(act, a * x0[:, 0] ** 2 * (math.exp(2 * a) - 1) / 4, atol=1e-10)
    assert xs is not None and xs.shape == (65, 7, 1)
    # straight constant-speed paths have zero excess energy; curved ones positive
    c = torch.tensor([[1.0, -2.0]], dtype=D)
    y1, act_c, _ = integrate_action(lambda t, x: c.expand_as(x), torch.zeros(3, 2, dtype=D))
    assert torch.allclose(act_c, torch.full((3,), 2.5, dtype=D))
    assert straightness(torch.zeros(3, 2, dtype=D), y1, act_c) == pytest.approx(0, abs=1e-12)
    assert straightness(x0, x1, act) > 0


def test_hj_residual_zero_for_the_optimal_potential_large_otherwise():
    # Scaling x -> s x: phi(x, t) = (s - 1)|x|^2 / (2 (1 + t (s - 1))) solves HJ exactly.
    s = 2.5
    opt = lambda t, x: (s - 1) * (x**2).sum(1) / (2 * (1 + t * (s - 1)))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200, 2, dtype=D, generator=g)
    ts = torch.linspace(0, 1, 5, dtype=D)
    xs = torch.stack([(1 + float(t) * (s - 1)) * x0 for t in ts])
    assert hj_residual(opt, xs, ts) < 1e-12
    # the same velocity at t = 0 but frozen in time is not a solution of HJ
    frozen = lambda t, x: (s - 1) * (x**2).sum(1) / 2 + 0 * t  # noqa: E731
    assert hj_residual(frozen, xs, ts) > 0.2
    # adding any c(t) to phi leaves the gauge-fixed residual unchanged
    shifted = lambda t, x: opt(t, x) + torch.sin(3 * t)  # noqa: E731
    assert hj_residual(shifted, xs, ts) < 1e-12


def test_curl_of_rotation_and_gradient_fields():
    xs = torch.randn(3, 40, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    rot = lambda t, x: torch.stack([-x[:, 1], x[:, 0]], 1) * (1 + t)  # noqa: E731
    curl, rel = curl_rms(rot, xs, ts)
    assert curl == pytest.approx(2 * math.sqrt((1 + 2.25 + 4) / 3), rel=1e-12)
    assert rel == pytest.approx(1.0, rel=1e-12)
    grad = lambda t, x: torch.stack([x[:, 0] ** 2, torch.sin(x[:, 1])], 1)  # noqa: E731
    assert curl_rms(grad, xs, ts)[0] < 1e-12


# --------------------------------------------------------------------------- solver


def test_hungarian_matching_of_two_equal_clouds():
    """The seed's discrete statement: time-1 positions approach the optimal assignment."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 2, dtype=D, generator=g)
    y = torch.randn(10, 2, dtype=D, generator=g) * 0.6 + torch.tensor([3.0, 1.0], dtype=D)
    res = least_action(x, y, parametrisation="free", iterations=400, n_particles=10,
                       generator=torch.Generator().manual_seed(0))
    sigma = assignment(x, y)
    assert torch.equal(assignment(res.x1, y), sigma)  # the flow realises the matching
    err = (res.x1 - y[sigma]).norm(dim=1)
    assert float(err.mean()) < 0.02 * float((y[sigma] - x).norm(dim=1).mean())
    w2 = float(wasserstein(x, y)) ** 2
    assert float(res.action) == pytest.approx(w2 / 2, rel=0.05)
    assert res.converged and res.curl is not None and res.potential is None


def test_1d_gaussians_fast_value_map_and_hj():
    m0, S0 = torch.tensor([0.0], dtype=D), torch.tensor([[1.0]], dtype=D)
    m1, S1 = torch.tensor([2.0], dtype=D), torch.tensor([[0.25]], dtype=D)
    g = torch.Generator().manual_seed(0)
    res = least_action(gaussian_sampler(m0, S0), gaussian_sampler(m1, S1), iterations=200,
                       n_particles=128, generator=g)
    W = float(gaussian_w2_squared(m0, S0, m1, S1))  # 4.25
    xe = gaussian_sampler(m0, S0)(4000, torch.Generator().manual_seed(9))
    x1, act, _ = res.transport(xe)
    T = bures_map(m0, S0, m1, S1)
    assert float(act.mean()) == pytest.approx(W / 2, rel=0.03)
    assert float(((x1 - T(xe)) ** 2).sum(1).mean()) < 0.01 * W
    assert res.hj_residual is not None and res.hj_residual < 0.25
    assert res.curl is None and res.potential is not None


@pytest.mark.slow
def test_2d_gaussians_default_budget_within_two_percent_of_bures():
    m0, S0 = torch.tensor([0.0, 0.0], dtype=D), torch.tensor([[1.0, 0.0], [0.0, 0.25]], dtype=D)
    m1, S1 = torch.tensor([2.0, 1.0], dtype=D), torch.tensor([[0.5, 0.3], [0.3, 1.5]], dtype=D)
    g = torch.Generator().manual_seed(0)
    res = LeastAction()(DynamicProblem(gaussian_sampler(m0, S0), gaussian_sampler(m1, S1)),
                        generator=g)
    W = float(gaussian_w2_squared(m0, S0, m1, S1))
    xe = gaussian_sampler(m0, S0)(4000, torch.Generator().manual_seed(1))
    x1, act, _ = res.transport(xe)
    assert float(act.mean()) == pytest.approx(W / 2, rel=0.02)
    T = bures_map(m0, S0, m1, S1)
    assert float(((x1 - T(xe)) ** 2).sum(1).mean()) < 0.01 * W
    assert res.hj_residual is not None and res.hj_residual < 0.3


def test_sinkhorn_divergence_penalty_translation():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(48, 2, dtype=D, generator=g)
    shift = torch.tensor([1.5, -0.5], dtype=D)
    res = least_action(x, x + shift, divergence="sinkhorn", eps_rel=0.1,
                       parametrisation="free", iterations=120, n_particles=48, generator=g)
    assert float(res.action) == pytest.approx(0.5 * float(shift @ shift), rel=0.03)
    assert torch.allclose(res.x1 - x, shift.expand_as(x), atol=0.1)


def test_nonconvergence_warns_and_bad_inputs_raise():
    x = torch.randn(8, 2, dtype=D)
    with pytest.warns(RuntimeWarning, match="did not reach the target"):
        least_action(x, x + 5.0, iterations=2, n_particles=8, parametrisation="free")
    with pytest.raises(ValueError, match="parametrisation"):
        LeastAction(parametrisation="curl")
    with pytest.raises(ValueError, match="share dimension"):
        DynamicProblem(x, torch.randn(8, 3, dtype=D))
    with pytest.raises(TypeError, match="sampler"):
        DynamicProblem(x, "moons")
    with pytest.raises(ValueError, match="equal-size"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        least_action(x, torch.randn(5, 2, dtype=D), iterations=1, n_particles=8)
