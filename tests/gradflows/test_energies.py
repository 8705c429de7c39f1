"""Energies: first variations are derivatives, particle velocities are their gradients,
closed-form values, grid velocities of Gaussians, Barenblatt solves the PME."""

from __future__ import annotations

import math

import pytest
import torch

from otgen.gradflows import (
    KL,
    Grid,
    InteractionEnergy,
    NegEntropy,
    PorousMedium,
    PotentialEnergy,
    SumEnergy,
    attractive_repulsive_kernel,
    barenblatt,
    double_well,
    gaussian_quantiles,
    quadratic,
)

D = torch.float64
ENERGIES = [
    PotentialEnergy(double_well), NegEntropy(bandwidth=0.4), KL(quadratic, bandwidth=0.4),
    PorousMedium(2.5, bandwidth=0.4), InteractionEnergy(attractive_repulsive_kernel),
]


@pytest.mark.parametrize("energy", ENERGIES, ids=lambda e: e.name)
def test_particle_velocity_is_minus_gradient_of_first_variation(energy, gen):
    x = torch.randn(25, 2, generator=gen, dtype=D)
    w = torch.rand(25, generator=gen, dtype=D) + 0.5
    w = w / w.sum()
    v = energy.velocity_particles(x, w)  # -(1/w_i) dF/dx_i by autograd
    y = x.clone().requires_grad_(True)
    fv = energy.first_variation_particles(y, x, w)
    (grad,) = torch.autograd.grad(fv.sum(), y)
    torch.testing.assert_close(v, -grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("energy", ENERGIES, ids=lambda e: e.name)
def test_first_variation_is_the_directional_derivative_on_grids(energy, gen):
    grid = Grid.regular(-3.0, 3.0, 21, dim=2)
    pts = grid.points()
    rho = grid.density(-((pts - 0.3) ** 2).sum(1).reshape(grid.shape))
    chi = torch.randn(grid.shape, generator=gen, dtype=D) * rho  # keeps rho + e chi >= 0
    chi = chi - rho * chi.sum() / rho.sum()  # zero mass
    eps = 1e-6
    fd = (energy.grid(rho + eps * chi, grid) - energy.grid(rho - eps * chi, grid)) / (2 * eps)
    lin = (energy.first_variation_grid(rho, grid) * chi).sum() * grid.cell
    assert abs(float(fd - lin)) < 1e-6 * (1 + abs(float(lin)))


def test_grid_values_and_velocities_of_gaussians():
    grid = Grid.regular(-10.0, 10.0, 2001)
    x = grid.points()
    m, s = 0.5, 1.3
    rho = grid.density(-((x[:, 0] - m) ** 2) / (2 * s * s))
    ent = float(NegEntropy().grid(rho, grid))
    assert abs(ent + 0.5 * math.log(2 * math.pi * math.e * s * s)) < 1e-8
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2
    kl = float(KL(quadratic).grid(rho, grid))
    assert abs(kl - 0.5 * (s * s + m * m - 1 - math.log(s * s))) < 1e-8
    # velocities: heat -grad log rho = (x - m)/s^2, OU: (x - m)/s^2 - x
    inner = slice(200, -200)
    v = NegEntropy().velocity_grid(rho, grid)[inner, 0]
    torch.testing.assert_close(v, (x[inner, 0] - m) / s**2, atol=1e-4, rtol=0)
    v = KL(quadratic).velocity_grid(rho, grid)[inner, 0]
    torch.testing.assert_close(v, (x[inner, 0] - m) / s**2 - x[inner, 0], atol=1e-4, rtol=0)


def test_quantile_energies_approach_closed_forms():
    X = gaussian_quantiles(0.0, 1.0, 4000)
    assert abs(float(NegEntropy().quantiles(X)) + 0.5 * math.log(2 * math.pi * math.e)) < 5e-3
    assert abs(float(PotentialEnergy(quadratic).quantiles(X)) - 0.5) < 1e-3
    # interaction with |z|^2/2: (1/2) E|X - Y|^2 / 2 = Var / 2
    W = InteractionEnergy(lambda z: 0.5 * (z * z).sum(-1))
    assert abs(float(W.quantiles(X[::4])) - 0.5) < 2e-3


def test_barenblatt_has_unit_mass_and_solves_the_porous_medium_equation():
    m = 2.0
    for d in (1, 2):
        g = Grid.regular(-4.0, 4.0, 401 if d == 1 else 161, dim=d)
        mass = float(barenblatt(g.points(), 0.3, m).sum()) * g.cell
        assert abs(mass - 1.0) < 2e-3
    # d rho/dt = (rho^m)'' at an interior point, by finite differences (1-D)
    x = torch.tensor([[0.2]], dtype=D)
    t, h, k = 0.5, 1e-4, 1e-3

    def b(x_, t_):
        return barenblatt(x_, t_, m)

    dt = (b(x, t + h) - b(x, t - h)) / (2 * h)
    e = torch.tensor([[k]], dtype=D)
    lap = (b(x + e, t) ** m - 2 * b(x, t) ** m + b(x - e, t) ** m) / k**2
    assert abs(float(dt - lap)) < 1e-4 * abs(float(dt))


def test_bad_input():
    with pytest.raises(ValueError, match="`m` must be a finite number > 1"):
        PorousMedium(1.0)
    with pytest.raises(ValueError, match="at most one internal"):
        NegEntropy() + PorousMedium(2.0)
    assert isinstance(NegEntropy() + PotentialEnergy(quadratic), SumEnergy)
    grid = Grid.regular(-1.0, 1.0, 5)
    with pytest.raises(ValueError, match="grid's shape"):
        NegEntropy().grid(torch.ones(4, dtype=D), grid)
    with pytest.raises(ValueError, match="uniformly spaced"):
        Grid((torch.tensor([0.0, 1.0, 3.0], dtype=D),))
