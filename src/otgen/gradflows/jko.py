r"""The JKO scheme: proximal steps of a free energy in Wasserstein space.

.. math::
    \rho_{k+1} = \arg\min_\rho\ \frac{1}{2\tau}W_2^2(\rho, \rho_k) + F(\rho)
    \qquad(\text{Jordan, Kinderlehrer \& Otto 1998}),

whose iterates converge to the gradient flow :math:`\partial_t\rho = \nabla\cdot(\rho\nabla
\frac{\delta F}{\delta\rho})` at :math:`t = k\tau` with error :math:`O(\tau)`. Two solvers:

* :class:`EntropicJKO` (grids in any dimension; Peyré 2015, "Entropic approximation of
  Wasserstein gradient flows"): :math:`W_2^2/2` is replaced by the entropic cost with
  kernel :math:`K = e^{-|x-y|^2/(2\gamma)}`, and the step
  :math:`\min_\pi \mathrm{KL}(\pi\,|\,K) + \sigma F(\pi\mathbb 1)` s.t.
  :math:`\pi^\top\mathbb 1 = p_k`, :math:`\sigma = \tau/\gamma`, is solved by KL-proximal
  Sinkhorn-like iterations on the scalings :math:`\pi = \mathrm{diag}(a)K\mathrm{diag}(b)`:

  .. math::
      a \leftarrow \frac{\mathrm{prox}^{KL}_{\sigma F}(Kb)}{Kb},\qquad
      b \leftarrow \frac{p_k}{K^\top a},

  all in the log domain (log-sum-exp, separable along the grid axes, so a step costs
  :math:`O(N\sum_k n_k)` for :math:`N = \prod_k n_k` cells). The KL-prox is closed-form for
  potentials, entropy and KL, a monotone Newton solve for the porous medium, and an
  interaction energy is linearised at :math:`\rho_k` (potential :math:`W*\rho_k`, a
  semi-implicit step). The entropic blur adds about :math:`\gamma` of variance per step
  (a diffusion :math:`\gamma/(2\tau)`), so :math:`\gamma = \tau^2` (the default, floored at
  :math:`\Delta x^2` so that the kernel still spans a cell) keeps the scheme
  :math:`O(\tau)`: measured on the heat flow from :math:`N(1, 1)` to ``t = 1`` on 201 cells,
  the variance error is 0.084, 0.043, 0.021 for :math:`\tau` = 0.2, 0.1, 0.05. Without a
  diffusive term (potential or interaction energies alone) the same blur is not masked by
  any diffusion and dominates unless :math:`\gamma \ll \tau\,\mathrm{Var}`: prefer
  :class:`QuantileJKO` (1-D) or the particle schemes for those.
* :class:`QuantileJKO` (exact, 1-D): with quantile functions :math:`X`,
  :math:`W_2^2(\rho,\rho_k) = \int_0^1|X - X_k|^2` and the step is the convex problem
  :math:`\min_X \frac{1}{2\tau N}\sum_i (X_i - X_{k,i})^2 + F(X)` on ``N`` equal-mass
  quantiles, solved by damped Newton (Hessian from ``torch.func``) that keeps ``X``
  strictly increasing.

Both return :class:`JKOResult` with the energy after every step; non-convergence sets
``converged=False`` and warns.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from otgen._validate import check_int, check_positive, check_positive_or_none, check_tensor
from otgen.gradflows.energies import AbstractEnergy, Grid
from otgen.ot.result import ConvergenceWarning

__all__ = ["JKOResult", "EntropicJKO", "QuantileJKO", "jko"]


@dataclass(frozen=True)
class JKOResult:
    """Iterates of a JKO scheme.

    Attributes:
        states: Densities ``(K+1, *grid.shape)`` (entropic) or quantiles ``(K+1, N)``.
        times: ``(K+1,)``, :math:`k\\tau`.
        energies: :math:`F(\\rho_k)`, ``(K+1,)``.
        converged: Whether every step met its tolerance.
        n_iter: Inner iterations per step, ``(K,)`` int64.
        errors: Final inner error per step, ``(K,)``.
        grid: The grid (``None`` for quantiles).
    """

    states: Tensor
    times: Tensor
    energies: Tensor
    converged: bool
    n_iter: Tensor
    errors: Tensor
    grid: Grid | None = None


def _bar(progress: bool, steps: int, name: str) -> tqdm:
    return tqdm(total=steps, desc=name, unit="step", disable=not progress, leave=False)


# ------------------------------------------------------------------------------ entropic


def _log_conv(h: Tensor, costs: list[Tensor]) -> Tensor:
    r""":math:`\log\sum_j K_{ij} e^{h_j}` with the separable Gaussian kernel; ``h``
    ``grid.shape``, ``costs[k]`` ``(n_k, n_k)`` = :math:`|x_i - x_j|^2/(2\gamma)`."""
    for k, c in enumerate(costs):
        hk = h.movedim(k, -1)  # (..., n_k)
        hk = torch.logsumexp(hk[..., None, :] - c, dim=-1)  # (..., n_k)
        h = hk.movedim(-1, k)
    return h


@dataclass(frozen=True)
class EntropicJKO:
    r"""Entropic JKO on a grid (log-domain KL-proximal iterations, Peyré 2015).

    Args:
        tau: Time step :math:`\tau`.
        gamma: Entropic regularisation :math:`\gamma` of :math:`W_2^2/2` (kernel width
            :math:`\sqrt\gamma`); ``None``: :math:`\max(\tau^2, \Delta x^2)`, small
            enough that the added diffusion :math:`\sim\gamma/\tau` is :math:`O(\tau)` yet
            wide enough to move mass across cells (smaller kernels pin the mass to the
            grid). Inner iterations grow like :math:`1/\gamma`.
        tol: Stop the inner loop when the L1 change of the new masses is below ``tol``.
        max_iter: Most inner iterations per step.
    Example:
        >>> from otgen.gradflows import Grid, NegEntropy
        >>> g = Grid.regular(-4.0, 4.0, 81)
        >>> rho0 = g.density(-g.points()[:, 0] ** 2 / 2)
        >>> res = EntropicJKO(tau=0.1)(NegEntropy(), rho0, g, steps=2)
        >>> res.states.shape, bool(res.energies[2] < res.energies[0])
        (torch.Size([3, 81]), True)
    """

    tau: float
    gamma: float | None = None
    tol: float = 1e-9
    max_iter: int = 5000

    def __post_init__(self) -> None:
        check_positive("tau", self.tau)
        check_positive_or_none("gamma", self.gamma)
        check_positive("tol", self.tol)
        check_int("max_iter", self.max_iter)

    def resolved_gamma(self, grid: Grid) -> float:
        """The :math:`\\gamma` used on ``grid``."""
        if self.gamma is not None:
            return self.gamma
        return max(self.tau**2, max(grid.spacing) ** 2)

    def step(self, energy: AbstractEnergy, rho: Tensor, grid: Grid,
             g0: Tensor | None = None) -> tuple[Tensor, Tensor, int, float]:
        """One JKO step from the density ``rho``; returns ``(rho_next, g, n_iter, err)``
        (``g`` = log b, for warm starts)."""
        gamma = self.resolved_gamma(grid)
        sigma = self.tau / gamma
        costs = [(a[:, None] - a[None, :]) ** 2 / (2 * gamma) for a in grid.axes]
        costs = [c.to(rho) for c in costs]
        tiny = torch.finfo(rho.dtype).tiny
        logq = torch.where(rho > 0, torch.log((rho * grid.cell).clamp_min(tiny)),
                           torch.full_like(rho, -math.inf))
        V = energy.grid_potential(rho, grid)
        g = torch.zeros_like(rho) if g0 is None else g0
        lp_old: Tensor | None = None
        err, it = math.inf, 0
        for it in range(1, self.max_iter + 1):  # noqa: B007 - `it` is reported
            lkb = _log_conv(g, costs)
            lz = lkb if V is None else lkb - sigma * V
            lp = energy.prox_log(lz, sigma, grid)
            if lp is None:
                lp = lz
            f = lp - lkb
            g = logq - _log_conv(f, costs)
            if lp_old is not None and (it % 5 == 0 or it < 10):
                err = float((lp.exp() - lp_old.exp()).abs().sum())
                if err < self.tol:
                    break
            lp_old = lp
        p = torch.exp(f + _log_conv(g, costs))
        return p / grid.cell, g, it, err

    def __call__(self, energy: AbstractEnergy, rho0: Tensor, grid: Grid, steps: int, *,
                 progress: bool = False) -> JKOResult:
        """Run ``steps`` JKO steps from the density ``rho0`` (``grid.shape``, mass 1)."""
        rho = grid.check("rho0", rho0)
        check_int("steps", steps)
        mass = float(rho.sum()) * grid.cell
        if abs(mass - 1.0) > 1e-6:
            raise ValueError(f"`rho0` must have mass 1 on the grid, got {mass:.6g}; "
                             "normalise it (rho0 / (rho0.sum() * grid.cell)).")
        states, energies = [rho], [energy.grid(rho, grid)]
        iters, errs = [], []
        g: Tensor | None = None
        bar = _bar(progress, steps, "jko[entropic]")
        try:
            for _ in range(steps):
                rho, g, it, err = self.step(energy, rho, grid, g)
                states.append(rho)
                energies.append(energy.grid(rho, grid))
                iters.append(it)
                errs.append(err)
                bar.update(1)
        finally:
            bar.close()
        return _result(states, energies, iters, errs, self.tau, self.tol, "EntropicJKO",
                       grid, "raise max_iter, or increase gamma")


def _result(states: list[Tensor], energies: list[Tensor], iters: list[int], errs: list[float],
            tau: float, tol: float, name: str, grid: Grid | None, hint: str) -> JKOResult:
    x = states[0]
    err_t = torch.tensor(errs, dtype=x.dtype, device=x.device)
    converged = bool((err_t <= tol).all()) if errs else True
    if not converged:
        bad = int((err_t > tol).sum())
        warnings.warn(f"{name}: {bad} of {len(errs)} steps did not converge (worst error "
                      f"{float(err_t.max()):.3g} > tol {tol:.3g}); {hint}.",
                      ConvergenceWarning, stacklevel=3)
    return JKOResult(
        states=torch.stack(states), energies=torch.stack(energies),
        times=tau * torch.arange(len(states), dtype=x.dtype, device=x.device),
        converged=converged, n_iter=torch.tensor(iters, dtype=torch.int64),
        errors=err_t, grid=grid)


# ----------------------------------------------------------------------------- quantiles


@dataclass(frozen=True)
class QuantileJKO:
    r"""Exact 1-D JKO on equal-mass quantiles by damped Newton.

    Args:
        tau: Time step.
        tol: Newton stops when the decrement :math:`-\nabla\Phi\cdot\Delta X` is below
            ``tol`` (the objective is in nats).
        max_iter: Most Newton iterations per step.
    Example:
        >>> from otgen.gradflows import NegEntropy, gaussian_quantiles
        >>> res = QuantileJKO(tau=0.1)(NegEntropy(), gaussian_quantiles(0.0, 1.0, 50), 3)
        >>> res.states.shape, res.converged
        (torch.Size([4, 50]), True)
    """

    tau: float
    tol: float = 1e-12
    max_iter: int = 100

    def __post_init__(self) -> None:
        check_positive("tau", self.tau)
        check_positive("tol", self.tol)
        check_int("max_iter", self.max_iter)

    def step(self, energy: AbstractEnergy, xk: Tensor) -> tuple[Tensor, int, float]:
        """One step from quantiles ``xk`` ``(N,)``; returns ``(x_next, n_iter, decrement)``."""
        n, tau = xk.shape[0], self.tau

        def phi(x: Tensor) -> Tensor:
            return ((x - xk) ** 2).sum() / (2 * tau * n) + energy.quantiles(x)

        grad_fn = torch.func.grad(phi)
        hess_fn = torch.func.hessian(phi)
        x = xk.detach().clone()
        f = phi(x)
        dec, it = math.inf, 0
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        for it in range(1, self.max_iter + 1):  # noqa: B007 - `it` is reported
            g = grad_fn(x)
            H = hess_fn(x)
            try:
                dx = -torch.linalg.solve(H, g)
            except RuntimeError:
                dx = -g
            if float(g @ dx) >= 0:  # not a descent direction (non-convex V): regularise
                lam = float(H.diagonal().abs().max())
                dx = -torch.linalg.solve(H + lam * eye, g)
            dec = float(-(g @ dx))
            if dec < self.tol:
                break
            t = 1.0
            while t > 1e-12:
                xn = x + t * dx
                if n < 2 or bool((xn[1:] > xn[:-1]).all()):
                    fn = phi(xn)
                    if bool(torch.isfinite(fn)) and float(fn) <= float(f) - 1e-4 * t * dec:
                        break
                t *= 0.5
            else:
                break
            x, f = xn, fn
        return x, it, dec

    def __call__(self, energy: AbstractEnergy, x0: Tensor, steps: int, *,
                 progress: bool = False) -> JKOResult:
        """Run ``steps`` steps from sorted quantiles ``x0`` ``(N,)`` (each of mass 1/N)."""
        x = check_tensor("x0", x0)
        check_int("steps", steps)
        if x.ndim != 1 or x.shape[0] < 2 or not bool((x[1:] > x[:-1]).all()):
            raise ValueError(f"`x0` must be a strictly increasing 1-D tensor of >= 2 "
                             f"quantiles, got shape {tuple(x.shape)}; sort it (and drop "
                             "duplicates), e.g. gaussian_quantiles(0, 1, 200).")
        states, energies = [x], [energy.quantiles(x)]
        iters, decs = [], []
        bar = _bar(progress, steps, "jko[quantile]")
        try:
            for _ in range(steps):
                x, it, dec = self.step(energy, x)
                states.append(x)
                energies.append(energy.quantiles(x))
                iters.append(it)
                decs.append(dec if dec >= self.tol else 0.0)
                bar.update(1)
        finally:
            bar.close()
        return _result(states, energies, iters, decs, self.tau, self.tol, "QuantileJKO", None,
                       "raise max_iter or reduce tau")


def jko(energy: AbstractEnergy, rho0: Tensor, *, tau: float, steps: int,
        grid: Grid | None = None, gamma: float | None = None, **kw: object) -> JKOResult:
    """One-line JKO: entropic on ``grid`` when given, else exact on quantiles ``rho0``."""
    if grid is not None:
        return EntropicJKO(tau, gamma, **kw)(energy, rho0, grid, steps)  # type: ignore[arg-type]
    return QuantileJKO(tau, **kw)(energy, rho0, steps)  # type: ignore[arg-type]
