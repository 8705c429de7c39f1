r"""Latent curves with fixed end points, and their length and energy under a metric.

A batch of ``B`` curves :math:`\gamma: [0, 1] \to \mathbb R^d` with
:math:`\gamma(0) = z_0`, :math:`\gamma(1) = z_1` is an ``nn.Module`` whose parameters
move the interior only:

* :class:`DiscreteCurve`: a polyline through ``N + 1`` nodes at :math:`t_k = k / N`
  (the ``N - 1`` interior nodes are the parameters);
* :class:`CubicSpline`: the straight line plus a :math:`C^2` cubic spline offset with
  ``K`` uniform segments, vanishing at both ends; parameters are the offsets at the
  ``K - 1`` interior knots and the two end second derivatives (``K + 1`` per coordinate,
  as in stochman's spline).

Both give positions, velocities and accelerations in closed form. With a metric
:math:`M`,

.. math::
    L[\gamma] = \int_0^1 \sqrt{\dot\gamma^\top M(\gamma) \dot\gamma}\, dt, \qquad
    E[\gamma] = \int_0^1 \dot\gamma^\top M(\gamma) \dot\gamma\, dt \ \ge L^2,

with equality iff the speed is constant. :func:`curve_length` / :func:`curve_energy`
integrate these by composite Gauss--Legendre quadrature (length is invariant under
reparametrisation); :func:`polyline_length` / :func:`polyline_energy` use chords between
sampled points (for a pullback metric, distances between decoded points), which is what
energy minimisation optimises.

Shapes: ``z0``, ``z1`` ``(B, d)``; times ``t`` ``(T,)``; curve values ``(B, T, d)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from otgen._validate import as_points, check_int, check_same_dtype_device
from otgen.geometry.metrics import AbstractMetric

__all__ = [
    "AbstractCurve", "DiscreteCurve", "CubicSpline", "straight_line", "curve_length",
    "curve_energy", "polyline_length", "polyline_energy", "polyline_sq_segments",
]


def _ends(z0: Tensor, z1: Tensor) -> tuple[Tensor, Tensor]:
    z0, z1 = as_points("z0", z0), as_points("z1", z1)
    if z0.shape != z1.shape:
        raise ValueError(f"`z0` and `z1` must have the same shape (B, d), got "
                         f"{tuple(z0.shape)} and {tuple(z1.shape)}; pass one end point per "
                         "curve.")
    check_same_dtype_device(("z0", z0), ("z1", z1))
    return z0, z1


def _times(t: Tensor | int, like: Tensor) -> Tensor:
    if isinstance(t, int):
        return torch.linspace(0.0, 1.0, check_int("t", t, minimum=2), dtype=like.dtype,
                              device=like.device)
    if not isinstance(t, Tensor) or t.ndim != 1:
        raise ValueError(f"`t` must be a 1-D tensor of times in [0, 1] or a number of "
                         f"points, got {t!r}.")
    return t.to(dtype=like.dtype, device=like.device)


class AbstractCurve(nn.Module):
    """A batch of ``B`` curves from ``begin`` ``(B, d)`` to ``end`` ``(B, d)`` on [0, 1]."""

    begin: Tensor
    end: Tensor

    def __init__(self, z0: Tensor, z1: Tensor) -> None:
        super().__init__()
        z0, z1 = _ends(z0, z1)
        self.register_buffer("begin", z0.detach().clone())
        self.register_buffer("end", z1.detach().clone())

    @property
    def batch(self) -> int:
        return int(self.begin.shape[0])

    @property
    def dim(self) -> int:
        return int(self.begin.shape[1])

    def _line(self, t: Tensor) -> Tensor:
        return self.begin[:, None] + t[None, :, None] * (self.end - self.begin)[:, None]

    def forward(self, t: Tensor | int) -> Tensor:
        """Points ``(B, T, d)`` at times ``t`` ``(T,)`` (or ``t`` uniform points)."""
        return self.evaluate(_times(t, self.begin))[0]

    def velocity(self, t: Tensor | int) -> Tensor:
        r""":math:`\dot\gamma(t)`, ``(B, T, d)``."""
        return self.evaluate(_times(t, self.begin))[1]

    def acceleration(self, t: Tensor | int) -> Tensor:
        r""":math:`\ddot\gamma(t)`, ``(B, T, d)``."""
        return self.evaluate(_times(t, self.begin))[2]

    def evaluate(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Position, velocity and acceleration at ``t`` ``(T,)``, each ``(B, T, d)``."""
        raise NotImplementedError


