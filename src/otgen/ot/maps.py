r"""Transport maps from couplings and potentials, and displacement interpolation.

* Barycentric projection of a plan: :math:`T(x_i) = \sum_j P_{ij} y_j / \sum_j P_{ij}`.
* Entropic map from Sinkhorn potentials (Pooladian & Niles-Weed 2021), defined at any
  ``x``: :math:`T_\varepsilon(x) = \sum_j w_j(x) y_j` with
  :math:`w_j(x) \propto b_j e^{(g_j - c(x, y_j))/\varepsilon}`.
* McCann's displacement interpolation :math:`x_t = (1-t)\,x + t\,T(x)`, and of a whole
  coupling: the measure :math:`\sum_{ij} P_{ij}\,\delta_{(1-t)x_i + t y_j}`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otgen._validate import as_points, as_weights, check_positive
from otgen.ot.costs import AbstractCost, get_cost
from otgen.ot.result import OTResult

__all__ = [
    "barycentric_projection",
    "entropic_map",
    "displacement_interpolation",
    "interpolate_coupling",
]


def barycentric_projection(plan: Tensor | OTResult, y: Tensor) -> Tensor:
    """Barycentric map of a plan, shape ``(n, d)``; ``plan`` is ``(n, m)`` or a result.

    Rows of zero mass raise ``ValueError``: the map is undefined there.
    """
    y = as_points("y", y)
    P = plan.dense_plan() if isinstance(plan, OTResult) else plan
    if not isinstance(P, Tensor) or P.ndim != 2 or P.shape[1] != y.shape[0]:
        got = tuple(P.shape) if isinstance(P, Tensor) else type(P).__name__
        raise ValueError(f"`plan` must have shape (n, {y.shape[0]}) to match `y`, got {got}.")
    mass = P.sum(1, keepdim=True)  # (n, 1)
    if bool((mass <= 0).any()):
        raise ValueError(
            f"`plan` has {int((mass <= 0).sum())} rows of zero mass, where the barycentric "
            "map is undefined; drop those source points or give them positive weight."
        )
    return (P @ y) / mass


def entropic_map(
    x: Tensor, y: Tensor, g: Tensor, *, eps: float, b: Tensor | None = None,
    cost: AbstractCost | str = "sqeuclidean", block: int = 4096,
) -> Tensor:
    r"""Entropic transport map :math:`T_\varepsilon(x)` at new points ``x``.

    Args:
        x: Query points ``(k, d)``.
        y: Target support ``(m, d)``.
        g: Target potential from Sinkhorn, ``(m,)`` (``OTResult.g``).
        eps: The ε the potential was computed with (``OTResult.eps``).
        b: Target weights ``(m,)``, default uniform.
        cost: Ground cost used in the solve.
        block: Query rows per block (memory ``block * m``).
    Returns:
        ``(k, d)`` tensor, differentiable in ``x``.
    """
    x, y = as_points("x", x), as_points("y", y)
    eps = check_positive("eps", eps)
    bw = as_weights("b", b, y.shape[0], y)
    if not isinstance(g, Tensor) or g.shape != (y.shape[0],):
        raise ValueError(f"`g` must have shape ({y.shape[0]},) to match `y`.")
    c = get_cost(cost)
    logb = torch.where(bw > 0, bw.log(), torch.full_like(bw, -torch.inf))
    out = []
    for s in range(0, x.shape[0], block):
        w = torch.softmax((g[None, :] - c(x[s : s + block], y)) / eps + logb[None, :], dim=1)
        out.append(w @ y)
    return torch.cat(out, 0)


def displacement_interpolation(x: Tensor, Tx: Tensor, t: float | Tensor) -> Tensor:
    """McCann interpolation ``(1 - t) x + t T(x)``; ``x``, ``Tx`` ``(n, d)``, ``t`` scalar
    or ``(n, 1)``. Returns ``(n, d)``."""
    x, Tx = as_points("x", x), as_points("Tx", Tx)
    if x.shape != Tx.shape:
        raise ValueError(f"`x` and `Tx` must have one shape, got {tuple(x.shape)} and "
                         f"{tuple(Tx.shape)}.")
    return (1 - t) * x + t * Tx


def interpolate_coupling(
    x: Tensor, y: Tensor, result: OTResult, t: float, *, threshold: float = 0.0
) -> tuple[Tensor, Tensor]:
    r"""Displacement interpolation of a coupling: support points and masses of
    :math:`\sum_{ij} P_{ij}\delta_{(1-t)x_i + t y_j}` (entries with mass ≤ ``threshold``
    dropped). Returns ``(points (k, d), masses (k,))``."""
    if result.plan_indices is not None and result.plan_values is not None:
        i, j = result.plan_indices
        w = result.plan_values
    else:
        P = result.dense_plan()
        i, j = torch.nonzero(P > threshold, as_tuple=True)
        w = P[i, j]
    keep = w > threshold
    i, j, w = i[keep], j[keep], w[keep]
    return (1 - t) * x[i] + t * y[j], w
