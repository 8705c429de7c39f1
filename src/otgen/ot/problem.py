r"""The linear (Kantorovich) OT problem between two weighted point clouds.

.. math::
    \min_{P \ge 0} \langle C, P \rangle \quad \text{s.t.} \quad P 1_m = a,\; P^\top 1_n = b,
    \qquad C_{ij} = c(x_i, y_j).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from otgen._validate import (
    as_points,
    as_weights,
    check_same_dim,
    check_same_dtype_device,
    check_same_mass,
)
from otgen.ot.costs import AbstractCost, get_cost

__all__ = ["LinearProblem"]


@dataclass(frozen=True, init=False)
class LinearProblem:
    """Data of a balanced OT problem; validated once, here.

    Args:
        x: Source points, shape ``(n, d)``, floating dtype.
        y: Target points, shape ``(m, d)``, same dtype and device as ``x``.
        a: Source weights, shape ``(n,)``, non-negative; default uniform ``1/n``.
        b: Target weights, shape ``(m,)``, non-negative, same mass as ``a``; default ``1/m``.
        cost: A cost name (``"sqeuclidean"``, ``"euclidean"``, ``"pnorm:P"``), an
            :class:`~otgen.ot.costs.AbstractCost`, or a callable ``(x, y) -> (n, m)``.
    Raises:
        TypeError: non-tensor or integer inputs, mixed dtypes or devices.
        ValueError: wrong shapes, empty clouds, NaN/inf, negative or unequal masses.
    Example:
        >>> prob = LinearProblem(torch.randn(5, 2), torch.randn(7, 2))
        >>> prob.a.shape, prob.b.sum()
        (torch.Size([5]), tensor(1.0000))
    """

    x: Tensor
    y: Tensor
    a: Tensor
    b: Tensor
    cost: AbstractCost

    def __init__(
        self, x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None,
        cost: AbstractCost | str | Callable[[Tensor, Tensor], Tensor] = "sqeuclidean",
    ) -> None:
        x = as_points("x", x)
        y = as_points("y", y)
        check_same_dtype_device(("x", x), ("y", y))
        check_same_dim(x, y)
        a_ = as_weights("a", a, x.shape[0], x)
        b_ = as_weights("b", b, y.shape[0], y)
        check_same_mass(a_, b_)
        for name, value in (("x", x), ("y", y), ("a", a_), ("b", b_), ("cost", get_cost(cost))):
            object.__setattr__(self, name, value)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return self.x.shape[0], self.y.shape[0]

    def cost_matrix(self) -> Tensor:
        """The full cost matrix ``C``, shape ``(n, m)`` (differentiable in ``x``, ``y``)."""
        return self.cost(self.x, self.y)