class DiscreteCurve(AbstractCurve):
    r"""Polyline through ``n_segments + 1`` nodes at :math:`t_k = k / N`, ends fixed.

    Args:
        z0, z1: End points ``(B, d)``.
        n_segments: ``N`` >= 1.
        nodes: Optional initial interior nodes ``(B, N - 1, d)`` (default: on the
            straight line).
    Velocity is piecewise constant (right-continuous), acceleration zero.
    """

    def __init__(self, z0: Tensor, z1: Tensor, n_segments: int = 16,
                 nodes: Tensor | None = None) -> None:
        super().__init__(z0, z1)
        self.n_segments = check_int("n_segments", n_segments, minimum=1)
        tk = torch.linspace(0.0, 1.0, self.n_segments + 1, dtype=self.begin.dtype,
                            device=self.begin.device)[1:-1]
        init = self._line(tk) if nodes is None else nodes.detach().clone()
        if tuple(init.shape) != (self.batch, self.n_segments - 1, self.dim):
            raise ValueError(f"`nodes` must have shape (B, N - 1, d) = ({self.batch}, "
                             f"{self.n_segments - 1}, {self.dim}), got {tuple(init.shape)}.")
        self.nodes = nn.Parameter(init)

    def all_nodes(self) -> Tensor:
        """``(B, N + 1, d)`` including both ends."""
        return torch.cat([self.begin[:, None], self.nodes, self.end[:, None]], dim=1)

    def evaluate(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        nodes, n = self.all_nodes(), self.n_segments
        k = torch.clamp((t * n).floor().long(), 0, n - 1)  # (T,)
        s = (t * n - k)[None, :, None]
        a, b = nodes[:, k], nodes[:, k + 1]  # (B, T, d)
        x = a + s * (b - a)
        return x, (b - a) * n, torch.zeros_like(x)


class CubicSpline(AbstractCurve):
    r"""Straight line plus a :math:`C^2` cubic spline offset vanishing at both ends.

    The offset :math:`w` has values :math:`w_k` at knots :math:`t_k = k / K`
    (:math:`w_0 = w_K = 0`) and second derivatives :math:`m_k`; the end ones
    :math:`m_0, m_K` are free parameters and the interior ones solve the continuity
    system :math:`\tfrac h6 m_{k-1} + \tfrac{2h}3 m_k + \tfrac h6 m_{k+1} =
    (w_{k+1} - 2 w_k + w_{k-1}) / h` (a fixed linear map, precomputed). The curve is
    polynomial of degree 3 on each segment and twice continuously differentiable.

    Args:
        z0, z1: End points ``(B, d)``.
        n_segments: ``K`` >= 1 spline segments.
        values: Optional initial interior offsets ``(B, K - 1, d)`` (default 0: the line).
    Parameters:
        ``values`` ``(B, K - 1, d)`` and ``end_curvature`` ``(B, 2, d)``, the latter scaled
        as :math:`m_{0,K} = 6 K^2 \cdot` ``end_curvature`` so that both move the curve by
        comparable amounts (an unscaled :math:`m` enters with a factor :math:`h^2/6`,
        which leaves the optimiser badly conditioned).
    """

    def __init__(self, z0: Tensor, z1: Tensor, n_segments: int = 8,
                 values: Tensor | None = None) -> None:
        super().__init__(z0, z1)
        self.n_segments = k = check_int("n_segments", n_segments, minimum=1)
        dt, dev = self.begin.dtype, self.begin.device
        init = (torch.zeros(self.batch, k - 1, self.dim, dtype=dt, device=dev)
                if values is None else values.detach().clone())
        if tuple(init.shape) != (self.batch, k - 1, self.dim):
            raise ValueError(f"`values` must have shape (B, K - 1, d) = ({self.batch}, "
                             f"{k - 1}, {self.dim}), got {tuple(init.shape)}.")
        self.values = nn.Parameter(init)
        self.end_curvature = nn.Parameter(torch.zeros(self.batch, 2, self.dim, dtype=dt,
                                                      device=dev))
        # m_interior = P_w @ w_all + P_m @ [m_0, m_K]  (fixed linear maps, built in float64)
        h = 1.0 / k
        a = np.zeros((max(k - 1, 0), max(k - 1, 0)))
        rhs_w = np.zeros((max(k - 1, 0), k + 1))
        rhs_m = np.zeros((max(k - 1, 0), 2))
        for i in range(k - 1):
            a[i, i] = 2 * h / 3
            if i > 0:
                a[i, i - 1] = h / 6
            if i < k - 2:
                a[i, i + 1] = h / 6
            rhs_w[i, i:i + 3] = np.array([1.0, -2.0, 1.0]) / h
        if k > 1:
            rhs_m[0, 0] -= h / 6
            rhs_m[k - 2, 1] -= h / 6
            p_w, p_m = np.linalg.solve(a, rhs_w), np.linalg.solve(a, rhs_m)
        else:
            p_w, p_m = rhs_w, rhs_m
        self.register_buffer("p_w", torch.as_tensor(p_w, dtype=dt, device=dev))
        self.register_buffer("p_m", torch.as_tensor(p_m, dtype=dt, device=dev))

    def knots(self) -> tuple[Tensor, Tensor]:
        """Offsets ``w`` and second derivatives ``m`` at all ``K + 1`` knots, ``(B, K+1, d)``."""
        zero = torch.zeros_like(self.begin)[:, None]
        w = torch.cat([zero, self.values, zero], dim=1)
        m_end = self.end_curvature * (6.0 * self.n_segments**2)
        m_int = (torch.einsum("ik,bkd->bid", self.p_w, w)
                 + torch.einsum("ij,bjd->bid", self.p_m, m_end))
        m = torch.cat([m_end[:, :1], m_int, m_end[:, 1:]], dim=1)
        return w, m

    def evaluate(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k = self.n_segments
        h = 1.0 / k
        w, m = self.knots()
        idx = torch.clamp((t * k).floor().long(), 0, k - 1)  # (T,)
        s = (t * k - idx)[None, :, None]
        w0, w1, m0, m1 = w[:, idx], w[:, idx + 1], m[:, idx], m[:, idx + 1]
        r = 1.0 - s
        x = r * w0 + s * w1 + h * h / 6 * ((r**3 - r) * m0 + (s**3 - s) * m1)
        v = (w1 - w0) / h + h / 6 * (-(3 * r**2 - 1) * m0 + (3 * s**2 - 1) * m1)
        acc = r * m0 + s * m1
        delta = (self.end - self.begin)[:, None]
        return self._line(t) + x, v + delta, acc


def straight_line(z0: Tensor, z1: Tensor, n_points: int) -> Tensor:
    """Points ``(B, n_points, d)`` evenly spaced on the segments ``z0 -> z1``."""
    z0, z1 = _ends(z0, z1)
    t = torch.linspace(0.0, 1.0, check_int("n_points", n_points, minimum=2), dtype=z0.dtype,
                       device=z0.device)
    return z0[:, None] + t[None, :, None] * (z1 - z0)[:, None]


# --------------------------------------------------------------------------- lengths


def _check_polyline(points: Tensor) -> Tensor:
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[1] < 2:
        got = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"`points` must have shape (B, T, d) with T >= 2 points per curve, "
                         f"got {got}; add a batch dimension with points[None].")
    return points


def polyline_sq_segments(metric: AbstractMetric, points: Tensor) -> Tensor:
    r"""Squared metric lengths of the chords ``points[:, j] -> points[:, j + 1]``,
    ``(B, T - 1)`` (see :meth:`AbstractMetric.segment_sq_lengths`)."""
    p = _check_polyline(points)
    b, t, d = p.shape
    a, c = p[:, :-1].reshape(-1, d), p[:, 1:].reshape(-1, d)
    return metric.segment_sq_lengths(a, c).reshape(b, t - 1)


def polyline_length(metric: AbstractMetric, points: Tensor) -> Tensor:
    r"""Sum of chord lengths :math:`\sum_j \sqrt{\ell_j^2}`, ``(B,)``.

    For a pullback metric this is the length of the polyline through the decoded points,
    a lower bound that converges (second order) to :math:`L[\gamma]` as points densify.
    """
    return polyline_sq_segments(metric, points).clamp_min(0).sqrt().sum(-1)


def polyline_energy(metric: AbstractMetric, points: Tensor) -> Tensor:
    r"""Discrete energy :math:`(T - 1) \sum_j \ell_j^2` of points sampled at uniform times,
    ``(B,)``; it tends to :math:`E[\gamma]` as ``T`` grows."""
    sq = polyline_sq_segments(metric, points)
    return sq.sum(-1) * sq.shape[-1]


_GL_X, _GL_W = np.polynomial.legendre.leggauss(4)


def _quadrature(curve: AbstractCurve, n: int) -> tuple[Tensor, Tensor]:
    """Composite 4-point Gauss--Legendre nodes and weights on ``n`` equal intervals."""
    n = check_int("n", n, minimum=1)
    like = curve.begin
    edges = torch.linspace(0.0, 1.0, n + 1, dtype=like.dtype, device=like.device)
    x = torch.as_tensor((_GL_X + 1) / 2, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(_GL_W / 2, dtype=like.dtype, device=like.device) / n
    t = (edges[:-1, None] + x[None] / n).reshape(-1)  # (4n,)
    return t, w.repeat(n)


def _sq_speed(metric: AbstractMetric, curve: AbstractCurve, t: Tensor) -> Tensor:
    z, v, _ = curve.evaluate(t)  # (B, T, d)
    b, nt, d = z.shape
    return metric.sq_norm(z.reshape(-1, d), v.reshape(-1, d)).reshape(b, nt)


def curve_length(metric: AbstractMetric, curve: AbstractCurve, *, n: int = 64) -> Tensor:
    r""":math:`L[\gamma] = \int_0^1 \|\dot\gamma\|_{M(\gamma)} dt` by 4-point Gauss--Legendre
    on ``n`` equal intervals (exact on each interval for a smooth integrand up to
    :math:`O(n^{-8})`; take ``n`` a multiple of the curve's segments). Returns ``(B,)``."""
    t, w = _quadrature(curve, n)
    return (_sq_speed(metric, curve, t).clamp_min(0).sqrt() * w).sum(-1)


def curve_energy(metric: AbstractMetric, curve: AbstractCurve, *, n: int = 64) -> Tensor:
    r""":math:`E[\gamma] = \int_0^1 \dot\gamma^\top M(\gamma) \dot\gamma\, dt`, same
    quadrature as :func:`curve_length`. Returns ``(B,)``."""
    t, w = _quadrature(curve, n)
    return (_sq_speed(metric, curve, t) * w).sum(-1)
