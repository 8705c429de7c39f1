r"""Free energies on Wasserstein space, their first variations and Wasserstein gradients.

For a functional :math:`F(\rho)` the first variation :math:`\frac{\delta F}{\delta\rho}` is
defined by :math:`\frac{d}{d\epsilon}F(\rho + \epsilon\chi)|_0 = \int \frac{\delta F}
{\delta\rho}\,d\chi`, the Wasserstein gradient is :math:`\nabla\frac{\delta F}{\delta\rho}`,
and the gradient flow :math:`\partial_t\rho = \nabla\cdot(\rho\nabla\frac{\delta F}
{\delta\rho})` moves mass with velocity :math:`v = -\nabla\frac{\delta F}{\delta\rho}`
(seed note "Wasserstein gradient flow and diffusion models").

=================== ======================================= ================================
energy              :math:`F(\rho)`                         :math:`\delta F/\delta\rho`
=================== ======================================= ================================
PotentialEnergy     :math:`\int V\,d\rho`                   :math:`V`
NegEntropy          :math:`\int \rho\log\rho`               :math:`\log\rho + 1`
KL                  :math:`\int\rho\log(\rho/\pi)`,         :math:`\log\rho + 1 + V`
                    :math:`\pi = e^{-V}/Z`
PorousMedium        :math:`\int \rho^m/(m-1)`               :math:`\tfrac{m}{m-1}\rho^{m-1}`
InteractionEnergy   :math:`\tfrac12\iint W(x-y)d\rho d\rho` :math:`W * \rho`
=================== ======================================= ================================

Every energy works on three representations:

* **particles** ``x`` ``(n, d)`` with weights ``w`` ``(n,)`` (uniform by default). Internal
  energies use the *blob* approximation of Carrillo, Craig & Patacchini (2019):
  :math:`F_h(\mu) = \int U(\varphi_h * \mu)/(\varphi_h*\mu)\,d\mu` with a Gaussian
  mollifier :math:`\varphi_h`, whose first variation is exact and whose particle gradient
  is :math:`\partial F/\partial x_i = w_i\nabla\frac{\delta F}{\delta\rho}(x_i)`;
  :meth:`AbstractEnergy.velocity_particles` uses that identity through autograd.
* **grids** (:class:`Grid`): densities ``rho`` of shape ``grid.shape`` (mass per volume),
  masses :math:`p = \rho\,\Delta x`. Velocities by central finite differences.
* **1-D quantiles** ``X`` ``(N,)`` sorted, each carrying mass ``1/N`` (for the exact JKO in
  :mod:`otgen.gradflows.jko`); internal energies use the density :math:`1/(N\Delta X_i)`
  on each gap.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from otgen._validate import as_points, as_weights, check_positive_or_none
from otgen.gradflows._discrete import (
    Grid,
    _bandwidth,
    _blob_kernel,
    _gradient,
    _xlogx,
    blob_log_density,
    scott_bandwidth,
)
from otgen.gradflows.potentials import Kernel, Potential, grad_potential

__all__ = [
    "Grid", "AbstractEnergy", "PotentialEnergy", "NegEntropy", "KL", "PorousMedium",
    "InteractionEnergy", "SumEnergy", "blob_log_density", "scott_bandwidth",
]


# ------------------------------------------------------------------------------- energies


class AbstractEnergy(abc.ABC):
    """Interface of a free energy (see the module docstring for the representations).

    Subclasses implement the ``particles`` / ``grid`` / ``quantiles`` values and first
    variations; velocities follow. For the entropic JKO, :meth:`grid_potential` returns
    the part of the energy that is linear in :math:`\\rho` (a potential on the grid, for
    interactions linearised at ``rho_ref``) and :meth:`prox_log` the KL-proximal map of the
    separable internal part (``None`` when there is none).
    """

    name: ClassVar[str] = "energy"
    #: whether the energy has a separable internal part (``prox_log`` is not ``None``)
    internal: ClassVar[bool] = False

    def __add__(self, other: AbstractEnergy) -> SumEnergy:
        return SumEnergy((self, other))

    # particles ------------------------------------------------------------------------
    @abc.abstractmethod
    def particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        """Energy of :math:`\\sum_i w_i\\delta_{x_i}`; ``x`` ``(n, d)`` → ``()``."""

    @abc.abstractmethod
    def first_variation_particles(self, y: Tensor, x: Tensor, w: Tensor | None = None
                                  ) -> Tensor:
        """:math:`\\frac{\\delta F}{\\delta\\rho}` of the particle measure at points ``y``
        ``(m, d)`` → ``(m,)``."""

    def velocity_particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        r"""Velocity :math:`v_i = -\nabla\frac{\delta F}{\delta\rho}(x_i) = -\frac{1}{w_i}
        \frac{\partial F}{\partial x_i}` of each particle, ``(n, d)`` (autograd; graph kept
        when ``x`` requires grad)."""
        x = as_points("x", x)
        w = as_weights("w", w, x.shape[0], x)
        return -grad_potential(lambda z: self.particles(z, w).reshape(1), x) / w[:, None]

    # grids ----------------------------------------------------------------------------
    @abc.abstractmethod
    def grid(self, rho: Tensor, grid: Grid) -> Tensor:
        """Energy of the density ``rho`` (``grid.shape``) → ``()``."""

    @abc.abstractmethod
    def first_variation_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        """:math:`\\frac{\\delta F}{\\delta\\rho}` on the grid, ``grid.shape``."""

    def velocity_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        """:math:`-\\nabla\\frac{\\delta F}{\\delta\\rho}` by central differences,
        ``(*grid.shape, dim)`` (meaningful where ``rho > 0``)."""
        return -_gradient(self.first_variation_grid(grid.check("rho", rho), grid), grid)

    def grid_potential(self, rho_ref: Tensor, grid: Grid) -> Tensor | None:
        """The linear-in-ρ part as a potential on the grid (``None`` if absent)."""
        return None

    def prox_log(self, logz: Tensor, sigma: float, grid: Grid) -> Tensor | None:
        r"""Log of :math:`\arg\min_p \sigma F_{int}(p) + \mathrm{KL}(p\,|\,z)` for the
        separable internal part on masses ``p``; ``None`` if there is none."""
        return None

    # 1-D quantiles --------------------------------------------------------------------
    @abc.abstractmethod
    def quantiles(self, X: Tensor) -> Tensor:
        """Energy of :math:`\\frac1N\\sum_i \\delta_{X_i}` in 1-D (``X`` ``(N,)`` sorted)
        with internal energies on the gap densities :math:`1/(N\\Delta X_i)` → ``()``."""


def _w(x: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor]:
    x = as_points("x", x)
    return x, as_weights("w", w, x.shape[0], x)


@dataclass(frozen=True)
class PotentialEnergy(AbstractEnergy):
    r""":math:`F(\rho) = \int V\,d\rho`; :math:`\delta F/\delta\rho = V`; velocity
    :math:`-\nabla V`. ``V``: ``(B, d) -> (B,)``."""

    V: Potential
    name: ClassVar[str] = "potential"

    def particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        x, w = _w(x, w)
        return (w * self.V(x)).sum()

    def first_variation_particles(self, y: Tensor, x: Tensor, w: Tensor | None = None
                                  ) -> Tensor:
        return self.V(y)

    def grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return (grid.check("rho", rho) * grid.evaluate(self.V)).sum() * grid.cell

    def first_variation_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return grid.evaluate(self.V).to(rho)

    def grid_potential(self, rho_ref: Tensor, grid: Grid) -> Tensor | None:
        return grid.evaluate(self.V).to(rho_ref)

    def quantiles(self, X: Tensor) -> Tensor:
        return self.V(X[:, None]).mean()


@dataclass(frozen=True)
class NegEntropy(AbstractEnergy):
    r""":math:`F(\rho) = \int\rho\log\rho`; :math:`\delta F/\delta\rho = \log\rho + 1`;
    its flow is the heat equation :math:`\partial_t\rho = \Delta\rho`.

    Args:
        bandwidth: Blob width ``h`` for particles (``None``: Scott's rule per call).
    """

    bandwidth: float | None = None
    name: ClassVar[str] = "entropy"
    internal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_positive_or_none("bandwidth", self.bandwidth)

    def _h(self, x: Tensor) -> float:
        return _bandwidth(self.bandwidth, x)

    def particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        x, w = _w(x, w)
        return (w * blob_log_density(x, x, w, self._h(x))).sum()

    def first_variation_particles(self, y: Tensor, x: Tensor, w: Tensor | None = None
                                  ) -> Tensor:
        x, w = _w(x, w)
        h = self._h(x)
        inv = torch.exp(-blob_log_density(x, x, w, h))  # 1 / rho_h(x_j), (n,)
        return blob_log_density(y, x, w, h) + _blob_kernel(y, x, h) @ (w * inv)

    def grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return _xlogx(grid.check("rho", rho), 1.0).sum() * grid.cell

    def first_variation_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return torch.log(rho.clamp_min(torch.finfo(rho.dtype).tiny)) + 1.0

    def prox_log(self, logz: Tensor, sigma: float, grid: Grid) -> Tensor | None:
        # sigma (log(p / cell) + 1) + log p - log z = 0
        return (logz + sigma * (math.log(grid.cell) - 1.0)) / (1.0 + sigma)

    def quantiles(self, X: Tensor) -> Tensor:
        n = X.shape[0]
        return -torch.log(n * (X[1:] - X[:-1])).sum() / n


@dataclass(frozen=True)
class KL(AbstractEnergy):
    r""":math:`\mathrm{KL}(\rho\,\|\,\pi) = \int\rho\log\rho + \int V\rho + \log Z`,
    :math:`\pi = e^{-V}/Z`; :math:`\delta F/\delta\rho = \log\rho + 1 + V`; its flow is the
    Fokker--Planck equation of Langevin dynamics :math:`dX = -\nabla V dt + \sqrt2 dW`.

    Args:
        V: Potential ``(B, d) -> (B,)``.
        log_z: :math:`\log Z`; ``None`` drops the constant for particles and quantiles and
            uses the grid's own normaliser on grids.
        bandwidth: Blob width for particles (``None``: Scott's rule).
    """

    V: Potential
    log_z: float | None = None
    bandwidth: float | None = None
    name: ClassVar[str] = "kl"
    internal: ClassVar[bool] = True

    def _parts(self) -> tuple[NegEntropy, PotentialEnergy]:
        return NegEntropy(self.bandwidth), PotentialEnergy(self.V)

    def particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        e, p = self._parts()
        return e.particles(x, w) + p.particles(x, w) + (self.log_z or 0.0)

    def first_variation_particles(self, y: Tensor, x: Tensor, w: Tensor | None = None
                                  ) -> Tensor:
        e, p = self._parts()
        return e.first_variation_particles(y, x, w) + p.first_variation_particles(y, x, w)

    def grid(self, rho: Tensor, grid: Grid) -> Tensor:
        e, p = self._parts()
        log_z = self.log_z
        if log_z is None:
            log_z = float(torch.logsumexp(-grid.evaluate(self.V).reshape(-1), 0)) + math.log(
                grid.cell)
        return e.grid(rho, grid) + p.grid(rho, grid) + log_z

    def first_variation_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        e, p = self._parts()
        return e.first_variation_grid(rho, grid) + p.first_variation_grid(rho, grid)

    def grid_potential(self, rho_ref: Tensor, grid: Grid) -> Tensor | None:
        return grid.evaluate(self.V).to(rho_ref)

    def prox_log(self, logz: Tensor, sigma: float, grid: Grid) -> Tensor | None:
        return NegEntropy().prox_log(logz, sigma, grid)

    def quantiles(self, X: Tensor) -> Tensor:
        e, p = self._parts()
        return e.quantiles(X) + p.quantiles(X) + (self.log_z or 0.0)


@dataclass(frozen=True)
class PorousMedium(AbstractEnergy):
    r""":math:`F(\rho) = \int U(\rho)`, :math:`U(\rho) = \rho^m/(m-1)` (``m > 1``);
    :math:`\delta F/\delta\rho = \tfrac{m}{m-1}\rho^{m-1}`; its flow is the porous medium
    equation :math:`\partial_t\rho = \Delta\rho^m` (Barenblatt profiles are exact
    self-similar solutions).

    Args:
        m: Exponent > 1.
        bandwidth: Blob width for particles (``None``: Scott's rule).
        newton_iter: Newton iterations of the grid KL-prox (monotone convergence).
    """

    m: float = 2.0
    bandwidth: float | None = None
    newton_iter: int = 50
    name: ClassVar[str] = "porous"
    internal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (isinstance(self.m, int | float) and math.isfinite(self.m) and self.m > 1):
            raise ValueError(f"`m` must be a finite number > 1, got {self.m!r}; m -> 1 is "
                             "the entropy (use NegEntropy).")
        check_positive_or_none("bandwidth", self.bandwidth)

    def _h(self, x: Tensor) -> float:
        return _bandwidth(self.bandwidth, x)

    def particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        x, w = _w(x, w)
        r = torch.exp((self.m - 1) * blob_log_density(x, x, w, self._h(x)))
        return (w * r).sum() / (self.m - 1)

    def first_variation_particles(self, y: Tensor, x: Tensor, w: Tensor | None = None
                                  ) -> Tensor:
        x, w = _w(x, w)
        h, m = self._h(x), self.m
        coef = torch.exp((m - 2) * blob_log_density(x, x, w, h))  # F'(rho_h(x_j)), (n,)
        own = torch.exp((m - 1) * blob_log_density(y, x, w, h)) / (m - 1)
        return own + _blob_kernel(y, x, h) @ (w * coef)

    def grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return (grid.check("rho", rho) ** self.m).sum() * grid.cell / (self.m - 1)

    def first_variation_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return self.m / (self.m - 1) * rho ** (self.m - 1)

    def prox_log(self, logz: Tensor, sigma: float, grid: Grid) -> Tensor | None:
        # solve g(u) = c exp((m-1)(u - log cell)) + u - log z = 0, c = sigma m / (m-1);
        # g is increasing and convex, g(log z) >= 0: Newton from log z decreases monotonically
        m, lc = self.m, math.log(grid.cell)
        c = sigma * m / (m - 1)
        finite = torch.isfinite(logz)
        lz = torch.where(finite, logz, torch.zeros_like(logz))
        u = lz.clone()
        for _ in range(self.newton_iter):
            e = c * torch.exp((m - 1) * (u - lc))
            step = (e + u - lz) / (e * (m - 1) + 1.0)
            u = u - step
            if float(step.abs().max()) < 1e-13 * (1.0 + float(u.abs().max())):
                break
        return torch.where(finite, u, logz)

    def quantiles(self, X: Tensor) -> Tensor:
        n = X.shape[0]
        rho = 1.0 / (n * (X[1:] - X[:-1]))
        return (rho ** (self.m - 1)).sum() / (n * (self.m - 1))


@dataclass(frozen=True)
class InteractionEnergy(AbstractEnergy):
    r""":math:`F(\rho) = \tfrac12\iint W(x - y)\,d\rho(x)\,d\rho(y)` for an even kernel
    ``W`` ``(..., d) -> (...)``; :math:`\delta F/\delta\rho = W * \rho`, velocity
    :math:`-\nabla W * \rho`. On grids the convolution is computed in row blocks.

    Args:
        W: Even interaction kernel.
        block: Rows per block of the grid convolution.
    """

    W: Kernel
    block: int = 512
    name: ClassVar[str] = "interaction"

    def particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        x, w = _w(x, w)
        k = self.W(x[:, None, :] - x[None, :, :])  # (n, n)
        return 0.5 * (w @ k @ w)

    def first_variation_particles(self, y: Tensor, x: Tensor, w: Tensor | None = None
                                  ) -> Tensor:
        x, w = _w(x, w)
        return self.W(y[:, None, :] - x[None, :, :]) @ w

    def _conv(self, p: Tensor, grid: Grid) -> Tensor:
        pts = grid.points().to(p)
        flat = p.reshape(-1)
        out = [self.W(pts[s:s + self.block, None, :] - pts[None, :, :]) @ flat
               for s in range(0, pts.shape[0], self.block)]
        return torch.cat(out).reshape(grid.shape)

    def grid(self, rho: Tensor, grid: Grid) -> Tensor:
        p = grid.check("rho", rho) * grid.cell
        return 0.5 * (p * self._conv(p, grid)).sum()

    def first_variation_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return self._conv(rho * grid.cell, grid)

    def grid_potential(self, rho_ref: Tensor, grid: Grid) -> Tensor | None:
        return self._conv(rho_ref * grid.cell, grid)

    def quantiles(self, X: Tensor) -> Tensor:
        return 0.5 * self.W((X[:, None] - X[None, :])[..., None]).mean()


@dataclass(frozen=True)
class SumEnergy(AbstractEnergy):
    """Sum of energies (``a + b``); at most one may have a separable internal part for the
    entropic JKO."""

    terms: tuple[AbstractEnergy, ...]
    name: ClassVar[str] = "sum"

    def __post_init__(self) -> None:
        if sum(e.internal for e in self.terms) > 1:
            raise ValueError("a SumEnergy may hold at most one internal (entropy / KL / "
                             "porous) term; merge them into one.")

    @property
    def internal(self) -> bool:  # type: ignore[override]
        return any(e.internal for e in self.terms)

    def __add__(self, other: AbstractEnergy) -> SumEnergy:
        return SumEnergy((*self.terms, other))

    def particles(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        return torch.stack([e.particles(x, w) for e in self.terms]).sum()

    def first_variation_particles(self, y: Tensor, x: Tensor, w: Tensor | None = None
                                  ) -> Tensor:
        return torch.stack([e.first_variation_particles(y, x, w) for e in self.terms]).sum(0)

    def grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return torch.stack([e.grid(rho, grid) for e in self.terms]).sum()

    def first_variation_grid(self, rho: Tensor, grid: Grid) -> Tensor:
        return torch.stack([e.first_variation_grid(rho, grid) for e in self.terms]).sum(0)

    def grid_potential(self, rho_ref: Tensor, grid: Grid) -> Tensor | None:
        parts = [p for e in self.terms if (p := e.grid_potential(rho_ref, grid)) is not None]
        return torch.stack(parts).sum(0) if parts else None

    def prox_log(self, logz: Tensor, sigma: float, grid: Grid) -> Tensor | None:
        outs = [e for e in self.terms if e.internal]
        return outs[0].prox_log(logz, sigma, grid) if outs else None

    def quantiles(self, X: Tensor) -> Tensor:
        return torch.stack([e.quantiles(X) for e in self.terms]).sum()
