r"""Ground costs :math:`c(x, y)` between point clouds.

A cost maps clouds ``x`` of shape ``(n, d)`` and ``y`` of shape ``(m, d)`` to a matrix
``C`` of shape ``(n, m)`` with ``C[i, j] = c(x_i, y_j)``. Costs are differentiable in
``x`` and ``y`` and keep the caller's dtype and device. Solvers evaluate them blockwise
(``cost(x[rows], y)``) when the full matrix would not fit in memory, so a cost must be
a function of the pair of points only.

Example:
    >>> x, y = torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])
    >>> SqEuclidean()(x, y), Euclidean()(x, y), PNorm(p=1.0)(x, y)
    (tensor([[25.]]), tensor([[5.]]), tensor([[7.]]))
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from otgen._validate import check_positive

__all__ = [
    "AbstractCost",
    "SqEuclidean",
    "Euclidean",
    "PNorm",
    "CallableCost",
    "get_cost",
]


class AbstractCost(abc.ABC):
    """Interface of a ground cost: ``cost(x, y) -> (n, m)`` matrix."""

    #: exponent ``p`` such that ``c = |x - y|^p`` (``None`` for a general cost); used by
    #: ``wasserstein`` to take the ``1/p`` root.
    p: float | None = None
    #: ``c(x, y) = c(y, x)``: blockwise kernels may then evaluate ``cost(y, x)``.
    symmetric: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Cost matrix of shape ``(n, m)`` for ``x`` ``(n, d)`` and ``y`` ``(m, d)``."""

    def pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        """Cost between matched rows, ``c(x_i, y_i)``, shape ``(n,)``."""
        return self._pairwise(x, y)

    def _pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.stack([self(x[i : i + 1], y[i : i + 1])[0, 0] for i in range(x.shape[0])])


def _sq_dist(x: Tensor, y: Tensor) -> Tensor:
    """|x_i - y_j|^2 by the expansion |x|^2 + |y|^2 - 2 x.y, clamped at 0.  (n, m)

    Centring both clouds on a common point first keeps the cancellation error of the
    expansion at the scale of the clouds' spread rather than of their distance to 0.
    """
    centre = y.detach().mean(0) if y.shape[0] else 0.0
    x, y = x - centre, y - centre
    xx = (x * x).sum(-1, keepdim=True)  # (n, 1)
    yy = (y * y).sum(-1, keepdim=True)  # (m, 1)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return (xx + yy.T - 2.0 * x @ y.T).clamp_min(0.0)
    # One GEMM on augmented vectors [x, |x|^2, 1] . [-2y, 1, |y|^2]: the (n, m) output is
    # written once, which is what bounds the speed for small d.
    ones_x, ones_y = torch.ones_like(xx), torch.ones_like(yy)
    xa = torch.cat([x, xx, ones_x], dim=1)  # (n, d + 2)
    ya = torch.cat([-2.0 * y, ones_y, yy], dim=1)  # (m, d + 2)
    return (xa @ ya.T).clamp_min_(0.0)


@dataclass(frozen=True)
class SqEuclidean(AbstractCost):
    r"""Squared Euclidean cost :math:`c(x, y) = |x - y|^2` (so ``<C, P>`` is :math:`W_2^2`)."""

    symmetric: ClassVar[bool] = True

    p: float | None = 2.0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return _sq_dist(x, y)

    def _pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        return ((x - y) ** 2).sum(-1)


@dataclass(frozen=True)
class Euclidean(AbstractCost):
    r"""Euclidean cost :math:`c(x, y) = |x - y|` (so ``<C, P>`` is :math:`W_1`)."""

    symmetric: ClassVar[bool] = True

    p: float | None = 1.0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return _safe_root(_sq_dist(x, y), 0.5)

    def _pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        return _safe_root(((x - y) ** 2).sum(-1), 0.5)


@dataclass(frozen=True)
class PNorm(AbstractCost):
    r"""Power of the Euclidean distance :math:`c(x, y) = |x - y|^p`, ``p > 0``."""

    symmetric: ClassVar[bool] = True

    p: float | None = 2.0

    def __post_init__(self) -> None:
        check_positive("p", self.p)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.p == 2.0:
            return _sq_dist(x, y)
        return _safe_root(_sq_dist(x, y), float(self.p) / 2.0)  # type: ignore[arg-type]

    def _pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        return _safe_root(((x - y) ** 2).sum(-1), float(self.p) / 2.0)  # type: ignore[arg-type]


def _safe_root(sq: Tensor, power: float) -> Tensor:
    """``sq ** power`` with a zero (not NaN/inf) gradient where ``sq == 0``."""
    if power >= 1.0:
        return sq**power
    pos = sq > 0
    safe = torch.where(pos, sq, torch.ones_like(sq))
    return torch.where(pos, safe**power, torch.zeros_like(sq))


@dataclass(frozen=True)
class CallableCost(AbstractCost):
    """Wrap a user function ``fn(x, y) -> (n, m)`` as a cost.

    The function must return a finite matrix of shape ``(len(x), len(y))`` and must depend
    on each pair of points only (solvers evaluate it on row blocks).
    """

    fn: Callable[[Tensor, Tensor], Tensor]
    p: float | None = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        out = self.fn(x, y)
        if not isinstance(out, Tensor) or out.shape != (x.shape[0], y.shape[0]):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"`cost` callable must return a tensor of shape ({x.shape[0]}, {y.shape[0]}), "
                f"got {got}; make it return the full pairwise matrix c(x_i, y_j)."
            )
        return out

    def _pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.stack([self.fn(x[i : i + 1], y[i : i + 1])[0, 0] for i in range(len(x))])


_NAMED: dict[str, Callable[[], AbstractCost]] = {
    "sqeuclidean": SqEuclidean,
    "euclidean": Euclidean,
}


def get_cost(cost: str | AbstractCost | Callable[[Tensor, Tensor], Tensor]) -> AbstractCost:
    """Turn a name (``"sqeuclidean"``, ``"euclidean"``, ``"pnorm:1.5"``), a cost object or a
    callable into an :class:`AbstractCost`."""
    if isinstance(cost, AbstractCost):
        return cost
    if isinstance(cost, str):
        if cost in _NAMED:
            return _NAMED[cost]()
        if cost.startswith("pnorm:"):
            try:
                p = float(cost.split(":", 1)[1])
            except ValueError:
                p = float("nan")
            return PNorm(p=p)
        raise ValueError(
            f"`cost` must be 'sqeuclidean', 'euclidean', 'pnorm:P', an AbstractCost or a "
            f"callable, got {cost!r}."
        )
    if callable(cost):
        return CallableCost(cost)
    raise TypeError(f"`cost` must be a string, an AbstractCost or a callable, got {type(cost)}.")
