r"""Benamou--Brenier on a grid by proximal splitting (Papadakis, Peyré & Oudet 2014).

Dynamic OT between two densities :math:`\rho_0, \rho_1` on a box
:math:`\Omega \subset \mathbb R^d` (d = 1 or 2):

.. math::
    \min_{(\rho, m)} \int_0^1\!\!\int_\Omega \frac{|m|^2}{2\rho}\, dx\, dt
    \quad\text{s.t.}\quad \partial_t\rho + \nabla\cdot m = 0,\;
    \rho(0) = \rho_0,\; \rho(1) = \rho_1,\; m\cdot n = 0 \text{ on } \partial\Omega,

whose value is :math:`W_2^2(\rho_0, \rho_1)/2` (the momentum is :math:`m = \rho u`).

Discretisation (PPO 2014, Sec. 3): a *staggered* variable :math:`U = (f, m_1, .., m_d)`
with :math:`f` on the ``P + 1`` time faces (``f[0] = rho0``, ``f[P] = rho1``) and
:math:`m_k` on the faces normal to axis :math:`k` (zero on the boundary), and a *centred*
variable :math:`V = (\bar f, \bar m)` on the ``P x N_1 x .. x N_d`` cells. Douglas--Rachford
splits

* :math:`G_1(U, V) = \iota_{\mathcal C}(U) + J(V)`: :math:`\mathcal C` = discrete continuity
  equation with the boundary values; its projection is a Poisson solve with Neumann
  conditions in space-time, diagonalised by the orthonormal DCT-II (applied as dense
  cosine matrices along each axis, so it runs on any device and dtype).
  :math:`J(V) = \sum |\bar m|^2 / (2\bar f)` has a pointwise prox: the largest real root
  :math:`\bar f^\star` of :math:`(\bar f - f_0)(\bar f + \gamma)^2 - \tfrac\gamma2|m_0|^2`
  (Newton, monotone from the right), :math:`\bar m^\star = \bar f^\star m_0 /
  (\bar f^\star + \gamma)`, and :math:`(0, 0)` when :math:`\bar f^\star \le 0`;
* :math:`G_2(U, V) = \iota_{\{V = I U\}}` with :math:`I` the midpoint interpolation from
  faces to cells; its projection solves the tridiagonal system :math:`(1 + I^* I) U = U_0
  + I^* V_0` along one axis per component (a small dense inverse).

The iteration is :math:`w \leftarrow w + \alpha(\mathrm{prox}_{\gamma G_1}(2z - w) - z)`,
:math:`z = \mathrm{prox}_{\gamma G_2}(w)`, with :math:`\alpha \in (0, 2)`.

Gradient strategy: none; the solve runs under ``no_grad`` and returns detached tensors.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from otgen._validate import check_finite, check_int, check_positive, check_tensor
from otgen.ot.result import ConvergenceWarning

__all__ = ["BenamouBrenier", "GridProblem", "GridResult", "benamou_brenier"]


# --------------------------------------------------------------------------- problem


@dataclass(frozen=True, init=False)
class GridProblem:
    r"""Two densities on a regular grid of a box, normalised to mass 1.

    Args:
        rho0, rho1: Non-negative histograms of shape ``(N,)`` (1-D) or ``(N1, N2)``
            (2-D), same shape, dtype and device, positive mass; cell values are taken as
            masses and rescaled to densities of unit mass on the box.
        extent: Side length(s) of the box, a float or one per axis (default 1).
        origin: Lower corner, a float or one per axis (default 0).
    Attributes:
        rho0, rho1: Densities (mass / cell volume), integrating to 1.
        h: Cell sizes per axis; ``shape``: the grid shape.
    """

    rho0: Tensor
    rho1: Tensor
    h: tuple[float, ...]
    origin: tuple[float, ...]

    def __init__(self, rho0: Tensor, rho1: Tensor, *, extent: float | tuple[float, ...] = 1.0,
                 origin: float | tuple[float, ...] = 0.0) -> None:
        dens = []
        for name, r in (("rho0", rho0), ("rho1", rho1)):
            r = check_finite(name, check_tensor(name, r))
            if r.ndim not in (1, 2) or min(r.shape) < 2:
                raise ValueError(f"`{name}` must be a 1-D (N,) or 2-D (N1, N2) histogram with "
                                 f"N >= 2, got shape {tuple(r.shape)}.")
            if bool((r < 0).any()) or float(r.sum()) <= 0:
                raise ValueError(f"`{name}` must be non-negative with positive mass; clip "
                                 "negative cells to 0.")
            dens.append(r.detach())
        if dens[0].shape != dens[1].shape or dens[0].dtype != dens[1].dtype \
                or dens[0].device != dens[1].device:
            raise ValueError(f"`rho0` and `rho1` must share shape, dtype and device, got "
                             f"{tuple(dens[0].shape)} {dens[0].dtype} and "
                             f"{tuple(dens[1].shape)} {dens[1].dtype}.")
        d = dens[0].ndim
        ext = _per_axis("extent", extent, d)
        org = _per_axis("origin", origin, d, positive=False)
        h = tuple(e / n for e, n in zip(ext, dens[0].shape, strict=True))
        vol = math.prod(h)
        object.__setattr__(self, "rho0", dens[0] / (dens[0].sum() * vol))
        object.__setattr__(self, "rho1", dens[1] / (dens[1].sum() * vol))
        object.__setattr__(self, "h", h)
        object.__setattr__(self, "origin", org)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.rho0.shape)

    def centres(self) -> tuple[Tensor, ...]:
        """Cell-centre coordinates per axis, ``(N_k,)`` each."""
        return tuple(o + (torch.arange(n, dtype=self.rho0.dtype, device=self.rho0.device)
                          + 0.5) * hk for o, n, hk in zip(self.origin, self.shape, self.h,
                                                          strict=True))


def _per_axis(name: str, value: Any, d: int, positive: bool = True) -> tuple[float, ...]:
    vals = tuple(value) if isinstance(value, tuple | list) else (value,) * d
    if len(vals) != d:
        raise ValueError(f"`{name}` must be a number or {d} numbers (one per axis), got "
                         f"{len(vals)}.")
    if positive:
        return tuple(check_positive(name, v) for v in vals)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals):
        raise ValueError(f"`{name}` must hold finite numbers, got {value!r}.")
    return tuple(float(v) for v in vals)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class GridResult:
    r"""Outcome of :class:`BenamouBrenier`.

    Attributes:
        rho: Density path on the time faces :math:`t_i = i/P`, shape ``(P + 1, *N)``;
            ``rho[0]``, ``rho[-1]`` are the (normalised) inputs; satisfies the discrete
            continuity equation with ``momentum_faces``.
        momentum: Centred momentum :math:`\bar m = \bar\rho u`, shape ``(P, *N, d)``.
        density: Centred density :math:`\bar\rho` (cells, times :math:`(i + 1/2)/P`),
            ``(P, *N)``.
        action: :math:`\sum \mathrm{vol}\, |\bar m|^2 / (2\bar\rho) \approx W_2^2/2`, ``()``.
        w2_squared: ``2 * action``.
        ts: Times of ``rho``, ``(P + 1,)``.
        coords: Cell-centre coordinates per axis.
        converged, n_iter: Stopping test met; iterations run.
        errors: Relative residual at each check, ``(k,)``.
        constraint_error: Final relative mismatch between ``(density, momentum)`` and the
            interpolation of the divergence-free staggered variable.
    """

    rho: Tensor
    momentum: Tensor
    density: Tensor
    action: Tensor
    w2_squared: Tensor
    ts: Tensor
    coords: tuple[Tensor, ...]
    converged: bool
    n_iter: int
    errors: Tensor
    constraint_error: float

    def velocity(self, floor: float = 1e-3) -> Tensor:
        r"""Velocity :math:`\bar m / \bar\rho` on the cells, ``(P, *N, d)``; 0 where
        :math:`\bar\rho \le` ``floor`` times its maximum."""
        rho = self.density[..., None]
        keep = rho > floor * float(self.density.max())
        return torch.where(keep, self.momentum / rho.clamp_min(1e-300), 0.0)

    def curl(self, floor: float = 0.05) -> float | None:
        r"""Density-weighted relative vorticity of the 2-D velocity (None in 1-D).

        :math:`\omega = \partial_1 v_2 - \partial_2 v_1` by central differences on the
        cells where :math:`\bar\rho >` ``floor`` times its maximum (and on their
        neighbours), reported as :math:`\big(\sum\bar\rho\,\omega^2 / \sum\bar\rho\,
        2\|\nabla v\|_F^2\big)^{1/2}` (the ``curl_rel`` of
        :func:`~otgen.ot.dynamic_diag.curl_rms`: 0 for a gradient, 1 for a rotation)."""
        if self.momentum.shape[-1] != 2:
            return None
        v = self.velocity(floor)  # (P, N1, N2, 2)
        h = [float(c[1] - c[0]) for c in self.coords]
        d1 = [torch.gradient(v[..., i], spacing=h[0], dim=1)[0] for i in range(2)]
        d2 = [torch.gradient(v[..., i], spacing=h[1], dim=2)[0] for i in range(2)]
        w = self.density * (self.density > floor * float(self.density.max()))
        inner = torch.ones_like(w, dtype=torch.bool)
        inner[:, [0, -1], :] = False
        inner[:, :, [0, -1]] = False
        full = (v.abs().sum(-1) > 0).float()  # cells with a defined velocity
        nb = torch.nn.functional.max_pool2d(1 - full, 3, stride=1, padding=1) == 0
        w = w * (inner & nb)
        om2 = (d1[1] - d2[0]) ** 2
        j2 = d1[0] ** 2 + d1[1] ** 2 + d2[0] ** 2 + d2[1] ** 2
        den = float((w * 2 * j2).sum())
        return float(((w * om2).sum() / den).sqrt()) if den > 0 else 0.0


# --------------------------------------------------------------------------- operators


def _avg(u: Tensor, axis: int) -> Tensor:
    """Faces -> cells along ``axis``: mean of neighbours (length n + 1 -> n)."""
    n = u.shape[axis] - 1
    return 0.5 * (u.narrow(axis, 0, n) + u.narrow(axis, 1, n))


def _avg_adj(v: Tensor, axis: int) -> Tensor:
    """Adjoint of :func:`_avg`: cells -> faces (length n -> n + 1)."""
    pad = [0, 0] * (v.ndim - 1 - axis) + [1, 1]
    w = torch.nn.functional.pad(v, pad)
    return 0.5 * (w.narrow(axis, 0, v.shape[axis] + 1) + w.narrow(axis, 1, v.shape[axis] + 1))


def _along(M: Tensor, u: Tensor, axis: int) -> Tensor:
    """Apply the matrix ``M`` ``(k, n)`` along ``axis`` of ``u`` (length n -> k)."""
    return torch.movedim(torch.tensordot(M, u, dims=([1], [axis])), 0, axis)


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> Tensor:
    r"""Orthonormal DCT-II matrix ``(n, n)``: :math:`C_{kj} = s_k \cos(\pi k (j + 1/2)/n)`,
    :math:`s_0 = \sqrt{1/n}`, :math:`s_k = \sqrt{2/n}`; its rows are the eigenvectors of the
    Neumann Laplacian on ``n`` cells, with eigenvalues :math:`-(2 - 2\cos(\pi k/n))/h^2`."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    C = torch.cos(math.pi * k * (j + 0.5) / n) * math.sqrt(2.0 / n)
    C[0] = math.sqrt(1.0 / n)
    return C.to(dtype=dtype, device=device)


