r"""Low-level kernels shared by the OT solvers: blockwise soft-min (log-sum-exp) passes that
never hold more than one ``(block, m)`` slab of the cost matrix, plan blocks recomputed from
dual potentials, and the envelope-theorem autograd rule.

Conventions (the "a ⊗ b" parametrisation of entropic OT):

.. math::
    P_{ij} = a_i b_j \exp\big((f_i + g_j - C_{ij})/\varepsilon\big),\qquad
    f_i = -\varepsilon \log \sum_j b_j \exp\big((g_j - C_{ij})/\varepsilon\big).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from otgen.ot.costs import AbstractCost

__all__ = [
    "block_rows",
    "softmin_rows",
    "softmin_cols",
    "plan_blocks",
    "envelope_value",
    "EnvelopeData",
]


#: Budget of the blockwise (online) kernels' temporaries. Small slabs are re-used heap
#: memory and stay in cache; 256 MB slabs were 3x slower (fresh pages faulted in on every
#: block): an online Sinkhorn at n = 8000 took 29.8 s CPU with 256 MB, 9.2 s with 8 MB.
SLAB_BYTES = 8 * 1024**2


def block_rows(n: int, m: int, itemsize: int, budget: int) -> int:
    """Rows per block so that a few ``(rows, m)`` temporaries fit in ``budget`` bytes."""
    per_row = max(1, 4 * m * itemsize)  # cost slab + exp temporaries
    return max(1, min(n, budget // per_row))


def _log_or_neginf(w: Tensor) -> Tensor:
    return torch.where(w > 0, w.clamp_min(torch.finfo(w.dtype).tiny).log(),
                       torch.full_like(w, -torch.inf))


def softmin_rows(
    x: Tensor, y: Tensor, cost: AbstractCost, g: Tensor, b: Tensor, eps: float, rows: int
) -> Tensor:
    r"""Row soft-min :math:`f_i = -\varepsilon \log\sum_j b_j e^{(g_j - c(x_i, y_j))/\varepsilon}`.

    Args:
        x: ``(n, d)``; y: ``(m, d)``; g: ``(m,)``; b: ``(m,)`` weights.
        eps: Temperature > 0.
        rows: Rows of ``x`` per block (memory: ``rows * m`` entries at a time).
    Returns:
        ``(n,)`` tensor, no autograd graph.
    """
    with torch.no_grad():
        h = g / eps + _log_or_neginf(b)  # (m,)
        out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for s in range(0, x.shape[0], rows):
            z = cost(x[s : s + rows], y).div_(-eps).add_(h)  # (rows, m)
            out[s : s + rows] = torch.logsumexp(z, dim=1)
        return out.mul_(-eps)


def softmin_cols(
    x: Tensor, y: Tensor, cost: AbstractCost, f: Tensor, a: Tensor, eps: float, cols: int
) -> Tensor:
    r"""Column soft-min
    :math:`g_j = -\varepsilon\log\sum_i a_i e^{(f_i - c(x_i, y_j))/\varepsilon}`.

    Evaluates ``cost(x, y[block])`` so that non-symmetric costs are handled. Shapes as in
    :func:`softmin_rows`; returns ``(m,)``.
    """
    with torch.no_grad():
        h = f / eps + _log_or_neginf(a)  # (n,)
        out = torch.empty(y.shape[0], dtype=y.dtype, device=y.device)
        if getattr(cost, "symmetric", False):  # c(y, x) = c(x, y)^T: reduce along rows
            for s in range(0, y.shape[0], cols):
                z = cost(y[s : s + cols], x).div_(-eps).add_(h)  # (cols, n)
                out[s : s + cols] = torch.logsumexp(z, dim=1)
            return out.mul_(-eps)
        for s in range(0, y.shape[0], cols):
            z = cost(x, y[s : s + cols]).div_(-eps).add_(h[:, None])  # (n, cols)
            out[s : s + cols] = torch.logsumexp(z, dim=0)
        return out.mul_(-eps)


def plan_blocks(
    x: Tensor, y: Tensor, cost: AbstractCost, f: Tensor, g: Tensor, a: Tensor, b: Tensor,
    eps: float, rows: int,
) -> Iterator[tuple[slice, Tensor]]:
    """Yield ``(row_slice, P[row_slice])`` blocks of the entropic plan, each ``(rows, m)``."""
    lb = _log_or_neginf(b)
    for s in range(0, x.shape[0], rows):
        sl = slice(s, min(s + rows, x.shape[0]))
        # no_grad must not stay active across the yield (grad mode is thread-global)
        with torch.no_grad():
            z = (f[sl, None] + g[None, :] - cost(x[sl], y)) / eps + lb[None, :]
            p = torch.exp(z + _log_or_neginf(a[sl])[:, None])
        yield sl, p


@dataclass
class EnvelopeData:
    """What the envelope-theorem backward needs: the cost, the potentials and either an
    explicit plan (dense ``plan`` or sparse ``indices``/``values``) or ``eps`` to recompute
    the entropic plan blockwise from ``f``, ``g``."""

    cost: AbstractCost
    f: Tensor
    g: Tensor
    eps: float | None = None
    plan: Tensor | None = None
    indices: Tensor | None = None
    values: Tensor | None = None
    rows: int = 1024


class _Envelope(torch.autograd.Function):
    """value(x, y, a, b) with gradients ``sum_ij P_ij ∇c(x_i, y_j)``, ``f`` and ``g``."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, x: Tensor, y: Tensor, a: Tensor, b: Tensor,
                data: EnvelopeData) -> Tensor:
        ctx.data = data
        ctx.save_for_backward(x, y, a, b)
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, y, a, b = ctx.saved_tensors
        data: EnvelopeData = ctx.data
        need_x, need_y, need_a, need_b = ctx.needs_input_grad[1:5]
        gx = gy = ga = gb = None
        if need_x or need_y:
            gx, gy = _pairing_grad(x, y, a, b, data, need_x, need_y)
            gx = None if gx is None else gx * grad
            gy = None if gy is None else gy * grad
        if need_a:
            ga = data.f.to(a.dtype) * grad
        if need_b:
            gb = data.g.to(b.dtype) * grad
        return None, gx, gy, ga, gb, None


