r"""Kantorovich duality: c-transforms, the dual objective and the duality gap.

Hard c-transform and its entropic (soft) version, for a potential ``g`` on targets ``y``:

.. math::
    g^c(x_i) = \min_j\, c(x_i, y_j) - g_j,\qquad
    g^{c,\varepsilon}(x_i) = -\varepsilon \log \sum_j b_j\, e^{(g_j - c(x_i, y_j))/\varepsilon}.

Weak duality: for any :math:`f_i + g_j \le C_{ij}`, :math:`\langle a, f\rangle +
\langle b, g\rangle \le \langle C, P\rangle` for every coupling ``P``; at the optimum the
gap is zero and ``(g^c, g)`` is optimal whenever ``g`` is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otgen._validate import as_points, as_weights, check_finite, check_positive
from otgen.ot.costs import AbstractCost, get_cost

__all__ = ["c_transform", "c_transform_targets", "dual_objective", "duality_gap"]


def _cost_matrix(x: Tensor, y: Tensor, cost: AbstractCost | str) -> Tensor:
    return get_cost(cost)(as_points("x", x), as_points("y", y))


def c_transform(
    g: Tensor, x: Tensor, y: Tensor, *, cost: AbstractCost | str = "sqeuclidean",
    eps: float | None = None, b: Tensor | None = None,
) -> Tensor:
    r"""c-transform of a target potential: ``f_i = min_j c(x_i, y_j) - g_j`` (``eps=None``)
    or its soft version with weights ``b`` (default uniform).

    Args:
        g: Target potential, shape ``(m,)``.
        x: Points where the transform is evaluated, ``(n, d)``.
        y: Target points, ``(m, d)``.
        cost: Ground cost.
        eps: Temperature of the soft transform; ``None`` for the hard transform.
        b: Target weights ``(m,)`` for the soft transform.
    Returns:
        ``(n,)`` tensor, differentiable in ``g``, ``x`` and ``y`` (through the argmin
        for the hard transform, a softmax for the soft one).
    Example:
        >>> c_transform(torch.zeros(2), torch.tensor([[0.2]]), torch.tensor([[0.0], [1.0]]))
        tensor([0.0400])
    """
    C = _cost_matrix(x, y, cost)  # (n, m)
    if not isinstance(g, Tensor) or g.shape != (C.shape[1],):
        got = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
        raise ValueError(f"`g` must have shape ({C.shape[1]},) to match `y`, got {got}.")
    check_finite("g", g)
    if eps is None:
        return (C - g[None, :]).min(dim=1).values
    eps = check_positive("eps", eps)
    bw = as_weights("b", b, C.shape[1], y)
    logb = torch.where(bw > 0, bw.log(), torch.full_like(bw, -torch.inf))
    return -eps * torch.logsumexp((g[None, :] - C) / eps + logb[None, :], dim=1)


def c_transform_targets(
    f: Tensor, x: Tensor, y: Tensor, *, cost: AbstractCost | str = "sqeuclidean",
    eps: float | None = None, a: Tensor | None = None,
) -> Tensor:
    """The transform in the other direction: ``g_j = min_i c(x_i, y_j) - f_i`` (or soft
    with weights ``a``). Shapes: ``f`` ``(n,)``, returns ``(m,)``."""
    C = _cost_matrix(x, y, cost)
    if not isinstance(f, Tensor) or f.shape != (C.shape[0],):
        got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
        raise ValueError(f"`f` must have shape ({C.shape[0]},) to match `x`, got {got}.")
    check_finite("f", f)
    if eps is None:
        return (C - f[:, None]).min(dim=0).values
    eps = check_positive("eps", eps)
    aw = as_weights("a", a, C.shape[0], x)
    loga = torch.where(aw > 0, aw.log(), torch.full_like(aw, -torch.inf))
    return -eps * torch.logsumexp((f[:, None] - C) / eps + loga[:, None], dim=0)


def dual_objective(
    f: Tensor, g: Tensor, a: Tensor, b: Tensor, *, C: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    r"""Dual objective. Hard: :math:`\langle a,f\rangle + \langle b,g\rangle` (valid lower
    bound only if ``f ⊕ g ≤ C``). Entropic (``eps`` and ``C`` given):
    :math:`\langle a,f\rangle + \langle b,g\rangle - \varepsilon\langle a\otimes b,
    e^{(f\oplus g - C)/\varepsilon} - 1\rangle`, a lower bound of OT_ε for every ``f, g``.

    Shapes: ``f, a`` ``(n,)``; ``g, b`` ``(m,)``; ``C`` ``(n, m)``. Returns ``()``.
    """
    value = (a * f).sum() + (b * g).sum()
    if eps is None:
        return value
    if C is None:
        raise ValueError("the entropic dual objective needs the cost matrix `C`.")
    eps = check_positive("eps", eps)
    kern = torch.exp((f[:, None] + g[None, :] - C) / eps)  # (n, m)
    return value - eps * (a[:, None] * b[None, :] * (kern - 1.0)).sum()


def duality_gap(plan: Tensor, f: Tensor, g: Tensor, C: Tensor, a: Tensor, b: Tensor
                ) -> tuple[Tensor, Tensor]:
    r"""Primal-dual gap of an exact solution and the dual infeasibility.

    Returns:
        ``(gap, violation)``: :math:`\langle C, P\rangle - \langle a,f\rangle -
        \langle b,g\rangle` and :math:`\max_{ij}(f_i + g_j - C_{ij})_+`, both shape ``()``.
        An optimal pair has both ≈ 0.
    """
    gap = (plan * C).sum() - (a * f).sum() - (b * g).sum()
    violation = (f[:, None] + g[None, :] - C).max().clamp_min(0.0)
    return gap, violation
