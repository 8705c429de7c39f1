r"""Online multiscale Sinkhorn for the squared Euclidean cost: nothing of size ``n m`` is ever
stored, and each soft-min only visits the kd-tree blocks whose entries can matter.

This is the memory-frugal sibling of :mod:`otgen.ot._multiscale` (which stores the
truncated kernel). Here every sweep recomputes, block by block, the log-domain soft-min

.. math::
    f_i = -\varepsilon \log \sum_{j \in \mathcal K(i)} b_j\, e^{(g_j - |x_i - y_j|^2)/\varepsilon}

over the columns :math:`\mathcal K(i)` of the leaf pairs kept by the same rigorous bound
(:meth:`BlockKernel.keep_mask <otgen.ot._multiscale.BlockKernel.keep_mask>`): the dropped
terms are below θ times the largest kept one. The bound is evaluated at the potentials of
the last mask update; the mask is refreshed at every ε stage and whenever the potentials
have moved by more than ``SLACK`` ε since (a move of Δ can raise a dropped term by e^{Δ/ε}).
The coarse ε stages run on kd-tree cluster centroids, as in the stored variant.

Memory: ``O((n + m) d)`` plus the leaf-pair mask and one ``(block, width)`` slab.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from otgen.ot._multiscale import (
    BlockKernel,
    _log_pos,
    _lse_rows,
    _softmin,
    _unsort,
    exp_floor,
    prepare,
)
from otgen.ot._sinkhorn_dense import _STAGE_TOL, _dense_engine, _log_stages

__all__ = ["TruncatedSoftmin", "online_multiscale", "self_multiscale", "start_error"]

#: refresh the mask once f or g moved by more than SLACK * eps since it was computed
SLACK = 4.0


class TruncatedSoftmin(BlockKernel):
    """Block-truncated soft-min passes (points in kd-tree order, no stored kernel)."""

    def update_mask(self, f: Tensor, g: Tensor, eps: float) -> float:
        """Recompute the kept columns of every row block and the kept rows of every column
        block at ``(f, g, eps)``; returns the kept fraction."""
        keep = self.keep_mask(f, g, eps)
        self.cols = [torch.nonzero(keep[i * self.group : (i + 1) * self.group].any(0)[
            self.cseg]).flatten() for i in range(len(self.rb) - 1)]
        keep_t = keep.T
        self.rows_of = [torch.nonzero(keep_t[j * self.group : (j + 1) * self.group].any(0)[
            self.rseg]).flatten() for j in range(len(self.cb) - 1)]
        kept = sum((self.rb[i + 1] - self.rb[i]) * int(c.numel())
                   for i, c in enumerate(self.cols))
        self.density = kept / (self.x.shape[0] * self.y.shape[0])
        self.f_ref, self.g_ref = f.clone(), g.clone()
        return self.density

    def stale(self, f: Tensor, g: Tensor, eps: float) -> bool:
        """Whether a dropped term may have grown by more than e^SLACK since the mask: terms
        scale with e^{(f_i + g_j)/eps}, so the growth is at most
        ``max(f - f_ref) + max(g - g_ref)`` (blind to the ``(f + c, g - c)`` gauge)."""
        rise = float((f - self.f_ref).max()) + float((g - self.g_ref).max())
        return rise > SLACK * eps

    def rows_softmin(self, g: Tensor, b: Tensor, eps: float) -> Tensor:
        """``f_i = -eps log sum_{j kept} b_j exp((g_j - |x_i - y_j|^2) / eps)``. ``(n,)``"""
        return _pass(self.x, self.x2, self.y, self.y2, g, b, eps, self.rb, self.cols)

    def cols_softmin(self, f: Tensor, a: Tensor, eps: float) -> Tensor:
        """``g_j = -eps log sum_{i kept} a_i exp((f_i - |x_i - y_j|^2) / eps)``. ``(m,)``"""
        return _pass(self.y, self.y2, self.x, self.x2, f, a, eps, self.cb, self.rows_of)

    def values(self, f: Tensor, g: Tensor, a: Tensor, b: Tensor, eps: float
               ) -> tuple[Tensor, Tensor]:
        """``(<C, P>, sum P)`` over the kept blocks, accumulated in float64."""
        total = torch.zeros((), dtype=torch.float64, device=f.device)
        mass = torch.zeros((), dtype=torch.float64, device=f.device)
        la, lb = _log_pos(a), _log_pos(b)
        for i, cols in enumerate(self.cols):
            sl = slice(self.rb[i], self.rb[i + 1])
            c = (self.x2[sl, None] + self.y2[cols][None, :]
                 - 2.0 * self.x[sl] @ self.y[cols].T).clamp_min_(0.0)
            z = (f[sl, None] + g[cols][None, :] - c) / eps + la[sl, None] + lb[cols][None, :]
            p = z.clamp_min_(exp_floor(z.dtype)).exp_()
            total += (p * c).sum(dtype=torch.float64)
            mass += p.sum(dtype=torch.float64)
        return total.to(f.dtype), mass.to(f.dtype)


def _pass(
    x: Tensor, x2: Tensor, y: Tensor, y2: Tensor, h: Tensor, w: Tensor, eps: float,
    bounds: list[int], lists: list[Tensor],
) -> Tensor:
    """Soft-min of block ``[bounds[i], bounds[i+1])`` of ``x`` over the points ``lists[i]``
    of ``y``: one GEMM of augmented vectors ``[2x, -|x|^2, 1] / eps`` against
    ``[y, 1, (h - |y|^2) / eps + log w]``, then a max-shifted log-sum-exp."""
    ya = torch.cat([y, torch.ones_like(h)[:, None], ((h - y2) / eps + _log_pos(w))[:, None]],
                   dim=1)  # (m, d + 2)
    xa = torch.cat([2.0 * x / eps, (-x2 / eps)[:, None], torch.ones_like(x2)[:, None]], dim=1)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i, idx in enumerate(lists):
        sl = slice(bounds[i], bounds[i + 1])
        if idx.numel() == 0:
            out[sl] = math.inf  # no kept term: reported as a failure by the caller
            continue
        out[sl] = _lse_rows(xa[sl] @ ya[idx].T).mul_(-eps)  # (rows, width) slab
    return out


def start_error(
    x: Tensor, y: Tensor, f: Tensor, g: Tensor, a: Tensor, b: Tensor, eps: float
) -> float:
    """L1 row-marginal error of the plan of ``(f, g)`` (original order), by one truncated
    soft-min pass."""
    op, px, py, a_, b_, *_ = prepare(x, y, a, b, [eps], TruncatedSoftmin)
    fs, gs = f[px], g[py]
    op.update_mask(fs, gs, eps)
    f_new = op.rows_softmin(gs, b_, eps)
    return float((a_ * torch.expm1((fs - f_new) / eps).abs()).sum())


def online_multiscale(
    x: Tensor, y: Tensor, a: Tensor, b: Tensor, eps_list: list[float], tol: float,
    max_iter: int, bar: tqdm, init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, list[float], int, float, TruncatedSoftmin, Tensor, Tensor] | None:
    """Alternating log-domain Sinkhorn on truncated blocks.

    ``init=(f, g)`` (original order) starts the first fine stage from these potentials
    instead of the coarse solution. Returns ``(f, g, errors, n_iter, eps, op, px, py)``
    with the potentials in the original order (``op`` works in kd-tree order ``px``,
    ``py``; see :func:`truncated_values`), or ``None`` if a row or column lost every kept
    term.
    """
    op, px, py, a_, b_, (xc, ac, yc, bc), coarse, fine = prepare(
        x, y, a, b, eps_list, TruncatedSoftmin)
    it = 0
    if init is not None:
        f, g = init[0][px], init[1][py]
        fine = eps_list
    elif coarse:
        cc = torch.cdist(xc, yc).square_()
        fc, gc, _, _, it, _ = _dense_engine(cc, ac, bc, coarse, tol, max_iter, None, None,
                                            bar)
        f = _softmin(op.x, yc, gc, bc, fine[0])
        g = _softmin(op.y, xc, fc, ac, fine[0])
    else:
        f = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        g = torch.zeros(y.shape[0], dtype=x.dtype, device=x.device)
    def stage_start(f: Tensor, g: Tensor, eps: float) -> Tensor:
        op.update_mask(f, g, eps)
        return op.rows_softmin(g, b_, eps)

    def refresh(f: Tensor, g: Tensor, eps: float) -> None:
        if op.stale(f, g, eps):
            op.update_mask(f, g, eps)

    out = _log_stages(lambda g_, e: op.rows_softmin(g_, b_, e),
                      lambda f_, e: op.cols_softmin(f_, a_, e), f, g, a_, b_, fine, tol,
                      max_iter, it, bar, on_stage=stage_start, after_sweep=refresh,
                      require_finite=True)
    if out is None:
        return None
    f, g, errs, it, eps = out
    return _unsort(f, px), _unsort(g, py), errs, it, eps, op, px, py


def truncated_values(
    op: TruncatedSoftmin, f: Tensor, g: Tensor, a: Tensor, b: Tensor, px: Tensor, py: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """``(<C, P>, sum P)`` of the plan of ``(f, g)`` (original order) over the kept blocks
    of a fresh mask."""
    fs, gs = f[px], g[py]
    op.update_mask(fs, gs, eps)
    return op.values(fs, gs, a[px], b[py], eps)


def self_multiscale(
    x: Tensor, a: Tensor, eps_list: list[float], tol: float, max_iter: int,
) -> tuple[Tensor, float, int] | None:
    """Symmetric fixed point ``f <- (f + softmin(f)) / 2`` of OT_ε(α, α) on truncated blocks,
    coarse stages on clusters. Returns ``(f, error, n_iter)`` (original order) or ``None``."""
    op, px, _, a_, _, (xc, ac, _, _), coarse, fine = prepare(x, x, a, a, eps_list, TruncatedSoftmin)
    it = 0
    if coarse:
        fc = torch.zeros(xc.shape[0], dtype=x.dtype, device=x.device)
        cc = torch.cdist(xc, xc).square_()
        lac = _log_pos(ac)
        for e in coarse:  # dense symmetric iteration on the clusters
            for _ in range(max_iter):
                t = -e * torch.logsumexp((fc[None, :] - cc) / e + lac[None, :], dim=1)
                done = float((ac * torch.expm1((fc - t) / e).abs()).sum()) <= (
                    tol if e == coarse[-1] else _STAGE_TOL)
                fc = 0.5 * (fc + t)
                if done:
                    break
        f = _softmin(op.x, xc, fc, ac, fine[0])
    else:
        f = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    err = math.inf
    for stage, eps in enumerate(fine):
        target = tol if stage == len(fine) - 1 else max(tol, _STAGE_TOL)
        op.update_mask(f, f, eps)
        while it < max_iter:
            t = op.rows_softmin(f, a_, eps)
            if not bool(torch.isfinite(t).all()):
                return None
            err = float((a_ * torch.expm1((f - t) / eps).abs()).sum())
            it += 1
            if err <= target:
                break
            f = 0.5 * (f + t)
            if op.stale(f, f, eps):
                op.update_mask(f, f, eps)
        else:
            break
    return _unsort(f, px), err, it
