r"""Multiscale Sinkhorn for the squared Euclidean cost: coarse ε-scaling on kd-tree cluster
centroids, then fine stages on a *block-sparse truncated* kernel.

Why: at small ε the entropic plan is concentrated near the graph of the OT map, so most
entries of the stabilised kernel :math:`\tilde K_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}`
are below round-off. The dense engine still streams all ``n m`` of them through every
mat-vec. Here (after Schmitzer 2019, "Stabilized sparse scaling algorithms", and the
multiscale scheme of GeomLoss/Feydy 2020):

1. Both clouds are ordered by a balanced kd-tree (median splits along the widest
   coordinate), so that its leaves are spatially compact *clusters* and its subtrees of
   ~``block`` points are compact *blocks*.
2. The ε-scaling stages with :math:`\varepsilon \ge \kappa\,\sigma^2` (σ² the mean squared
   distance of a point to its cluster centroid) are solved on the centroids, weighted by
   cluster mass: a problem ~``leaf²`` times smaller.
3. The potentials are extended to the points by soft c-transforms,
   :math:`f_i = -\varepsilon\log\sum_J \bar b_J e^{(\bar g_J - |x_i - \bar y_J|^2)/\varepsilon}`.
4. The remaining stages run the kernel-domain iteration of the dense engine on the blocks
   ``(I, J)`` whose entries can exceed θ. The test is a rigorous upper bound, computed in
   ``O((n + m) N_b d)`` with ``N_b`` blocks: for centres ``p_I, q_J`` and radii ``r_I, r_J``,

   .. math::
       f_i + g_j - |x_i - y_j|^2 \le
       \max_{i \in I}\big(f_i - |x_i|^2 + 2\langle x_i, q_J\rangle\big)
       + \max_{j \in J}\big(g_j - |y_j|^2 + 2\langle p_I, y_j\rangle\big)
       - 2\langle p_I, q_J\rangle + 2 r_I r_J,

   from :math:`2\langle x, y\rangle = 2\langle x - p, y - q\rangle + 2\langle x, q\rangle
   + 2\langle p, y\rangle - 2\langle p, q\rangle` and Cauchy–Schwarz. Dropped entries are
   at most θ (relative to a row sum of about 1) when the block kernel is built; the
   scalings ``u, v`` can only inflate them by :math:`u_i v_j`, so the kernel is rebuilt
   from the absorbed potentials whenever :math:`\max\log u + \max\log v` exceeds a slack.

The caller checks the final potentials on the *full* plan (no truncation) and, if the true
marginal error is above tolerance, finishes with the dense engine: truncation can cost
speed, never accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from otgen.ot._sinkhorn_dense import (
    _STAGE_TOL,
    _adapt_omega,
    _dense_engine,
    _positive_finite,
    _relax,
)

__all__ = ["exp_floor", "full_plan", "kd_order", "multiscale_eligible", "multiscale_engine",
           "plan_cost", "sq_mean"]

#: below this many points per side the dense engine is used
MIN_POINTS = 4096
#: points per coarse cluster (kd-tree leaf) and per block of the truncated kernel
LEAF, BLOCK = 16, 64
#: coarse stages while eps >= KAPPA * (mean squared cluster radius)
KAPPA = 4.0
#: most clusters of the coarse problem (its dense kernel is COARSE_MAX^2 entries)
COARSE_MAX = 2048
#: the block kernel is used only while at most this fraction of blocks is kept
MAX_DENSITY = 0.5
#: rebuild the truncated kernel once the dropped entries may have grown by e^SLACK
SLACK = 4.0


def _log_theta(dtype: torch.dtype) -> float:
    """log of the truncation threshold θ: e^-18 ≈ 1.5e-8 in float32, e^-36 in float64."""
    return -36.0 if dtype == torch.float64 else -18.0


def exp_floor(dtype: torch.dtype) -> float:
    """Exponent floor that keeps ``exp`` on its fast path and its result a normal number
    (``e^-80 ≈ 1.8e-35`` in float32, ``e^-700`` in float64)."""
    return -700.0 if dtype == torch.float64 else -80.0


def sq_mean(x: Tensor, y: Tensor) -> float:
    """Mean of ``|x_i - y_j|^2`` over all pairs, in closed form:
    ``mean|x - c|^2 + mean|y - c|^2 - 2 <mean(x) - c, mean(y) - c>`` with ``c = mean(y)``."""
    c = y.mean(0)
    xc, yc = (x - c).double(), (y - c).double()
    return float((xc * xc).sum(1).mean() + (yc * yc).sum(1).mean()
                 - 2.0 * xc.mean(0) @ yc.mean(0))


def full_plan(
    x: Tensor, y: Tensor, f: Tensor, g: Tensor, a: Tensor, b: Tensor, eps: float
) -> tuple[Tensor, float, Tensor]:
    """The full (untruncated) plan ``P_ij = a_i b_j exp((f_i + g_j - |x_i - y_j|^2) / eps)``
    built by one GEMM of augmented vectors, its L1 marginal error and ``<C, P>``.

    Returns ``(plan (n, m), error, cost)``. ``<C, P> = sum_i r_i |x_i|^2 + sum_j c_j |y_j|^2
    - 2 sum_i <x_i, (P y)_i>`` (centred points; ``r``, ``c`` the plan's marginals) needs no
    cost matrix. Exponents are floored at :func:`exp_floor`: ``exp`` of arguments whose
    result is subnormal or underflows takes a slow path, 4-7x slower on this CPU.
    """
    c = y.mean(0)
    xc, yc = x - c, y - c
    x2, y2 = (xc * xc).sum(1), (yc * yc).sum(1)
    la, lb = _log_pos(a), _log_pos(b)
    xa = torch.cat([2.0 * xc / eps, ((f - x2) / eps + la)[:, None],
                    torch.ones_like(f)[:, None]], dim=1)  # (n, d + 2)
    ya = torch.cat([yc, torch.ones_like(g)[:, None], ((g - y2) / eps + lb)[:, None]], dim=1)
    plan = (xa @ ya.T).clamp_min_(exp_floor(x.dtype)).exp_()  # (n, m)
    if bool((a <= 0).any()):
        plan[a <= 0] = 0.0
    if bool((b <= 0).any()):
        plan[:, b <= 0] = 0.0
    r, s = plan.sum(1), plan.sum(0)
    err = float((r - a).abs().sum() + (s - b).abs().sum())
    return plan, err, plan_cost(x, y, plan)


def plan_cost(x: Tensor, y: Tensor, plan: Tensor) -> Tensor:
    """``<C, P>`` for the squared Euclidean cost without the ``(n, m)`` cost matrix:
    ``sum_i r_i |x_i|^2 + sum_j c_j |y_j|^2 - 2 sum_i <x_i, (P y)_i>`` on points centred on
    ``mean(y)`` (``r``, ``c`` the plan's marginals). Scalar tensor."""
    c = y.mean(0)
    xc, yc = x - c, y - c
    return ((plan.sum(1) * (xc * xc).sum(1)).sum() + (plan.sum(0) * (yc * yc).sum(1)).sum()
            - 2.0 * (xc * (plan @ yc)).sum())


def multiscale_eligible(n: int, m: int, d: int) -> bool:
    """Whether the multiscale engine is worth trying (large, low-dimensional problems)."""
    return min(n, m) >= MIN_POINTS and d <= 8


def kd_order(x: Tensor, levels: int) -> tuple[Tensor, list[list[int]]]:
    """Balanced kd-tree order of ``x`` (``(n, d)``) to depth ``levels``.

    Returns ``(perm, bounds)``: ``x[perm]`` lists the points leaf by leaf, and
    ``bounds[l]`` (length ``2**l + 1``) are the segment offsets of the tree's level ``l``.
    Each split sorts a segment along its widest coordinate and cuts it at the median.
    """
    n = x.shape[0]
    perm = torch.arange(n, device=x.device)
    bounds: list[list[int]] = [[0, n]]
    for _ in range(levels):
        cur = bounds[-1]
        lengths = torch.tensor([e - s for s, e in zip(cur[:-1], cur[1:], strict=True)],
                               device=x.device)
        seg = torch.repeat_interleave(torch.arange(len(cur) - 1, device=x.device), lengths)
        xs = x[perm]
        idx = seg[:, None].expand_as(xs)
        lo = torch.full((len(cur) - 1, x.shape[1]), math.inf, dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, -math.inf)
        lo.scatter_reduce_(0, idx, xs, "amin")
        hi.scatter_reduce_(0, idx, xs, "amax")
        dim = (hi - lo).argmax(1)  # widest coordinate of each segment
        key = xs.gather(1, dim[seg][:, None]).squeeze(1)
        o1 = torch.argsort(key, stable=True)
        o2 = torch.argsort(seg[o1], stable=True)
        perm = perm[o1[o2]]
        nxt = [0]
        for s, e in zip(cur[:-1], cur[1:], strict=True):
            nxt += [(s + e) // 2, e]
        bounds.append(nxt)
    return perm, bounds


def _segments(bounds: list[int], device: torch.device) -> Tensor:
    lengths = torch.tensor([e - s for s, e in zip(bounds[:-1], bounds[1:], strict=True)],
                           device=device)
    return torch.repeat_interleave(torch.arange(len(bounds) - 1, device=device), lengths)


def _clusters(x: Tensor, a: Tensor, bounds: list[int]) -> tuple[Tensor, Tensor, float]:
    """Mass-weighted centroids ``(k, d)``, masses ``(k,)`` and the mean squared radius."""
    seg = _segments(bounds, x.device)
    k = len(bounds) - 1
    mass = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, seg, a)
    cnt = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(
        0, seg, torch.ones_like(a))
    w = torch.where(mass[seg] > 0, a, torch.ones_like(a))  # empty-mass clusters: plain mean
    wsum = torch.where(mass > 0, mass, cnt)
    cen = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(
        0, seg, x * w[:, None]) / wsum[:, None]
    var = float((((x - cen[seg]) ** 2).sum(1) * a).sum() / a.sum().clamp_min(1e-300))
    return cen, mass, var


def _log_pos(w: Tensor) -> Tensor:
    """``log w`` where ``w > 0``, else -1e4 (exponent far below :func:`exp_floor`: no
    ``-inf`` enters a GEMM)."""
    return torch.where(w > 0, w.clamp_min(1e-300).log(), torch.full_like(w, -1e4))


def _lse_rows(z: Tensor) -> Tensor:
    """Row log-sum-exp of ``z`` ``(rows, k)`` (overwritten), max-shifted, exponents floored
    at :func:`exp_floor`. ``(rows,)``"""
    top = z.amax(1, keepdim=True)
    return z.sub_(top).clamp_min_(exp_floor(z.dtype)).exp_().sum(1).log_().add_(top.squeeze(1))


def _group(bounds: list[int], k: int) -> list[int]:
    """Offsets of consecutive groups of ``k`` segments of ``bounds`` (last group shorter)."""
    return bounds[::k] if (len(bounds) - 1) % k == 0 else bounds[::k] + [bounds[-1]]


def _softmin(x: Tensor, yc: Tensor, gc: Tensor, bc: Tensor, eps: float) -> Tensor:
    """``-eps log sum_J bc_J exp((gc_J - |x_i - yc_J|^2) / eps)`` for all ``i``. ``(n,)``"""
    lb = _log_pos(bc)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    rows = max(1, (1 << 22) // max(1, yc.shape[0]))
    for s in range(0, x.shape[0], rows):
        z = torch.cdist(x[s : s + rows], yc).square_().neg_().add_(gc).div_(eps).add_(lb)
        out[s : s + rows] = _lse_rows(z).mul_(-eps)
    return out


def _leaf_max(x: Tensor, phi: Tensor, q: Tensor, bounds: list[int]) -> Tensor:
    """``M[k, J] = max_{i in leaf k} (phi_i + 2 <x_i, q_J>)``, shape ``(N_leaves, N_q)``.

    Leaves (sizes differ by at most one) are padded to the largest size by repeating their
    last point, which leaves every maximum unchanged; chunks of leaves keep the
    ``(leaves, size, N_q)`` temporary near 4M entries.
    """
    starts = torch.tensor(bounds[:-1], device=x.device)
    ends = torch.tensor(bounds[1:], device=x.device)
    size = int((ends - starts).max())
    idx = torch.minimum(starts[:, None] + torch.arange(size, device=x.device)[None, :],
                        (ends - 1)[:, None])  # (N_leaves, size)
    out = torch.empty(len(bounds) - 1, q.shape[0], dtype=x.dtype, device=x.device)
    step = max(1, (1 << 22) // max(1, size * q.shape[0]))
    q2 = 2.0 * q.T  # (d, N_q)
    for s in range(0, idx.shape[0], step):
        ii = idx[s : s + step]
        v = torch.matmul(x[ii], q2).add_(phi[ii][:, :, None])  # (chunk, size, N_q)
        out[s : s + step] = v.amax(1)
    return out


class BlockKernel:
    """Truncated stabilised kernel (points already in kd-tree order).

    The truncation test runs on pairs of kd-tree *leaves* (tight radii); storage groups
    rows by *blocks* of ``2**k`` leaves: row block ``i`` holds ``vals[i]`` of shape
    ``(|I|, w_i)`` for the ``w_i`` columns ``cols[i]`` of the leaves kept for any of its
    row leaves.
    """

    def __init__(self, x: Tensor, y: Tensor, rl: list[int], cl: list[int], group: int) -> None:
        self.x, self.y, self.rl, self.cl, self.group = x, y, rl, cl, group
        self.rb = _group(rl, group)  # row blocks
        self.cb = _group(cl, group)  # column blocks
        self.rseg, self.cseg = _segments(rl, x.device), _segments(cl, x.device)
        self.p, self.rp = self._centres(x, rl, self.rseg)
        self.q, self.rq = self._centres(y, cl, self.cseg)
        self.x2, self.y2 = (x * x).sum(1), (y * y).sum(1)
        self.vals: list[Tensor] = []
        self.cols: list[Tensor] = []
        self.density = 1.0

    @staticmethod
    def _centres(x: Tensor, bounds: list[int], seg: Tensor) -> tuple[Tensor, Tensor]:
        k = len(bounds) - 1
        lo = torch.full((k, x.shape[1]), math.inf, dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, -math.inf)
        idx = seg[:, None].expand_as(x)
        lo.scatter_reduce_(0, idx, x, "amin")
        hi.scatter_reduce_(0, idx, x, "amax")
        c = 0.5 * (lo + hi)
        r = torch.zeros(k, dtype=x.dtype, device=x.device).scatter_reduce_(
            0, seg, ((x - c[seg]) ** 2).sum(1).sqrt(), "amax", include_self=False)
        return c, r

    def keep_mask(self, f: Tensor, g: Tensor, eps: float) -> Tensor:
        """``(N_rows_leaves, N_col_leaves)`` leaf pairs whose entries may exceed θ."""
        A = _leaf_max(self.x, f - self.x2, self.q, self.rl)  # (N_r, N_c)
        B = _leaf_max(self.y, g - self.y2, self.p, self.cl)  # (N_c, N_r)
        keep = torch.empty(A.shape, dtype=torch.bool, device=A.device)
        thr = eps * _log_theta(f.dtype)
        step = max(1, (1 << 22) // max(1, A.shape[1]))  # row-leaf chunks: no (N_r, N_c) temps
        for s in range(0, A.shape[0], step):
            sl = slice(s, s + step)
            bound = A[sl].add_(B[:, sl].T).sub_(2.0 * self.p[sl] @ self.q.T) \
                .add_(2.0 * self.rp[sl, None] * self.rq[None, :])
            keep[sl] = bound > thr
        return keep

    def build(self, f: Tensor, g: Tensor, eps: float, max_density: float = 1.0) -> float:
        """(Re)build the truncated kernel at ``(f, g, eps)``; returns the kept fraction.
        Above ``max_density`` nothing is computed (``vals`` stays empty).

        Each block is one GEMM of augmented vectors, ``[2x, f - |x|^2, 1] / eps`` against
        ``[y, 1, g - |y|^2]``, giving ``(f_i + g_j - |x_i - y_j|^2) / eps``, then ``exp``.
        """
        keep = self.keep_mask(f, g, eps)
        xa = torch.cat([2.0 * self.x, (f - self.x2)[:, None],
                        torch.ones_like(f)[:, None]], dim=1) / eps  # (n, d + 2)
        ya = torch.cat([self.y, torch.ones_like(g)[:, None], (g - self.y2)[:, None]], dim=1)
        self.vals, self.cols = [], []
        for i in range(len(self.rb) - 1):
            rows = keep[i * self.group : (i + 1) * self.group].any(0)  # (N_c,)
            self.cols.append(torch.nonzero(rows[self.cseg]).flatten())
        kept = sum((self.rb[i + 1] - self.rb[i]) * int(c.numel())
                   for i, c in enumerate(self.cols))
        self.density = kept / (self.x.shape[0] * self.y.shape[0])
        if self.density > max_density:
            return self.density
        floor = _log_theta(f.dtype) - 32.0
        for i, cols in enumerate(self.cols):
            r0, r1 = self.rb[i], self.rb[i + 1]
            # the floor keeps far-below-θ entries normal numbers: subnormal operands make
            # the mat-vecs ~100x slower; it perturbs each entry by < e^(log θ - 32)
            k = (xa[r0:r1] @ ya[cols].T).clamp_min_(floor).exp_()  # (|I|, w_i)
            self.vals.append(k)
        return self.density

    def rescale(self, u: Tensor, v: Tensor) -> None:
        """Absorb scalings in place: ``K_ij <- u_i K_ij v_j`` on the kept entries."""
        for i, (k, cols) in enumerate(zip(self.vals, self.cols, strict=True)):
            k.mul_(u[self.rb[i] : self.rb[i + 1], None]).mul_(v[cols][None, :])

    def mv(self, w: Tensor) -> Tensor:
        """``K w`` for ``w`` of shape ``(m,)``; returns ``(n,)``."""
        out = torch.empty(self.x.shape[0], dtype=w.dtype, device=w.device)
        for i, (k, cols) in enumerate(zip(self.vals, self.cols, strict=True)):
            out[self.rb[i] : self.rb[i + 1]] = k @ w[cols]
        return out

    def rmv(self, w: Tensor) -> Tensor:
        """``K^T w`` for ``w`` of shape ``(n,)``; returns ``(m,)``."""
        out = torch.zeros(self.y.shape[0], dtype=w.dtype, device=w.device)
        for i, (k, cols) in enumerate(zip(self.vals, self.cols, strict=True)):
            out.index_add_(0, cols, w[self.rb[i] : self.rb[i + 1]] @ k)
        return out


def prepare(x: Tensor, y: Tensor, a: Tensor, b: Tensor, eps_list: list[float],
            kernel: type[BlockKernel]) -> tuple:
    """Common set-up of the multiscale engines.

    Centres both clouds on ``mean(y)`` (the ``|x|^2`` terms of the bound stay at the
    clouds' scale), orders them by kd-trees, builds the coarse clusters (at most
    ``COARSE_MAX``) and splits ``eps_list`` into coarse and fine stages. Returns
    ``(op, px, py, a_sorted, b_sorted, (xc, ac, yc, bc), coarse, fine)`` with ``op`` a
    ``kernel`` over the sorted, centred points.
    """
    centre = y.mean(0)
    x, y = x - centre, y - centre
    n, m = x.shape[0], y.shape[0]
    lv = max(1, round(math.log2(min(n, m) / LEAF)))
    lb = max(0, lv - round(math.log2(BLOCK / LEAF)))
    lc = min(lv, max(1, int(math.log2(COARSE_MAX))))  # coarse level
    px, bx = kd_order(x, lv)
    py, by = kd_order(y, lv)
    xs, ys, as_, bs = x[px], y[py], a[px], b[py]
    xc, ac, vx = _clusters(xs, as_, bx[lc])
    yc, bc, vy = _clusters(ys, bs, by[lc])
    switch = KAPPA * max(vx, vy)
    # coarse stages: those the clusters resolve; the last of them is repeated at the
    # fine level (from the extended potentials), or the target ε is when all are coarse
    coarse = [e for e in eps_list if e >= switch]
    fine = eps_list[len(coarse):] or eps_list[-1:]
    op = kernel(xs, ys, bx[lv], by[lv], 2 ** (lv - lb))
    return op, px, py, as_, bs, (xc, ac, yc, bc), coarse, fine


def multiscale_engine(
    x: Tensor, y: Tensor, cost_matrix: Callable[[], Tensor], a: Tensor, b: Tensor,
    eps_list: list[float], tol: float, max_iter: int, bar: tqdm,
) -> tuple[Tensor, Tensor, Tensor | None, list[float], int, float, str]:
    """Run the multiscale scheme.

    Stages where the truncated kernel would keep more than ``MAX_DENSITY`` of the entries
    (or where a row loses all its kept entries) run on the dense engine instead, warm
    started from the current potentials.

    Args:
        x: ``(n, d)``; y: ``(m, d)``; a: ``(n,)``; b: ``(m,)`` (all detached).
        cost_matrix: Returns the ``(n, m)`` cost matrix; called only for dense stages.
        eps_list: ε-scaling stages, decreasing, last = target.
        tol: Marginal L1 tolerance of the last stage.
    Returns:
        ``(f, g, plan, errors, n_iter, eps, engine)`` in the original point order; ``plan``
        is the dense engine's ``(n, m)`` plan when it ran the last stage, else ``None``;
        ``engine`` names what ran (``"sinkhorn-multiscale"`` or ``"sinkhorn"``).
    """
    n, m = x.shape[0], y.shape[0]
    op, px, py, as_, bs, (xc, ac, yc, bc), coarse, fine = prepare(x, y, a, b, eps_list,
                                                                  BlockKernel)
    xs, ys = op.x, op.y
    it = 0
    if coarse:
        cc = torch.cdist(xc, yc).square_()
        fc, gc, _, _, it, _ = _dense_engine(cc, ac, bc, coarse, tol, max_iter, None, None,
                                            bar)
        f = _softmin(xs, yc, gc, bc, fine[0])
        g = _softmin(ys, xc, fc, ac, fine[0])
    else:
        f = torch.zeros(n, dtype=x.dtype, device=x.device)
        g = torch.zeros(m, dtype=x.dtype, device=x.device)
    k = 0  # first stage sparse enough for the block kernel
    while k < len(fine) and op.build(f, g, fine[k], MAX_DENSITY) > MAX_DENSITY:
        k += 1
    engine = "sinkhorn-multiscale" if coarse or k < len(fine) else "sinkhorn"
    if k > 0:  # dense stages, warm started from the extended coarse potentials
        fd, gd, plan, errs, it2, eps = _dense_engine(
            cost_matrix(), a, b, fine[:k] if k < len(fine) else fine, tol, max_iter - it,
            _unsort(f, px), _unsort(g, py), bar)
        it += it2
        if k == len(fine) or it >= max_iter:
            return fd, gd, plan, errs, it, eps, engine
        del plan
        f, g = fd[px], gd[py]
        op.build(f, g, fine[k])
    out = _block_stages(op, f, g, as_, bs, fine[k:], tol, max_iter, it, bar)
    if out is None:  # a row lost all its kept entries: finish densely from scratch
        fd, gd, plan, errs, it2, eps = _dense_engine(
            cost_matrix(), a, b, fine[k:], tol, max_iter - it, _unsort(f, px),
            _unsort(g, py), bar)
        return fd, gd, plan, errs, it + it2, eps, engine
    f, g, errs, it, eps = out
    return _unsort(f, px), _unsort(g, py), None, errs, it, eps, engine


def _unsort(v: Tensor, perm: Tensor) -> Tensor:
    out = torch.empty_like(v)
    out[perm] = v
    return out


def _block_stages(
    op: BlockKernel, f: Tensor, g: Tensor, a: Tensor, b: Tensor, stages: list[float],
    tol: float, max_iter: int, it: int, bar: tqdm,
) -> tuple[Tensor, Tensor, list[float], int, float] | None:
    """Kernel-domain sweeps on the truncated kernel (built for ``stages[0]``); returns
    ``(f, g, errors, n_iter, eps)`` or ``None`` if a row or column lost all its entries."""
    errs: list[float] = []
    err = math.inf
    omega = 1.0
    eps = stages[0]
    for stage, eps in enumerate(stages):
        last = stage == len(stages) - 1
        if stage > 0:
            op.build(f, g, eps)
        grown = 0.0  # log of the factor by which dropped entries may have grown
        u, v = torch.ones_like(f), torch.ones_like(g)
        target = tol if last else max(tol, _STAGE_TOL)
        history: list[float] = []
        s = op.mv(b)
        while it < max_iter:
            if not _positive_finite(s):
                return None
            u = _relax(u, 1.0 / s, omega)
            t = op.rmv(u * a)
            if not _positive_finite(t):
                return None
            v = _relax(v, 1.0 / t, omega)
            s = op.mv(v * b)
            err = float((a * (u * s - 1.0).abs()).sum() + (b * (v * t - 1.0).abs()).sum())
            it += 1
            bar.update(1)
            if last:
                errs.append(err)
            if err <= target:
                break
            omega = _adapt_omega(history, err, omega)
            lu, lv = u.log(), v.log()
            rise = max(0.0, float(lu.max())) + max(0.0, float(lv.max()))
            if rise > 0.5 * SLACK or float(lu.abs().max()) + float(lv.abs().max()) > 20.0:
                # absorb u, v: dropped entries may have grown by e^rise since the build
                f, g = f + eps * lu, g + eps * lv
                grown += rise
                if grown > SLACK:
                    op.build(f, g, eps)
                    grown = 0.0
                else:
                    op.rescale(u, v)
                u, v = torch.ones_like(u), torch.ones_like(v)
                s = op.mv(b)
        else:
            if not last or not errs:
                errs.append(err)
            return f + eps * u.log(), g + eps * v.log(), errs, it, eps
        f, g = f + eps * u.log(), g + eps * v.log()
    return f, g, errs, it, eps