def _largest_root(f0: Tensor, c: Tensor, gamma: float) -> Tensor:
    r"""Largest real root of :math:`(f - f_0)(f + \gamma)^2 = c` (``c >= 0``), elementwise.

    With :math:`g = f + \gamma`, :math:`\beta = f_0 + \gamma`: :math:`g^3 - \beta g^2 - c = 0`;
    Cardano's formula for the depressed cubic (trigonometric form when three roots are
    real), then two Newton steps to polish.
    """
    beta = f0 + gamma
    p = -beta * beta / 3.0
    q = -2.0 * beta**3 / 27.0 - c
    disc = (q / 2.0) ** 2 + (p / 3.0) ** 3
    sq = disc.clamp_min(0.0).sqrt()
    one = torch.sign(-q / 2.0 + sq) * (-q / 2.0 + sq).abs().pow(1.0 / 3.0)
    two = torch.sign(-q / 2.0 - sq) * (-q / 2.0 - sq).abs().pow(1.0 / 3.0)
    r = (-p / 3.0).clamp_min(0.0).sqrt()  # > 0 where three real roots
    cosarg = torch.where(r > 0, (-q / 2.0) / (r**3).clamp_min(1e-300), 0.0).clamp(-1.0, 1.0)
    trig = 2.0 * r * torch.cos(torch.arccos(cosarg) / 3.0)
    g = torch.where(disc > 0, one + two, trig) + beta / 3.0
    for _ in range(2):
        val = (g - beta) * g * g - c
        der = g * (3.0 * g - 2.0 * beta)
        g = torch.where(der.abs() > 0, g - val / der.where(der.abs() > 0, 1.0), g)
    return g - gamma


