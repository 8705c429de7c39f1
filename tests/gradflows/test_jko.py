"""JKO: O(tau) convergence to the heat / OU closed forms (measured slope), monotone free
energy, mass conservation, the porous-medium Barenblatt profile, the 2-D entropic scheme."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from otgen.gradflows import (
    KL,
    EntropicJKO,
    Grid,
    InteractionEnergy,
    NegEntropy,
    PorousMedium,
    QuantileJKO,
    barenblatt,
    gaussian_quantiles,
    quadratic,
    quadratic_kernel,
)

D = torch.float64


def _slope(taus, errs):
    return float(np.polyfit(np.log(taus), np.log(errs), 1)[0])


def test_quantile_jko_heat_is_first_order_and_energy_decreases():
    T, x0 = 1.0, gaussian_quantiles(0.0, 1.0, 100)
    taus, errs = [0.2, 0.1, 0.05], []
    for tau in taus:
        res = QuantileJKO(tau)(NegEntropy(), x0, round(T / tau))
        assert res.converged
        assert bool((res.energies[1:] < res.energies[:-1]).all())
        std = float(res.states[-1].std() / x0.std())  # exact: sqrt(1 + 2T)
        errs.append(abs(std - math.sqrt(1 + 2 * T)))
    slope = _slope(taus, errs)
    assert 0.85 < slope < 1.15, (errs, slope)
    # the solver finds the true JKO minimiser: Gaussian JKO recursion s' = (s + sqrt(s^2+4tau))/2
    s = 1.0
    for _ in range(round(T / 0.05)):
        s = (s + math.sqrt(s * s + 4 * 0.05)) / 2
    assert abs(math.sqrt(1 + 2 * T) - errs[-1] - s) < 2.5e-3


def test_quantile_jko_ou_matches_closed_form():
    x0 = gaussian_quantiles(1.0, 0.5, 200)
    res = QuantileJKO(0.05)(KL(quadratic), x0, 20)
    xT = res.states[-1]
    m = math.exp(-1.0)
    v = 0.25 * math.exp(-2.0) + 1 - math.exp(-2.0)
    assert abs(float(xT.mean()) - m) < 0.03
    assert abs(float(xT.var() / x0.var()) * 0.25 - v) < 0.03
    assert bool((res.energies[1:] < res.energies[:-1]).all())


def test_entropic_jko_heat_first_order_mass_and_monotone_energy():
    grid = Grid.regular(-8.0, 8.0, 81)
    x = grid.points()[:, 0]
    rho0 = grid.density(-((x - 1) ** 2) / 2)
    errs, T = [], 1.2
    for tau in (0.4, 0.2):
        res = EntropicJKO(tau, gamma=tau**2)(NegEntropy(), rho0, grid, round(T / tau))
        rho = res.states[-1]
        mass = float(rho.sum()) * grid.cell
        mean = float((rho * x).sum()) * grid.cell
        var = float((rho * (x - mean) ** 2).sum()) * grid.cell
        assert res.converged and abs(mass - 1) < 1e-8 and abs(mean - 1) < 1e-3
        assert bool((res.energies[1:] < res.energies[:-1]).all())
        errs.append(abs(var - (1 + 2 * T)))
    assert errs[0] < 0.25 and 1.6 < errs[0] / errs[1] < 2.4, errs  # O(tau)


def test_entropic_jko_2d_ou():
    grid = Grid.regular(-4.0, 4.0, 33, dim=2)
    p = grid.points()
    rho0 = grid.density(-((p - torch.tensor([1.0, 0.0], dtype=D)) ** 2).sum(1).reshape(
        grid.shape) / (2 * 0.25))
    res = EntropicJKO(0.25)(KL(quadratic), rho0, grid, 4)
    rho = res.states[-1].reshape(-1)
    mean = (rho[:, None] * p).sum(0) * grid.cell
    assert abs(float(mean[0]) - math.exp(-1.0)) < 0.05 and abs(float(mean[1])) < 1e-8
    assert bool((res.energies[1:] < res.energies[:-1]).all())


def test_quantile_jko_aggregation_is_the_implicit_euler_contraction():
    # W = |z|^2/2: the exact JKO step is X - m -> (X - m) / (1 + tau); the flow is e^{-t}
    x0 = gaussian_quantiles(0.0, 0.5, 40)
    res = QuantileJKO(0.05)(InteractionEnergy(quadratic_kernel), x0, 20)
    ratio = float(res.states[-1].var() / x0.var())
    assert abs(ratio - 1.05 ** (-40)) < 1e-8
    assert abs(ratio - math.exp(-2.0)) < 0.02
    assert bool((res.energies[1:] < res.energies[:-1]).all())


def test_entropic_jko_porous_medium_tracks_barenblatt():
    grid = Grid.regular(-4.0, 4.0, 81)
    t0, T, tau = 0.05, 0.5, 0.1
    rho0 = grid.density(torch.log(barenblatt(grid.points(), t0)).reshape(grid.shape))
    res = EntropicJKO(tau)(PorousMedium(2.0), rho0, grid, round(T / tau))
    exact = grid.density(torch.log(barenblatt(grid.points(), t0 + T)))
    l1 = float((res.states[-1] - exact).abs().sum()) * grid.cell
    assert l1 < 0.05, l1
    assert bool((res.energies[1:] < res.energies[:-1]).all())


def test_non_convergence_is_reported_and_bad_input_raises():
    grid = Grid.regular(-4.0, 4.0, 41)
    rho0 = grid.density(-grid.points()[:, 0] ** 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = EntropicJKO(0.1, max_iter=2)(NegEntropy(), rho0, grid, 1)
    assert not res.converged and any("did not converge" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="mass 1"):
        EntropicJKO(0.1)(NegEntropy(), 2 * rho0, grid, 1)
    with pytest.raises(ValueError, match="strictly increasing"):
        QuantileJKO(0.1)(NegEntropy(), torch.tensor([0.0, 2.0, 1.0], dtype=D), 1)
    with pytest.raises(ValueError, match="`tau` must be a finite number > 0"):
        QuantileJKO(-1.0)
