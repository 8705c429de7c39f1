"""One-line helpers on top of the problem / solver / result objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from otgen._validate import check_choice, check_positive
from otgen.ot.costs import AbstractCost, PNorm, SqEuclidean, get_cost
from otgen.ot.exact import Exact
from otgen.ot.problem import LinearProblem
from otgen.ot.result import OTResult
from otgen.ot.sinkhorn import Sinkhorn

__all__ = ["solve", "wasserstein"]

_METHODS = ("exact", "sinkhorn")


def solve(
    x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None, *,
    method: str = "exact",
    cost: str | AbstractCost | Callable[[Tensor, Tensor], Tensor] = "sqeuclidean",
    eps: float | None = None, eps_rel: float | None = None, tol: float | None = None,
    max_iter: int | None = None, progress: bool | None = None,
    init: tuple[Tensor, Tensor] | None = None, **kwargs: Any,
) -> OTResult:
    """Solve the OT problem between weighted clouds; returns an :class:`OTResult`.

    Args:
        x: ``(n, d)``; y: ``(m, d)``; a, b: weights ``(n,)``, ``(m,)`` (default uniform).
        method: ``"exact"`` (network simplex) or ``"sinkhorn"`` (entropic, log-stable).
        cost: Cost name, object or callable.
        eps, eps_rel: Sinkhorn regularisation, absolute or relative to the mean cost.
        tol, max_iter, progress: Solver controls (Sinkhorn); ``max_iter`` also bounds
            the simplex pivots for ``"exact"``.
        init: Warm start ``(f, g)`` for Sinkhorn.
        **kwargs: Further :class:`Sinkhorn` / :class:`Exact` fields (``online=True``,
            ``memory_budget=...``, ``strict=True``, ...).
    Example:
        >>> res = solve(torch.randn(64, 2), torch.randn(64, 2))
        >>> res.plan.shape, res.converged
        (torch.Size([64, 64]), True)
    """
    check_choice("method", method, _METHODS)
    prob = LinearProblem(x, y, a, b, cost=cost)
    if method == "exact":
        if eps is not None or eps_rel is not None:
            raise ValueError("`eps` applies to method='sinkhorn' only; drop it for 'exact'.")
        return Exact(max_iter=max_iter, **kwargs)(prob)
    opts: dict[str, Any] = dict(eps=eps, eps_rel=eps_rel, tol=tol, progress=progress, **kwargs)
    if max_iter is not None:
        opts["max_iter"] = max_iter
    return Sinkhorn(**opts)(prob, init=init)


def wasserstein(
    x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None, *,
    p: float = 2, method: str = "exact", **kwargs: Any,
) -> Tensor:
    r"""The Wasserstein distance :math:`W_p` itself (not :math:`W_p^p`), shape ``()``.

    With ``method="sinkhorn"`` this is :math:`\langle C, P_\varepsilon\rangle^{1/p}` for the
    entropic plan (pass ``eps`` / ``eps_rel`` in ``kwargs``). Differentiable by the envelope
    theorem.

    Example:
        >>> wasserstein(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]))
        tensor(5.)
    """
    p = check_positive("p", p)
    cost = SqEuclidean() if p == 2 else PNorm(p=float(p))
    if "cost" in kwargs:
        raise ValueError("`wasserstein` sets the cost |x - y|^p from `p`; use `solve` for "
                         "other costs.")
    res = solve(x, y, a, b, method=method, cost=get_cost(cost), **kwargs)
    return res.cost.clamp_min(0.0) ** (1.0 / p)