class _Ops:
    """Precomputed operators of one grid: DCTs, Laplacian spectrum, face solves."""

    def __init__(self, prob: GridProblem, P: int) -> None:
        self.d = len(prob.shape)
        self.P, self.N = P, prob.shape
        dt_ = 1.0 / P
        self.steps = (dt_, *prob.h)  # spacing per space-time axis
        self.vol = dt_ * math.prod(prob.h)
        dims = (P, *prob.shape)
        dtype, device = prob.rho0.dtype, prob.rho0.device
        self.C = [dct_matrix(n, dtype=dtype, device=device) for n in dims]
        lam = torch.zeros(dims, dtype=dtype, device=device)
        for ax, (n, s) in enumerate(zip(dims, self.steps, strict=True)):
            k = torch.arange(n, dtype=dtype, device=device)
            e = (2.0 - 2.0 * torch.cos(math.pi * k / n)) / s**2
            shape = [1] * len(dims)
            shape[ax] = n
            lam = lam + e.reshape(shape)
        lam.reshape(-1)[0] = 1.0
        self.inv_lam = 1.0 / lam
        self.inv_lam.reshape(-1)[0] = 0.0  # the constant mode: pseudo-inverse
        # (1 + I*I)^-1 along each axis (faces n + 1), for component 0 (f) and m_k
        self.face_inv = []
        for n in dims:
            I_ = torch.zeros(n, n + 1, dtype=dtype, device=device)
            idx = torch.arange(n)
            I_[idx, idx] = 0.5
            I_[idx, idx + 1] = 0.5
            eye = torch.eye(n + 1, dtype=dtype, device=device)
            self.face_inv.append(torch.linalg.inv(eye + I_.T @ I_))
        self.rho0, self.rho1 = prob.rho0, prob.rho1

    def interp(self, U: list[Tensor]) -> list[Tensor]:
        return [_avg(u, ax) for ax, u in enumerate(U)]

    def div(self, U: list[Tensor]) -> Tensor:
        return sum((torch.diff(u, dim=ax) / s for ax, (u, s) in
                    enumerate(zip(U, self.steps, strict=True))), torch.zeros(()))

    def project_continuity(self, U: list[Tensor]) -> list[Tensor]:
        """Orthogonal projection onto the discrete continuity equation with the boundary
        values (Neumann Poisson solve by DCT)."""
        U = [u.clone() for u in U]
        U[0][0], U[0][-1] = self.rho0, self.rho1
        for ax in range(1, self.d + 1):
            U[ax].select(ax, 0).zero_()
            U[ax].select(ax, -1).zero_()
        r = self.div(U)  # (P, *N)
        q = r
        for ax, C in enumerate(self.C):
            q = _along(C, q, ax)
        q = q * self.inv_lam
        for ax, C in enumerate(self.C):
            q = _along(C.T, q, ax)
        for ax, (u, s) in enumerate(zip(U, self.steps, strict=True)):
            n = u.shape[ax]
            u.narrow(ax, 1, n - 2).add_(torch.diff(q, dim=ax) / s)
        return U

    def project_interp(self, U: list[Tensor], V: list[Tensor]) -> tuple[list[Tensor],
                                                                          list[Tensor]]:
        """Projection onto ``{V = I U}``: ``U = (1 + I*I)^-1 (U0 + I* V0)``, ``V = I U``."""
        U2 = [_along(self.face_inv[ax], u + _avg_adj(v, ax), ax)
              for ax, (u, v) in enumerate(zip(U, V, strict=True))]
        return U2, self.interp(U2)

    def prox_j(self, V: list[Tensor], gamma: float) -> list[Tensor]:
        """Pointwise prox of ``gamma * sum |m|^2 / (2 f)``: largest root of the cubic."""
        f0 = V[0]
        m0 = torch.stack(V[1:])  # (d, P, *N)
        f = _largest_root(f0, 0.5 * gamma * (m0 * m0).sum(0), gamma)
        pos = f > 0
        f = torch.where(pos, f, 0.0)
        m = torch.where(pos, f / (f + gamma) * m0, 0.0)
        return [f, *m.unbind(0)]

    def action(self, V: list[Tensor]) -> Tensor:
        f = V[0]
        m2 = sum((v * v for v in V[1:]), torch.zeros_like(f))
        dens = torch.where(f > 0, m2 / (2.0 * f.clamp_min(1e-300)), 0.0)
        return self.vol * dens.sum()


