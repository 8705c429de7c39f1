r"""Laguerre cells of a weighted point cloud and the semi-dual of semi-discrete OT.

For atoms :math:`y_j` with dual weights :math:`g_j`, the Laguerre cell of atom ``j`` is
:math:`L_j(g) = \{x : j = \arg\min_k c(x, y_k) - g_k\}` (a power / Voronoi cell for the
squared Euclidean cost). The semi-dual of OT from a source :math:`\mu` onto
:math:`\sum_j b_j \delta_{y_j}` is

.. math::
    F(g) = \mathbb{E}_{x \sim \mu}\Big[\min_j \big(c(x, y_j) - g_j\big)\Big] + \sum_j b_j g_j .

These functions evaluate cells, their empirical masses and :math:`F` on samples, blockwise
(memory ``O(block * m)``); :mod:`otgen.ot.semidiscrete` maximises :math:`F`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from otgen._validate import (
    as_points,
    as_weights,
    check_finite,
    check_same_dim,
    check_same_dtype_device,
    check_tensor,
)
from otgen.ot.costs import AbstractCost, CallableCost, get_cost

__all__ = ["laguerre_assign", "cell_masses", "semidual_value"]

CostLike = AbstractCost | str | Callable[[Tensor, Tensor], Tensor]

#: Largest number of cost-matrix entries materialised at once (rows are blocked to fit).
_BLOCK_ELEMS = 1 << 22

# ---------------------------------------------------------------------------------------------
# Kernels (inputs trusted)
# ---------------------------------------------------------------------------------------------


def _row_blocks(n: int, m: int) -> range:
    rows = max(1, _BLOCK_ELEMS // max(m, 1))
    return range(0, n, rows)


def _reduce(x: Tensor, y: Tensor, g: Tensor, cost: AbstractCost) -> tuple[Tensor, Tensor]:
    r"""Blocked c-transform: :math:`\min_j c(x_i, y_j) - g_j` and its argmin, both ``(n,)``."""
    n, m = x.shape[0], y.shape[0]
    starts = _row_blocks(n, m)
    if len(starts) <= 1:
        return (cost(x, y) - g).min(dim=1)  # (n,), (n,)
    vals = x.new_empty(n)
    idx = torch.empty(n, dtype=torch.long, device=x.device)
    step = starts.step
    for s in starts:
        v, i = (cost(x[s : s + step], y) - g).min(dim=1)  # (rows,)
        vals[s : s + step] = v
        idx[s : s + step] = i
    return vals, idx


def _mean_gap(x: Tensor, y: Tensor, g: Tensor, cost: AbstractCost) -> float:
    """Mean gap between the smallest and second-smallest ``c(x, y_j) - g_j`` over ``x``."""
    starts = _row_blocks(x.shape[0], y.shape[0])
    total = x.new_zeros(())
    for s in starts:
        two = torch.topk(cost(x[s : s + starts.step], y) - g, 2, dim=1, largest=False).values
        total += (two[:, 1] - two[:, 0]).sum()
    return float(total) / x.shape[0]


def _masses(idx: Tensor, m: int, like: Tensor) -> Tensor:
    """Fraction of the ``n`` indices that fall in each of ``m`` cells, shape ``(m,)``."""
    return torch.bincount(idx, minlength=m).to(like.dtype) / max(idx.shape[0], 1)


def _assigned_cost(x: Tensor, y: Tensor, idx: Tensor, cost: AbstractCost) -> Tensor:
    """Differentiable ``c(x_i, y_{idx_i})``, shape ``(n,)``."""
    fast = type(cost)._pairwise is not AbstractCost._pairwise and not isinstance(cost, CallableCost)
    if fast:
        return cost.pairwise(x, y[idx])
    starts = _row_blocks(x.shape[0], y.shape[0])
    return torch.cat(
        [
            cost(x[s : s + starts.step], y).gather(1, idx[s : s + starts.step, None])[:, 0]
            for s in starts
        ]
    )


def _needs_grad(*ts: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


# ---------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------


def _check_dual(g: object, y: Tensor, name: str = "g") -> Tensor:
    g = check_tensor(name, g)
    m = y.shape[0]
    if g.shape != (m,):
        raise ValueError(
            f"`{name}` must have shape (m,) = ({m},), one dual weight per atom of `y`, got "
            f"{tuple(g.shape)}."
        )
    check_same_dtype_device(("y", y), (name, g))
    return check_finite(name, g)


def _check_xyg(x: object, y: object, g: object) -> tuple[Tensor, Tensor, Tensor]:
    x = as_points("x", x)
    y = as_points("y", y)
    check_same_dtype_device(("x", x), ("y", y))
    check_same_dim(x, y)
    return x, y, _check_dual(g, y)


def laguerre_assign(x: Tensor, y: Tensor, g: Tensor, cost: CostLike = "sqeuclidean") -> Tensor:
    r"""Index of the Laguerre cell of each point: :math:`\arg\min_j c(x_i, y_j) - g_j`.

    With the optimal ``g`` of :class:`SemiDiscrete`, ``y[laguerre_assign(x, y, g)]`` is the
    optimal transport map :math:`T(x)`. With ``g = 0`` it is the nearest-atom assignment.
    Ties go to the smallest index. Costs are evaluated on row blocks.

    Args:
        x: Query points, shape ``(n, d)``.
        y: Atoms, shape ``(m, d)``, same dtype and device as ``x``.
        g: Dual weights, shape ``(m,)``.
        cost: Cost name, :class:`~otgen.ot.costs.AbstractCost` or callable.
    Returns:
        ``torch.long`` tensor of shape ``(n,)`` with values in ``[0, m)``, on ``x.device``.
    Example:
        >>> y = torch.tensor([[0.0], [1.0]])
        >>> laguerre_assign(torch.tensor([[0.4], [0.6]]), y, torch.tensor([0.0, 0.3]))
        tensor([1, 1])
    """
    x, y, g = _check_xyg(x, y, g)
    with torch.no_grad():
        return _reduce(x.detach(), y.detach(), g.detach(), get_cost(cost))[1]


def cell_masses(x: Tensor, y: Tensor, g: Tensor, cost: CostLike = "sqeuclidean") -> Tensor:
    r"""Empirical mass of each Laguerre cell, :math:`\hat\mu(L_j(g)) = \#\{i : T(x_i) = y_j\}/n`.

    ``b - cell_masses(x, y, g)`` is the stochastic gradient of the semi-dual in ``g``.

    Args:
        x: Samples of the source, shape ``(n, d)``.
        y: Atoms, shape ``(m, d)``.
        g: Dual weights, shape ``(m,)``.
        cost: Cost name, cost object or callable.
    Returns:
        Tensor of shape ``(m,)`` summing to 1, dtype and device of ``x`` (not differentiable).
    Example:
        >>> x = torch.tensor([[0.1], [0.2], [0.9]])
        >>> cell_masses(x, torch.tensor([[0.0], [1.0]]), torch.zeros(2))
        tensor([0.6667, 0.3333])
    """
    x, y, g = _check_xyg(x, y, g)
    with torch.no_grad():
        idx = _reduce(x.detach(), y.detach(), g.detach(), get_cost(cost))[1]
    return _masses(idx, y.shape[0], x)


def semidual_value(
    x: Tensor, y: Tensor, g: Tensor, b: Tensor | None = None, cost: CostLike = "sqeuclidean"
) -> Tensor:
    r"""Monte-Carlo estimate of the semi-dual :math:`F(g) = \frac1n\sum_i \min_j (c(x_i, y_j)
    - g_j) + \sum_j b_j g_j`.

    :math:`F(g) \le W_c(\mu, \nu)` for every ``g`` (weak duality), with equality at the optimum.
    Differentiable in ``x``, ``y``, ``b`` and ``g`` (the argmin is held fixed, which gives the
    exact gradient almost everywhere): with ``g`` from :class:`SemiDiscrete` detached, this is
    the loss to train a generator ``x = G_θ(z)`` towards ``ν`` (semi-discrete WGAN).

    Args:
        x: Source samples, shape ``(n, d)``.
        y: Atoms, shape ``(m, d)``.
        g: Dual weights, shape ``(m,)``.
        b: Atom weights, shape ``(m,)``; default uniform ``1/m``.
        cost: Cost name, cost object or callable.
    Returns:
        Scalar tensor, dtype and device of ``x``.
    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> semidual_value(x, torch.tensor([[0.0], [1.0]]), torch.zeros(2))
        tensor(0.)
    """
    x, y, g = _check_xyg(x, y, g)
    b = as_weights("b", b, y.shape[0], y)
    c = get_cost(cost)
    with torch.no_grad():
        vals, idx = _reduce(x.detach(), y.detach(), g.detach(), c)
    if _needs_grad(x, y, g):
        vals = _assigned_cost(x, y, idx, c) - g[idx]
    return vals.mean() + b @ g


# ---------------------------------------------------------------------------------------------
# Problem, map, solver
# ---------------------------------------------------------------------------------------------
