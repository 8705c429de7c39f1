r"""Geodesics between latent points: curve-energy minimisation and the geodesic ODE.

Two solvers, one result type (:class:`GeodesicResult`):

* :class:`EnergyMinimizer` minimises the discrete curve energy
  :math:`E = (T-1) \sum_j \ell_j^2` over a :class:`~otgen.geometry.curves.CubicSpline`
  (or polyline) with fixed ends, by L-BFGS (strong-Wolfe line search) or Adam. Minimisers
  of the energy are constant-speed geodesics (minimisers of the length too).
* :class:`Shooting` solves the boundary-value problem of the geodesic ODE
  :math:`\ddot\gamma = -\Gamma(\gamma)[\dot\gamma, \dot\gamma]`, :math:`\gamma(0) = z_0`,
  :math:`\gamma(1) = z_1`: the exponential map :func:`exp_map` integrates the ODE with
  :func:`otgen.ode.integrate` (RK4 by default) and damped Newton on the end-point miss
  :math:`F(v) = \exp_{z_0}(v) - z_1` finds the initial velocity; the Jacobian
  :math:`\partial F / \partial v` comes from autograd through the unrolled integrator
  (``d`` backward passes for the whole batch). It starts from the straight line
  :math:`v = z_1 - z_0` or from a given velocity, e.g. the energy minimiser's.

:func:`pairwise_geodesic_distances` fills a distance matrix with either solver.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from otgen._validate import as_points, check_choice, check_int, check_positive
from otgen.geometry.curves import (
    AbstractCurve,
    CubicSpline,
    DiscreteCurve,
    _ends,
    curve_energy,
    curve_length,
    polyline_energy,
)
from otgen.geometry.metrics import AbstractMetric
from otgen.ode import integrate

__all__ = [
    "GeodesicResult", "GeodesicWarning", "EnergyMinimizer", "Shooting", "exp_map",
    "ode_residual", "pairwise_geodesic_distances",
]


class GeodesicWarning(RuntimeWarning):
    """A geodesic solver stopped before meeting its tolerance."""


@dataclass(frozen=True)
class GeodesicResult:
    r"""Geodesics for a batch of ``B`` end-point pairs (same type for every solver).

    Attributes:
        points: ``(B, T, d)`` points at uniform times :math:`t_j = j / (T - 1)`.
        velocity0: Initial velocity :math:`\dot\gamma(0)`, ``(B, d)`` (for a
            constant-speed geodesic its metric norm is the length).
        length: Metric length :math:`\int_0^1 \|\dot\gamma\|_M dt`, ``(B,)``: Gauss--Legendre
            quadrature of the optimised curve (energy minimisation) or Simpson's rule on
            the integrator's grid (shooting).
        energy: Curve energy :math:`\int_0^1 \|\dot\gamma\|_M^2 dt`, same quadrature.
        endpoint_error: :math:`|\gamma(1) - z_1|`, ``(B,)`` (0 for energy minimisation,
            whose ends are fixed).
        converged: Whether the solver met its tolerance (all pairs).
        n_iter: Iterations used (optimiser steps or Newton steps).
        nfe: Geodesic-ODE right-hand-side evaluations (shooting) or energy evaluations.
        method: ``"energy"`` or ``"shooting"``.
        curve: The optimised curve module (energy minimisation), else ``None``.
    """

    points: Tensor
    velocity0: Tensor
    length: Tensor
    energy: Tensor
    endpoint_error: Tensor
    converged: bool
    n_iter: int
    nfe: int
    method: str
    curve: AbstractCurve | None = None


def _simpson(y: Tensor) -> Tensor:
    """Integral over [0, 1] of samples ``y`` ``(B, T)`` at uniform times (Simpson's rule
    when ``T - 1`` is even, else the trapezoid rule)."""
    n = y.shape[-1] - 1
    if n % 2 == 0:
        w = torch.ones(n + 1, dtype=y.dtype, device=y.device)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        return (y * w).sum(-1) / (3 * n)
    return (y[..., 1:] + y[..., :-1]).sum(-1) / (2 * n)


def _finish(points: Tensor, v0: Tensor, length: Tensor, energy: Tensor, err: Tensor,
            converged: bool, n_iter: int, nfe: int, method: str,
            curve: AbstractCurve | None, strict: bool, what: str) -> GeodesicResult:
    if not converged:
        msg = f"{method} geodesic solver did not converge after {n_iter} iterations ({what})"
        if strict:
            raise RuntimeError(msg + "; raise max_iter or loosen the tolerance.")
        warnings.warn(msg, GeodesicWarning, stacklevel=3)
    return GeodesicResult(points.detach(), v0.detach(), length.detach(), energy.detach(),
                          err.detach(), converged, n_iter, nfe, method, curve)


@dataclass(frozen=True)
class EnergyMinimizer:
    r"""Minimise the discrete curve energy over curves with fixed ends.

    Attributes:
        curve: ``"spline"`` (:class:`CubicSpline`, default) or ``"polyline"``
            (:class:`DiscreteCurve`).
        n_segments: Spline segments / polyline segments.
        n_eval: Intervals ``T - 1`` of the discrete energy :func:`polyline_energy`.
        optimizer: ``"lbfgs"`` (strong-Wolfe line search, default) or ``"adam"``.
        lr: Step size (default 1 for L-BFGS, 1e-2 for Adam).
        max_iter: Most optimiser steps.
        rtol: Converged when the energy changes by less than ``rtol`` (relative) in two
            consecutive steps.
        n_points: Points ``T`` returned in the result.
        strict: Raise instead of warning when not converged.
        progress: tqdm progress bar over the iterations.
    """

    curve: Literal["spline", "polyline"] = "spline"
    n_segments: int = 8
    n_eval: int = 64
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float | None = None
    max_iter: int = 300
    rtol: float = 1e-9
    n_points: int = 65
    strict: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        check_choice("curve", self.curve, ("spline", "polyline"))
        check_choice("optimizer", self.optimizer, ("lbfgs", "adam"))
        for name in ("n_segments", "n_eval", "max_iter"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("n_points", self.n_points, minimum=2)
        check_positive("rtol", self.rtol)
        if self.lr is not None:
            check_positive("lr", self.lr)

    def make_curve(self, z0: Tensor, z1: Tensor) -> AbstractCurve:
        """The initial (straight) curve of this solver's kind."""
        if self.curve == "spline":
            return CubicSpline(z0, z1, self.n_segments)
        return DiscreteCurve(z0, z1, self.n_segments)

    def __call__(self, metric: AbstractMetric, z0: Tensor, z1: Tensor, *,
                 curve: AbstractCurve | None = None) -> GeodesicResult:
        """Geodesics from ``z0`` to ``z1`` (``(B, d)`` each); ``curve`` warm-starts."""
        z0, z1 = _ends(z0, z1)
        c = self.make_curve(z0, z1) if curve is None else curve
        params = [p for p in c.parameters() if p.requires_grad]
        t = torch.linspace(0.0, 1.0, self.n_eval + 1, dtype=z0.dtype, device=z0.device)
        if self.optimizer == "lbfgs":
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                params, lr=self.lr or 1.0, max_iter=1, max_eval=25, history_size=20,
                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
        else:
            opt = torch.optim.Adam(params, lr=self.lr or 1e-2)
        nfe = 0

        def closure() -> Tensor:
            nonlocal nfe
            nfe += 1
            opt.zero_grad(set_to_none=True)
            loss = polyline_energy(metric, c(t)).sum()
            loss.backward()
            return loss

        prev, calm, k, converged = math.inf, 0, 0, False
        bar = tqdm(total=self.max_iter, desc="geodesic energy", disable=not self.progress,
                   leave=False, delay=1.0)
        try:
            for k in range(1, self.max_iter + 1):  # noqa: B007 - k is used after the loop
                e = float(torch.as_tensor(opt.step(closure)).detach())  # type: ignore[arg-type]
                bar.update(1)
                if not math.isfinite(e):
                    raise FloatingPointError(
                        f"curve energy became {e} at iteration {k}; the metric is not "
                        "finite along the curve (check the decoder) or lr is too large.")
                calm = calm + 1 if abs(prev - e) <= self.rtol * abs(e) else 0
                prev = e
                if calm >= 2:
                    converged = True
                    break
        finally:
            bar.close()
        with torch.no_grad():
            tp = torch.linspace(0.0, 1.0, self.n_points, dtype=z0.dtype, device=z0.device)
            points = c(tp)
            v0 = c.velocity(tp[:1])[:, 0]
            nq = self.n_segments * max(1, math.ceil(64 / self.n_segments))
            length, energy = curve_length(metric, c, n=nq), curve_energy(metric, c, n=nq)
        return _finish(points, v0, length, energy, torch.zeros_like(z0[:, 0]), converged, k,
                       nfe, "energy", c, self.strict, f"relative energy change > {self.rtol}")