# --------------------------------------------------------------------------- solver


@dataclass(frozen=True)
class BenamouBrenier:
    r"""Douglas--Rachford Benamou--Brenier solver on a staggered space-time grid.

    Attributes:
        time_steps: Number of time cells ``P``.
        iterations: Most Douglas--Rachford iterations.
        tol: Stop when the relative change of the iterate and the relative gap between
            the two splittings' outputs are both below ``tol`` (checked every
            ``check_every`` iterations).
        gamma: Prox step, relative to the mean density ``1 / |Omega|``.
        alpha: Relaxation in (0, 2).
        strict: Raise instead of warning when ``tol`` is not reached.
        progress: tqdm bar on stderr.
        threads: torch CPU threads while solving (restored afterwards; the arrays are
            small, so one thread avoids synchronisation overhead). ``None`` keeps it.
    """

    time_steps: int = 32
    iterations: int = 3000
    tol: float = 1e-5
    gamma: float = 1.0
    alpha: float = 1.98
    check_every: int = 25
    strict: bool = False
    progress: bool = False
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1)
        check_int("time_steps", self.time_steps, minimum=2)
        check_int("iterations", self.iterations, minimum=1)
        check_int("check_every", self.check_every, minimum=1)
        check_positive("tol", self.tol)
        check_positive("gamma", self.gamma)
        if not 0.0 < float(self.alpha) < 2.0:
            raise ValueError(f"`alpha` must lie in (0, 2), got {self.alpha!r}.")

    def __call__(self, problem: GridProblem) -> GridResult:
        """Solve; returns a :class:`GridResult` (detached tensors)."""
        if not isinstance(problem, GridProblem):
            raise TypeError(f"`problem` must be a GridProblem, got {type(problem).__name__}.")
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                return self._solve(problem)
        finally:
            torch.set_num_threads(before)

    def _solve(self, prob: GridProblem) -> GridResult:
        P = self.time_steps
        ops = _Ops(prob, P)
        like = prob.rho0
        gamma = self.gamma / math.prod(e * n for e, n in zip(prob.h, prob.shape, strict=True))
        t = torch.linspace(0.0, 1.0, P + 1, dtype=like.dtype, device=like.device)
        tt = t.reshape(-1, *([1] * ops.d))
        U = [(1 - tt) * prob.rho0 + tt * prob.rho1]
        for ax in range(ops.d):
            shape = [P, *prob.shape]
            shape[ax + 1] += 1
            U.append(like.new_zeros(shape))
        w = (U, ops.interp(U))
        z = ops.project_interp(*w)
        errors: list[float] = []
        converged, it = False, 0
        bar = _bar(self.progress, self.iterations)
        y = z
        for it in range(1, self.iterations + 1):
            yU = ops.project_continuity([2 * a - b for a, b in zip(z[0], w[0], strict=True)])
            yV = ops.prox_j([2 * a - b for a, b in zip(z[1], w[1], strict=True)], gamma)
            y = (yU, yV)
            w = ([a + self.alpha * (b - c) for a, b, c in zip(w[0], yU, z[0], strict=True)],
                 [a + self.alpha * (b - c) for a, b, c in zip(w[1], yV, z[1], strict=True)])
            z_new = ops.project_interp(*w)
            if it % self.check_every == 0 or it == self.iterations:
                change = _rel(z_new[0], z[0])
                gap = _rel(y[1], z_new[1])
                err = max(change, gap)
                errors.append(err)
                if bar is not None:
                    bar.update(self.check_every)
                    bar.set_postfix(err=f"{err:.2e}", refresh=False)
                if not math.isfinite(err):
                    raise FloatingPointError("Benamou-Brenier iterate became non-finite; "
                                             "lower `gamma` or check the densities.")
                if err <= self.tol:
                    converged = True
                    z = z_new
                    break
            z = z_new
        if bar is not None:
            bar.close()
        yU, yV = y
        action = ops.action(yV)
        cons = _rel(yV, ops.interp(yU))
        if not converged:
            msg = (f"Benamou-Brenier did not converge: residual {errors[-1]:.3g} > tol "
                   f"{self.tol:g} after {it} iterations; raise `iterations` or tune `gamma`.")
            if self.strict:
                raise RuntimeError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        mom = torch.stack(yV[1:], -1)  # (P, *N, d)
        return GridResult(
            rho=yU[0], momentum=mom, density=yV[0], action=action, w2_squared=2 * action,
            ts=t, coords=prob.centres(), converged=converged, n_iter=it,
            errors=torch.tensor(errors, dtype=torch.float64), constraint_error=cons)


def _rel(a: list[Tensor], b: list[Tensor]) -> float:
    num = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b, strict=True))
    den = sum(float((x**2).sum()) for x in a)
    return math.sqrt(num / max(den, 1e-300))


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="benamou-brenier", unit="it", leave=False)


def benamou_brenier(rho0: Tensor, rho1: Tensor, *, extent: float | tuple[float, ...] = 1.0,
                    origin: float | tuple[float, ...] = 0.0, **options: Any) -> GridResult:
    r"""One-line grid Benamou--Brenier: ``BenamouBrenier(**options)(GridProblem(rho0, rho1,
    extent=extent, origin=origin))``.

    Example:
        >>> x = (torch.arange(64, dtype=torch.float64) + 0.5) / 64
        >>> bump = lambda m: torch.exp(-0.5 * ((x - m) / 0.06) ** 2)
        >>> res = benamou_brenier(bump(0.3), bump(0.6))   # doctest: +SKIP
        >>> float(res.w2_squared)  # ~ 0.3 ** 2 = 0.09     # doctest: +SKIP
    """
    return BenamouBrenier(**options)(GridProblem(rho0, rho1, extent=extent, origin=origin))
