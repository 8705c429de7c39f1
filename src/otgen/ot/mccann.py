r"""McCann's displacement interpolation of two point clouds, and of two Gaussians.

For a coupling :math:`P` of :math:`\mu = \sum_i a_i\delta_{x_i}` and
:math:`\nu = \sum_j b_j\delta_{y_j}`, the displacement interpolation is

.. math::
    \mu_t = \sum_{ij} P_{ij}\, \delta_{(1-t)x_i + t y_j}, \qquad t \in [0, 1].

With the optimal plan (``method="exact"``) this is the constant-speed :math:`W_2` geodesic,
:math:`W_2(\mu_s, \mu_t) = |t - s|\, W_2(\mu, \nu)`, each atom moves on a straight line at
constant velocity :math:`y_j - x_i`, and the action is :math:`\tfrac12 W_2^2`. With an
entropic plan (``method="sinkhorn"``) it is the blurred version (every pair with
:math:`P_{ij} >` ``threshold`` is kept). For Gaussians the geodesic is Gaussian,
:math:`N(m_t, S_t)` (:func:`otgen.ot.gaussian_mccann`), returned for many times by
:func:`gaussian_displacement`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from otgen._validate import check_choice, check_tensor
from otgen.ot.api import solve
from otgen.ot.gaussian import gaussian_mccann
from otgen.ot.maps import interpolate_coupling
from otgen.ot.result import OTResult

__all__ = ["DisplacementPath", "mccann_interpolation", "gaussian_displacement"]


@dataclass(frozen=True)
class DisplacementPath:
    r"""A displacement interpolation :math:`\mu_t = \sum_k w_k \delta_{(1-t)x_k + t y_k}`.

    Attributes:
        start, end: Atom end points ``(k, d)`` (:math:`x_{i_k}`, :math:`y_{j_k}`).
        weights: Masses ``(k,)`` (summing to the coupling's mass).
        ts: Times ``(T,)``; ``points``: atoms at those times, ``(T, k, d)``.
        result: The :class:`OTResult` of the coupling.
        action: :math:`\tfrac12\sum_k w_k |y_k - x_k|^2`, shape ``()`` (half the transport
            cost of the kept pairs; :math:`W_2^2/2` for the exact plan).
    """

    start: Tensor
    end: Tensor
    weights: Tensor
    ts: Tensor
    points: Tensor
    result: OTResult
    action: Tensor

    def at(self, t: float | Tensor) -> Tensor:
        """Atoms at time ``t`` (a float or 0-d tensor in [0, 1]), ``(k, d)``."""
        return (1 - t) * self.start + t * self.end

    @property
    def velocity(self) -> Tensor:
        """Constant velocity of each atom, ``end - start``, ``(k, d)``."""
        return self.end - self.start


def _as_times(ts: float | Tensor | list[float], like: Tensor) -> Tensor:
    if isinstance(ts, int | float):
        ts = [float(ts)]
    t = torch.as_tensor(ts, dtype=like.dtype, device=like.device) if not isinstance(
        ts, Tensor) else check_tensor("ts", ts).to(dtype=like.dtype, device=like.device)
    t = t.reshape(-1)
    if t.numel() == 0 or bool(((t < 0) | (t > 1)).any()) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"`ts` must be times in [0, 1], got {t.tolist()[:8]}; time 0 is "
                         "the source and 1 the target.")
    return t


def mccann_interpolation(
    x: Tensor, y: Tensor, ts: float | Tensor | list[float] = 0.5, a: Tensor | None = None,
    b: Tensor | None = None, *, method: str = "exact", threshold: float = 0.0,
    **solve_options: Any,
) -> DisplacementPath:
    r"""Displacement interpolation of the optimal (or entropic) coupling of two clouds.

    Args:
        x: Source cloud ``(n, d)``; y: target cloud ``(m, d)``.
        ts: Times in [0, 1]: a float, a list, or a tensor ``(T,)``.
        a, b: Weights ``(n,)``, ``(m,)`` (default uniform).
        method: ``"exact"`` (network simplex / assignment) or ``"sinkhorn"`` (pass ``eps``
            or ``eps_rel`` in ``solve_options``).
        threshold: Pairs with plan mass at most this are dropped.
        **solve_options: Passed to :func:`otgen.ot.solve` (squared Euclidean cost).
    Returns:
        :class:`DisplacementPath` with ``points`` ``(T, k, d)``; differentiable in ``x``,
        ``y`` for a fixed plan support.
    Raises:
        ValueError: bad times, shapes or weights (as :func:`otgen.ot.solve`).
    Example:
        >>> x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [2.0]])
        >>> path = mccann_interpolation(x, y, [0.0, 0.5, 1.0])
        >>> path.points[1].sort(0).values.flatten()  # x0 -> 2, x1 -> 3 (monotone)
        tensor([1., 2.])
    """
    check_choice("method", method, ("exact", "sinkhorn"))
    if "cost" in solve_options:
        raise ValueError("displacement interpolation is for the squared Euclidean cost; "
                         "drop `cost`.")
    res = solve(x, y, a, b, method=method, **solve_options)
    t = _as_times(ts, x)
    pts, w = interpolate_coupling(x, y, res, 0.0, threshold=threshold)
    end, _ = interpolate_coupling(x, y, res, 1.0, threshold=threshold)
    points = (1 - t)[:, None, None] * pts[None] + t[:, None, None] * end[None]  # (T, k, d)
    action = 0.5 * (w * ((end - pts) ** 2).sum(1)).sum()
    return DisplacementPath(start=pts, end=end, weights=w, ts=t, points=points, result=res,
                            action=action)


def gaussian_displacement(
    m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor, ts: float | Tensor | list[float],
) -> tuple[Tensor, Tensor]:
    r"""Closed-form McCann path :math:`N(m_t, S_t)` between two Gaussians at many times.

    :math:`m_t = (1-t)m_0 + t m_1`, :math:`S_t = ((1-t)I + tA) S_0 ((1-t)I + tA)` with the
    Bures matrix :math:`A` (see :func:`otgen.ot.gaussian_mccann`).

    Args:
        m0, m1: Means ``(d,)``; S0, S1: SPD covariances ``(d, d)``.
        ts: Times in [0, 1], float, list or ``(T,)``.
    Returns:
        ``(means (T, d), covariances (T, d, d))``.
    """
    m0 = check_tensor("m0", m0)
    t = _as_times(ts, m0)
    return gaussian_mccann(m0, S0, m1, S1, t)
