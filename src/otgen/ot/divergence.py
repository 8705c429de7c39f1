r"""Debiased Sinkhorn divergence (Feydy et al. 2019).

.. math::
    S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
        - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

with :math:`\mathrm{OT}_\varepsilon` the entropic objective (``OTResult.objective``) in the
``KL(P | a ⊗ b)`` form. For :math:`c = |x - y|^p` with p ∈ {1, 2} it is non-negative,
zero iff α = β, and interpolates between :math:`W_p^p` (ε → 0) and an MMD (ε → ∞).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from otgen._validate import check_positive
from otgen.ot._kernels import SLAB_BYTES, EnvelopeData, block_rows, envelope_value, softmin_rows
from otgen.ot._multiscale import multiscale_eligible, sq_mean
from otgen.ot._truncated import self_multiscale, start_error
from otgen.ot.costs import AbstractCost, PNorm, SqEuclidean
from otgen.ot.problem import LinearProblem
from otgen.ot.result import warn_not_converged
from otgen.ot.sinkhorn import Sinkhorn, _schedule, cost_scale, default_tol

__all__ = ["sinkhorn_divergence"]


def sinkhorn_divergence(
    x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None, *,
    eps: float | None = None, eps_rel: float | None = None, p: float = 2,
    cost: AbstractCost | str | None = None, tol: float | None = None,
    max_iter: int = 10_000, online: bool | None = None,
) -> Tensor:
    r"""Debiased Sinkhorn divergence :math:`S_\varepsilon`, shape ``()``.

    Args:
        x: ``(n, d)``; y: ``(m, d)``; a, b: weights ``(n,)``, ``(m,)`` (default uniform).
        eps: Absolute ε (the same for the three terms).
        eps_rel: Alternatively ε as a fraction of the mean cost between ``x`` and ``y``.
        p: Exponent of the cost ``|x - y|^p`` (ignored if ``cost`` is given).
        cost: Optional ground cost overriding ``p``.
        tol, max_iter, online: Passed to :class:`~otgen.ot.sinkhorn.Sinkhorn`.
    Returns:
        The divergence (not its root), differentiable in ``x, y, a, b`` by the envelope
        theorem applied to each term. Values below zero by round-off are clamped to 0; a
        clearly negative value (non-converged solves) is clamped too and warned.
    Example:
        >>> x = torch.randn(50, 2, dtype=torch.float64)
        >>> float(sinkhorn_divergence(x, x, eps=0.1))
        0.0
    """
    c = cost if cost is not None else (SqEuclidean() if p == 2 else PNorm(p=float(p)))
    prob_xy = LinearProblem(x, y, a, b, cost=c)
    if eps is None:
        rel = check_positive("eps_rel", eps_rel) if eps_rel is not None else 0.05
        mean_c = sq_mean(prob_xy.x.detach(), prob_xy.y.detach()) \
            if isinstance(c, SqEuclidean) else cost_scale(prob_xy, 1024)[0]
        eps = rel * (mean_c if mean_c > 0 else 1.0)
    elif eps_rel is not None:
        raise ValueError("pass either `eps` (absolute) or `eps_rel` (relative), not both.")
    eps = check_positive("eps", eps)
    tol_ = tol if tol is not None else default_tol(x.dtype)
    prob_xx = LinearProblem(x, x, prob_xy.a, prob_xy.a, cost=c)
    prob_yy = LinearProblem(y, y, prob_xy.b, prob_xy.b, cost=c)
    ot_xx, f_xx = self_transport(prob_xx, eps, tol_, max_iter, _truncatable(prob_xx, online))
    ot_yy, f_yy = self_transport(prob_yy, eps, tol_, max_iter, _truncatable(prob_yy, online))
    solver = Sinkhorn(eps=eps, tol=tol, max_iter=max_iter, online=online, keep_plan=False)
    # For nearby measures the self-transport potentials are an excellent start for the
    # cross term (exact when x = y); use them when their marginal error is already small.
    if _truncatable(prob_xy, online):
        start = start_error(prob_xy.x.detach(), prob_xy.y.detach(), f_xx, f_yy,
                            prob_xy.a.detach(), prob_xy.b.detach(), eps)
    else:
        start = _start_error(prob_xy, f_xx, f_yy, eps)
    init = (f_xx, f_yy) if start < 3e-2 else None
    ot_xy = solver(prob_xy, init=init).objective
    value = ot_xy - 0.5 * (ot_xx + ot_yy)
    floor = 1e-4 if x.dtype != torch.float64 else 1e-8
    scale = float(ot_xy.detach().abs() + ot_xx.detach().abs() + ot_yy.detach().abs())
    scale += eps
    if float(value.detach()) < -floor * scale:
        warnings.warn(
            f"Sinkhorn divergence came out negative ({float(value.detach()):.3g}); the solves "
            "did not converge tightly enough. Lower `tol` or raise `max_iter`. Returning 0.",
            RuntimeWarning, stacklevel=2,
        )
    return value.clamp_min(0.0)


def _start_error(prob: LinearProblem, f: Tensor, g: Tensor, eps: float) -> float:
    """L1 row-marginal error of the entropic plan built from ``(f, g)`` (one soft-min pass)."""
    rows = block_rows(prob.shape[0], prob.shape[1], prob.x.element_size(), SLAB_BYTES)
    f_new = softmin_rows(prob.x.detach(), prob.y.detach(), prob.cost, g, prob.b.detach(), eps,
                         rows)
    return float((prob.a.detach() * torch.expm1((f - f_new) / eps).abs()).sum())


def _truncatable(prob: LinearProblem, online: bool | None) -> bool:
    """Whether the problem goes to the block-truncated multiscale engines: squared
    Euclidean cost, no dense matrix wanted (``online`` not ``False``), large and
    low-dimensional (:func:`~otgen.ot._multiscale.multiscale_eligible`)."""
    n, m = prob.shape
    return (online is not False and isinstance(prob.cost, SqEuclidean)
            and multiscale_eligible(n, m, prob.x.shape[1]))


def self_transport(
    prob: LinearProblem, eps: float, tol: float, max_iter: int, truncated: bool = False,
) -> tuple[Tensor, Tensor]:
    r""":math:`\mathrm{OT}_\varepsilon(\alpha, \alpha)` by the symmetric fixed point.

    For a symmetric problem the optimal potentials coincide, ``f = g``, and
    ``f = softmin_eps(f)``; the averaged update ``f <- (f + softmin_eps(f)) / 2`` converges
    much faster than alternating sweeps (Feydy et al. 2019). ε is annealed by halving from
    the mean cost as in :class:`Sinkhorn`. Returns :math:`2\langle a, f\rangle` (shape
    ``()``, envelope gradients ``∂/∂C = P``, ``∂/∂a = 2 f``) and the potential ``f`` ``(n,)``.
    """
    x, a = prob.x, prob.a
    xd, ad = x.detach(), a.detach()
    n = x.shape[0]
    rows = block_rows(n, n, x.element_size(), SLAB_BYTES)
    mean_c = sq_mean(xd, xd) if isinstance(prob.cost, SqEuclidean) else cost_scale(prob, rows)[0]
    f = torch.zeros(n, dtype=x.dtype, device=x.device)
    schedule = _schedule(eps, mean_c, True)
    err, it = float("inf"), 0
    out = self_multiscale(xd, ad, schedule, tol, max_iter) if truncated else None
    if out is not None:
        f, err, it = out
        schedule = []  # solved
    for stage, e in enumerate(schedule):
        target = tol if stage == len(schedule) - 1 else max(tol, 3e-2)
        while it < max_iter:
            t = softmin_rows(xd, xd, prob.cost, f, ad, e, rows)
            err = float((ad * torch.expm1((f - t) / e).abs()).sum())
            it += 1
            if err <= target:
                break
            f = 0.5 * (f + t)
        else:
            break
    if err > tol:
        warn_not_converged("symmetric Sinkhorn", it, err, tol, "raise max_iter or eps.")
    value = 2.0 * (ad * f).sum()
    data = EnvelopeData(cost=prob.cost, f=f, g=f, eps=eps, rows=rows)
    return envelope_value(value, x, x, a, a, data), f
