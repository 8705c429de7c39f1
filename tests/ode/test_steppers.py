"""Steppers: one-step formulas, measured convergence orders, Dopri5 pair, PI controller."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from otgen.ode import (
    RK4,
    STEPPERS,
    Dopri5,
    Euler,
    Heun,
    Midpoint,
    PIController,
    dopri5_step,
    euler_step,
    get_stepper,
    heun_step,
    initial_step,
    integrate,
    midpoint_step,
    pi_factor,
    rk4_step,
)

D = torch.float64
FIXED = [(Euler(), 1), (Heun(), 2), (Midpoint(), 2), (RK4(), 4)]


def _taylor(z: torch.Tensor, order: int) -> torch.Tensor:
    """sum_{k<=order} z^k / k! for a square matrix z."""
    out = torch.eye(z.shape[0], dtype=z.dtype)
    term = torch.eye(z.shape[0], dtype=z.dtype)
    for k in range(1, order + 1):
        term = term @ z / k
        out = out + term
    return out


@pytest.fixture
def linear() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 3, generator=g, dtype=D) / 2
    x = torch.randn(5, 3, generator=g, dtype=D)
    return a, x


@pytest.mark.parametrize(
    ("step", "order"),
    [(euler_step, 1), (heun_step, 2), (midpoint_step, 2), (rk4_step, 4)],
)
def test_one_step_is_taylor_polynomial_on_linear_field(linear, step, order):
    # For x' = A x an explicit s-stage RK method of order s = p <= 4 maps x to
    # R(hA) x with R the degree-p Taylor polynomial of exp.
    a, x = linear
    h = 0.3
    got = step(lambda t, y: y @ a.T, 0.0, x, h)
    want = x @ _taylor(h * a, order).T
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_dopri5_stability_polynomial(linear):
    # Dopri5's 5th-order solution has R(z) = sum_{k<=5} z^k/k! + z^6/600.
    a, x = linear
    h = 0.4
    y5, err, k7 = dopri5_step(lambda t, y: y @ a.T, 0.0, x, h)
    z = h * a
    r = _taylor(z, 5) + torch.linalg.matrix_power(z, 6) / 600
    torch.testing.assert_close(y5, x @ r.T, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(k7, y5 @ a.T)  # FSAL: last stage = v(t + h, y5)
    torch.testing.assert_close(Dopri5().step(lambda t, y: y @ a.T, 0.0, x, h), y5)
    assert not err.requires_grad


def test_dopri5_error_estimate_is_fifth_order(linear):
    # The embedded estimate y5 - y4 is the local error of the 4th-order solution: O(h^5).
    a, x = linear
    hs = [0.2, 0.1, 0.05, 0.025]
    errs = [float(dopri5_step(lambda t, y: y @ a.T, 0.0, x, h)[1].norm()) for h in hs]
    slope = math.log(errs[-2] / errs[-1]) / math.log(2)
    assert abs(slope - 5) < 0.3, (errs, slope)


def test_dopri5_fsal_argument_matches_fresh_evaluation(linear):
    a, x = linear
    def v(t, y):
        return torch.sin(y @ a.T) + t
    y_a, e_a, k_a = dopri5_step(v, 0.1, x, 0.2)
    y_b, e_b, k_b = dopri5_step(v, 0.1, x, 0.2, k1=v(0.1, x))
    torch.testing.assert_close(y_a, y_b, rtol=0, atol=0)
    torch.testing.assert_close(e_a, e_b, rtol=0, atol=0)


def _problems():
    # dx/dt = -2 t x, x(t) = x0 exp(-t^2)   and   a 2-D rotation x(t) = R(t) x0.
    x0 = torch.tensor([[1.0], [-0.5], [2.0]], dtype=D)
    yield (lambda t, x: -2.0 * t * x), x0, x0 * math.exp(-1.0)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D)
    p0 = torch.tensor([[1.0, 0.0], [0.3, -0.7]], dtype=D)
    c, s = math.cos(1.0), math.sin(1.0)
    r1 = torch.tensor([[c, -s], [s, c]], dtype=D)
    yield (lambda t, x: x @ rot.T), p0, p0 @ r1.T


@pytest.mark.parametrize(("stepper", "order"), FIXED, ids=lambda s: getattr(s, "name", ""))
@pytest.mark.parametrize("problem", list(range(2)), ids=["gauss_decay", "rotation"])
def test_measured_order_of_convergence(stepper, order, problem):
    field, x0, exact = list(_problems())[problem]
    ns = [8, 16, 32, 64, 128]
    errs = [float((integrate(field, x0, method=stepper, steps=n).x - exact).abs().max())
            for n in ns]
    log_dt = torch.log(torch.tensor([1.0 / n for n in ns], dtype=D))
    log_err = torch.log(torch.tensor(errs, dtype=D))
    slope = float(torch.linalg.lstsq(
        torch.stack([log_dt, torch.ones_like(log_dt)], 1), log_err[:, None]).solution[0])
    assert abs(slope - order) < 0.2, (errs, slope)


def test_stepper_objects_are_frozen_and_named():
    assert {s.name for s, _ in FIXED} | {"dopri5"} == set(STEPPERS)
    for stepper, order in FIXED:
        assert stepper.order == order and not stepper.adaptive
    d = Dopri5()
    assert d.adaptive and d.order == 5 and d.error_order == 4 and d.fsal
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.atol = 1.0  # type: ignore[misc]
    assert get_stepper("RK4") == RK4()
    assert get_stepper("dopri5", atol=1e-7) == Dopri5(atol=1e-7)
    assert get_stepper(d) is d


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(atol=0.0), ValueError, "`atol` must be a finite number > 0"),
        (dict(rtol=-1e-3), ValueError, "`rtol` must be a finite number >= 0"),
        (dict(max_steps=0), ValueError, "`max_steps` must be >= 1"),
        (dict(first_step=-0.1), ValueError, "`first_step`"),
        (dict(controller="pi"), TypeError, "`controller` must be a PIController"),
    ],
)
def test_dopri5_rejects_bad_config(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Dopri5(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(safety=1.5), r"`safety` must be in \(0, 1\]"),
        (dict(min_factor=1.2), "min_factor"),
        (dict(max_factor=0.5), "max_factor"),
        (dict(beta=0.5), r"`beta` must be in \[0, 0.2\)"),
    ],
)
def test_controller_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PIController(**kwargs)


def test_pi_factor_formulas():
    kw = dict(order=4, safety=0.9, min_factor=0.2, max_factor=10.0)
    # I controller: 0.9 err^(-1/5)
    assert pi_factor(0.5, 1.0, accepted=True, beta=0.0, **kw) == pytest.approx(0.9 * 2 ** 0.2)
    # PI: 0.9 err^-(0.2 - 0.75 beta) err_prev^beta
    beta = 0.04
    want = 0.9 * 0.5 ** -(0.2 - 0.75 * beta) * 0.3 ** beta
    assert pi_factor(0.5, 0.3, accepted=True, beta=beta, **kw) == pytest.approx(want)
    # clipping and special values
    assert pi_factor(1e-30, 1.0, accepted=True, beta=0.0, **kw) == 10.0
    assert pi_factor(0.0, 1.0, accepted=True, beta=0.0, **kw) == 10.0
    assert pi_factor(1e30, 1.0, accepted=False, beta=0.0, **kw) == 0.2
    assert pi_factor(math.inf, 1.0, accepted=False, beta=0.0, **kw) == 0.2
    rejected = pi_factor(2.0, 1.0, accepted=False, beta=beta, **kw)
    assert 0.2 <= rejected < 1.0


def test_initial_step_scales_with_tolerance():
    # Hairer's HINIT picks h ~ (0.01 / ||f'||)^(1/5): tighter tolerances, smaller steps.
    x0 = torch.ones(4, 2, dtype=D)
    def v(t, x):
        return -3.0 * x
    steps = [initial_step(v, 0.0, x0, v(0.0, x0), 1.0, order=4, atol=tol, rtol=tol)
             for tol in (1e-3, 1e-6, 1e-9)]
    assert all(h > 0 for h in steps)
    assert steps[0] > steps[1] > steps[2]
    # d2 = ||f'|| = 9 / (tol (1 + 1)) for this field, h1 = (0.01 / max(d1, d2))^(1/5)
    tol = 1e-6
    d1 = 3.0 / (tol + tol)
    h1 = (0.01 / max(d1, 9.0 / (2 * tol))) ** 0.2
    assert steps[1] == pytest.approx(min(100 * 0.01 * (1 / (2 * tol)) / d1, h1), rel=1e-6)