def _pairing_grad(
    x: Tensor, y: Tensor, a: Tensor, b: Tensor, data: EnvelopeData, need_x: bool, need_y: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradient of ``sum_ij P_ij c(x_i, y_j)`` in ``x``, ``y`` with ``P`` held fixed."""
    xd = x.detach().requires_grad_(need_x)
    yd = y.detach().requires_grad_(need_y)
    wrt = [t for t, need in ((xd, need_x), (yd, need_y)) if need]
    with torch.enable_grad():
        if data.indices is not None and data.values is not None:
            i, j = data.indices
            total = (data.values * data.cost.pairwise(xd[i], yd[j])).sum()
            grads = torch.autograd.grad(total, wrt)
        elif data.plan is not None:
            grads = tuple(torch.zeros_like(t) for t in wrt)
            for s in range(0, x.shape[0], data.rows):
                sl = slice(s, s + data.rows)
                total = (data.plan[sl] * data.cost(xd[sl], yd)).sum()
                grads = tuple(g0 + g1 for g0, g1 in zip(
                    grads, torch.autograd.grad(total, wrt), strict=True))
        else:
            if data.eps is None:
                raise ValueError("internal: envelope data holds neither a plan nor eps")
            grads = tuple(torch.zeros_like(t) for t in wrt)
            for sl, p in plan_blocks(x.detach(), y.detach(), data.cost, data.f, data.g,
                                     a.detach(), b.detach(), data.eps, data.rows):
                total = (p * data.cost(xd[sl], yd)).sum()
                grads = tuple(g0 + g1 for g0, g1 in zip(
                    grads, torch.autograd.grad(total, wrt), strict=True))
    out = iter(grads)
    return (next(out) if need_x else None), (next(out) if need_y else None)


def envelope_value(
    value: Tensor, x: Tensor, y: Tensor, a: Tensor, b: Tensor, data: EnvelopeData
) -> Tensor:
    """Attach envelope-theorem gradients to a detached scalar ``value``.

    If none of ``x, y, a, b`` requires a gradient the value is returned as is (no graph).
    """
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (x, y, a, b)):
        return value.detach()
    return _Envelope.apply(value, x, y, a, b, data)