def exp_map(metric: AbstractMetric, z0: Tensor, v0: Tensor, *, n_points: int | None = None,
            method: str = "rk4", steps: int = 32) -> tuple[Tensor, Tensor, int]:
    r"""Integrate the geodesic ODE from ``z0`` with velocity ``v0`` over :math:`t \in [0, 1]`.

    The state is ``(z, v)`` with :math:`\dot z = v`, :math:`\dot v = a(z, v)`
    (:meth:`AbstractMetric.geodesic_acceleration`), solved by :func:`otgen.ode.integrate`.

    Args:
        metric: The metric.
        z0: Start points ``(B, d)``. v0: Initial velocities ``(B, d)``.
        n_points: Return the path at this many uniform times (``None``: end point only).
        method: Stepper name for :func:`otgen.ode.integrate` (``"rk4"``, ``"dopri5"``, ...).
        steps: Fixed steps (ignored by adaptive methods).
    Returns:
        ``(z, v, nfe)``: positions and velocities ``(B, T, d)`` (``T = 1``, the end, when
        ``n_points`` is ``None``), differentiable in ``z0``, ``v0``; and the number of
        right-hand-side evaluations.
    """
    z0, v0 = _ends(z0, v0)
    t_eval = None
    if n_points is not None:
        t_eval = torch.linspace(0.0, 1.0, check_int("n_points", n_points, minimum=2),
                                dtype=z0.dtype, device=z0.device)

    def field(t: Tensor, y: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return y[1], metric._acceleration(y[0], y[1])

    kw = {"steps": steps} if method in ("euler", "heun", "midpoint", "rk4") else {}
    res = integrate(field, (z0, v0), method=method, t_eval=t_eval, **kw)  # type: ignore[arg-type]
    if t_eval is None:
        z, v = res.x
        return z[:, None], v[:, None], res.nfe
    zs, vs = res.xs  # type: ignore[misc]  # (T, B, d) each
    return zs.transpose(0, 1), vs.transpose(0, 1), res.nfe


@dataclass(frozen=True)
class Shooting:
    r"""Solve the geodesic boundary-value problem by shooting with damped Newton.

    Newton's Jacobian :math:`\partial F / \partial v` of the end-point miss is either
    central finite differences, all :math:`2d + 1` shots integrated as one batch (default
    ``"fd"``: in eager PyTorch the cost is per call, not per row, so this costs about one
    shot), or exact autograd through the unrolled integrator (``"autograd"``: one forward
    with graph and ``d`` backward passes). Either way the fixed point is
    :math:`F(v) = 0` exactly; the Jacobian only sets the convergence rate.

    Attributes:
        steps: RK4 steps of the geodesic ODE on [0, 1].
        max_iter: Most Newton iterations.
        tol: Converged when :math:`|\exp_{z_0}(v)(1) - z_1| \le` ``tol``
            :math:`\cdot (1 + |z_1 - z_0|)` for every pair.
        jacobian: ``"fd"`` or ``"autograd"``.
        fd_step: Relative finite-difference step (times :math:`1 + |v|`).
        max_halvings: Backtracking halvings of a Newton step that does not reduce the miss.
        strict: Raise instead of warning when not converged.

    The result's ``points`` are the integrator's grid, ``steps + 1`` points.
    """

    steps: int = 20
    max_iter: int = 25
    tol: float = 1e-7
    jacobian: Literal["fd", "autograd"] = "fd"
    fd_step: float = 1e-5
    max_halvings: int = 10
    strict: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "max_iter"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("max_halvings", self.max_halvings, minimum=0)
        check_positive("tol", self.tol)
        check_positive("fd_step", self.fd_step)
        check_choice("jacobian", self.jacobian, ("fd", "autograd"))

    def __call__(self, metric: AbstractMetric, z0: Tensor, z1: Tensor, *,
                 v0: Tensor | None = None) -> GeodesicResult:
        """Geodesics ``z0 -> z1`` (``(B, d)``); ``v0`` ``(B, d)`` is the first guess
        (default: the straight line's velocity ``z1 - z0``)."""
        z0, z1 = _ends(z0, z1)
        z0, z1 = z0.detach(), z1.detach()
        v = (z1 - z0) if v0 is None else as_points("v0", v0).detach().clone()
        if v.shape != z0.shape:
            raise ValueError(f"`v0` must have shape {tuple(z0.shape)} like `z0`, got "
                             f"{tuple(v.shape)}.")
        b, d = z0.shape
        scale = self.tol * (1.0 + (z1 - z0).norm(dim=-1))  # (B,)
        nfe, it, converged = 0, 0, False

        def shoot(starts: Tensor, vv: Tensor) -> Tensor:
            nonlocal nfe
            end, _, k = exp_map(metric, starts, vv, method="rk4", steps=self.steps)
            nfe += k
            return end[:, 0]

        def miss_and_jacobian(vv: Tensor) -> tuple[Tensor, Tensor]:
            if self.jacobian == "autograd":
                vg = vv.clone().requires_grad_(True)
                fg = shoot(z0, vg) - z1
                rows = [torch.autograd.grad(fg[:, k].sum(), vg, retain_graph=k < d - 1)[0]
                        for k in range(d)]
                return fg.detach(), torch.stack(rows, dim=1)  # (B, d, d): dF_k / dv_l
            h = self.fd_step * (1.0 + vv.norm(dim=-1))  # (B,)
            eye = torch.eye(d, dtype=vv.dtype, device=vv.device)
            pert = torch.cat([eye, -eye])[:, None] * h[None, :, None]  # (2d, B, d)
            vs = torch.cat([vv[None], vv[None] + pert]).reshape(-1, d)  # ((2d+1) B, d)
            with torch.no_grad():
                ends = shoot(z0.repeat(2 * d + 1, 1), vs).reshape(2 * d + 1, b, d)
            jac = (ends[1:d + 1] - ends[d + 1:]) / (2 * h)[None, :, None]  # (d_l, B, d_k)
            return ends[0] - z1, jac.permute(1, 2, 0)

        with torch.no_grad():
            f = shoot(z0, v) - z1
        for it in range(1, self.max_iter + 1):  # noqa: B007 - it is used after the loop
            if bool((f.norm(dim=-1) <= scale).all()):
                converged, it = True, it - 1
                break
            f, jac = miss_and_jacobian(v)
            step = torch.linalg.solve(jac, -f.unsqueeze(-1)).squeeze(-1)
            alpha = torch.ones_like(scale)
            with torch.no_grad():
                for _ in range(self.max_halvings + 1):
                    trial = v + alpha[:, None] * step
                    f_new = shoot(z0, trial) - z1
                    bad = ~(f_new.norm(dim=-1) < f.norm(dim=-1)) & (f.norm(dim=-1) > scale)
                    if not bool(bad.any()):
                        break
                    alpha = torch.where(bad, alpha / 2, alpha)
                keep = torch.isfinite(f_new).all(-1) & (f_new.norm(dim=-1) <= f.norm(dim=-1))
                v = torch.where(keep[:, None], trial, v)
                f = torch.where(keep[:, None], f_new, f)
        else:
            converged = bool((f.norm(dim=-1) <= scale).all())
        with torch.no_grad():
            points, vel, k = exp_map(metric, z0, v, n_points=self.steps + 1, method="rk4",
                                     steps=self.steps)
            nfe += k
            err = (points[:, -1] - z1).norm(dim=-1)
            sq = metric.sq_norm(points.reshape(-1, d), vel.reshape(-1, d)).reshape(b, -1)
            length, energy = _simpson(sq.clamp_min(0).sqrt()), _simpson(sq)
        return _finish(points, vel[:, 0], length, energy, err, converged, it, nfe, "shooting",
                       None, self.strict, f"end-point miss up to {float(err.max()):.3g}")


def ode_residual(metric: AbstractMetric, curve: AbstractCurve, t: Tensor | int) -> Tensor:
    r"""Residual :math:`\ddot\gamma - a(\gamma, \dot\gamma)` of the geodesic ODE along a
    curve, ``(B, T, d)``; it vanishes for a geodesic with constant-speed parametrisation."""
    if isinstance(t, int):
        t = torch.linspace(0.0, 1.0, t, dtype=curve.begin.dtype, device=curve.begin.device)
    z, v, acc = curve.evaluate(t)
    b, nt, d = z.shape
    a = metric.geodesic_acceleration(z.reshape(-1, d), v.reshape(-1, d)).reshape(b, nt, d)
    return acc - a


def pairwise_geodesic_distances(
    metric: AbstractMetric, z: Tensor, *,
    solver: EnergyMinimizer | Shooting | None = None, batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    r"""Geodesic distances :math:`d(z_i, z_j)` between all points, ``(n, n)``.

    The ``n (n - 1) / 2`` pairs :math:`i < j` are solved in batches of ``batch_size``
    (default solver :class:`EnergyMinimizer`); the matrix is symmetric with a zero
    diagonal. Returns a detached tensor with ``z``'s dtype and device.
    """
    z = as_points("z", z, min_points=2)
    solver = EnergyMinimizer() if solver is None else solver
    batch_size = check_int("batch_size", batch_size, minimum=1)
    n = z.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=z.device)  # (2, P)
    out = torch.zeros(n, n, dtype=z.dtype, device=z.device)
    starts = range(0, iu.shape[1], batch_size)
    for s in tqdm(starts, desc="geodesic distances", disable=not progress, leave=False):
        i, j = iu[0, s:s + batch_size], iu[1, s:s + batch_size]
        length = solver(metric, z[i].detach(), z[j].detach()).length
        out[i, j] = length
        out[j, i] = length
    return out
