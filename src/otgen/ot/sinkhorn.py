r"""Entropic OT by Sinkhorn's algorithm, stabilised in the log domain, with ε-scaling.

Problem (the "a ⊗ b" form used by GeomLoss and OTT):

.. math::
    \mathrm{OT}_\varepsilon(a, b) = \min_{P \in \Pi(a, b)} \langle C, P\rangle
        + \varepsilon\,\mathrm{KL}(P \,\|\, a \otimes b),
    \qquad P_{ij} = a_i b_j\, e^{(f_i + g_j - C_{ij})/\varepsilon}.

The state is always the pair of log-domain potentials ``(f, g)``. Two engines update it:

* **dense** (the matrix fits in ``memory_budget``): a kernel-domain inner loop on the
  *stabilised* kernel :math:`\tilde K_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}` with
  scalings ``u, v`` (two mat-vecs per sweep), absorbed into ``f, g`` whenever
  :math:`|\log u|` or :math:`|\log v|` grows large (Schmitzer 2019). Each ε-scaling stage
  halves ε, and since :math:`e^{2z} = (e^{z})^2` the next stage's kernel is the elementwise
  square of the absorbed one: no exponential is recomputed.
* **online** (the matrix does not fit): blockwise log-sum-exp soft-min updates of ``f, g``
  that never hold more than a ``(block, m)`` slab; memory is :math:`O(n + m)` plus the slab.

Stopping: the L1 marginal error :math:`\|P 1 - a\|_1` after each column update (columns
are then exact) falls below ``tol``. Non-convergence sets ``converged=False`` and warns.

Gradients (envelope theorem, potentials detached): ``cost`` and ``objective`` have
:math:`\partial/\partial C_{ij} = P_{ij}` (so :math:`\nabla_{x_i} = \sum_j P_{ij}
\nabla_x c(x_i, y_j)`), :math:`\partial/\partial a = f`, :math:`\partial/\partial b = g`.
These are the exact gradients of ``objective`` at convergence; for ``cost`` they are the
standard approximation that becomes exact as ε → 0 (as in POT's ``sinkhorn2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from otgen._validate import check_finite, check_int, check_positive_or_none
from otgen.ot._kernels import (
    SLAB_BYTES,
    EnvelopeData,
    block_rows,
    envelope_value,
    softmin_cols,
    softmin_rows,
)
from otgen.ot.problem import LinearProblem
from otgen.ot.result import OTResult, warn_not_converged

__all__ = ["Sinkhorn", "default_tol", "cost_scale"]

#: loosest marginal error at which an intermediate ε-scaling stage is left
_STAGE_TOL = 3e-2
#: cap of the over-relaxation weight
_OMEGA_MAX = 1.8


def default_tol(dtype: torch.dtype) -> float:
    """Default L1 marginal tolerance: 1e-6 in float64, 1e-4 in lower precision."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def cost_scale(prob: LinearProblem, rows: int) -> tuple[float, float]:
    """Mean and max of the cost matrix, computed blockwise. Returns ``(mean, max)``."""
    x, y = prob.x.detach(), prob.y.detach()
    total, top = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], rows):
            c = prob.cost(x[s : s + rows], y)
            total += float(c.sum(dtype=torch.float64))
            top = max(top, float(c.max()))
    return total / (x.shape[0] * y.shape[0]), top


@dataclass(frozen=True)
class Sinkhorn:
    """Log-stable Sinkhorn solver with ε-scaling; ``Sinkhorn(...)(problem) -> OTResult``.

    Args:
        eps: Target regularisation ε > 0 (absolute). Mutually exclusive with ``eps_rel``.
        eps_rel: ε as a fraction of the mean cost; default 0.05 when neither is given.
        tol: L1 marginal-error tolerance; default 1e-6 (float64) or 1e-4 (float32).
        max_iter: Maximum number of Sinkhorn sweeps over all ε-scaling stages.
        scaling: Anneal ε by halving from the cost scale (mean cost) down to ``eps``.
        online: ``True`` never builds the ``(n, m)`` matrix, ``False`` always does, ``None``
            decides from ``memory_budget``.
        memory_budget: Bytes the dense engine may use for its matrices (default 2 GiB).
        keep_plan: Return the dense plan (dense engine only).
        strict: Raise ``RuntimeError`` instead of warning when not converged.
        progress: Show a progress bar (``None``: only for solves longer than a second).
    Example:
        >>> prob = LinearProblem(torch.randn(100, 2), torch.randn(120, 2))
        >>> res = Sinkhorn(eps_rel=0.01)(prob)
        >>> res.converged, res.plan.shape
        (True, torch.Size([100, 120]))
    """

    eps: float | None = None
    eps_rel: float | None = None
    tol: float | None = None
    max_iter: int = 10_000
    scaling: bool = True
    online: bool | None = None
    memory_budget: int = 2 * 1024**3
    keep_plan: bool = True
    strict: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.eps is not None and self.eps_rel is not None:
            raise ValueError("pass either `eps` (absolute) or `eps_rel` (relative), not both.")
        check_positive_or_none("eps", self.eps)
        check_positive_or_none("eps_rel", self.eps_rel)
        check_positive_or_none("tol", self.tol)
        check_int("max_iter", self.max_iter)
        check_int("memory_budget", self.memory_budget)

    def __call__(
        self, prob: LinearProblem, *, init: tuple[Tensor, Tensor] | None = None
    ) -> OTResult:
        """Solve ``prob``. ``init=(f, g)`` warm-starts from potentials at the target ε
        (ε-scaling is then skipped)."""
        x, y, a, b = prob.x, prob.y, prob.a, prob.b
        n, m = prob.shape
        itemsize = x.element_size()
        online = self.online
        if online is None:
            online = 2 * n * m * itemsize > self.memory_budget
        rows = block_rows(n, m, itemsize, min(self.memory_budget, SLAB_BYTES))
        cols = block_rows(m, n, itemsize, min(self.memory_budget, SLAB_BYTES))
        xd, yd, ad, bd = x.detach(), y.detach(), a.detach(), b.detach()

        C = None if online else prob.cost(xd, yd).detach()
        if C is not None:
            check_finite("cost matrix", C)
            mean_c, max_c = float(C.mean()), float(C.max())  # cascade sums: exact enough
        else:
            mean_c, max_c = cost_scale(prob, rows)
        eps = self._target_eps(mean_c)
        tol = self.tol if self.tol is not None else default_tol(x.dtype)
        f0 = g0 = None
        if init is not None:
            f0, g0 = _check_init(init, n, m, x)
        eps_list = _schedule(eps, mean_c, self.scaling and init is None)

        show = self.progress
        bar = tqdm(total=self.max_iter, desc="sinkhorn", leave=False, delay=1.0,
                   disable=show is False, unit="it")
        try:
            if C is not None:
                f, g, plan, errs, n_iter, eps = _dense_engine(
                    C, ad, bd, eps_list, tol, self.max_iter, f0, g0, bar)
            else:
                f, g, errs, n_iter, eps = _online_engine(
                    xd, yd, prob.cost, ad, bd, eps_list, tol, self.max_iter,
                    f0, g0, rows, cols, bar)
                plan = None
        finally:
            bar.close()
        errors = torch.tensor(errs, dtype=x.dtype, device=x.device)
        converged = bool(len(errs) and errs[-1] <= tol and math.isfinite(errs[-1]))
        if not bool(torch.isfinite(f).all() and torch.isfinite(g).all()):
            raise FloatingPointError(
                "Sinkhorn produced non-finite potentials; this is a bug, please report it "
                f"with eps={eps:.3g}, dtype={x.dtype}, shape=({n}, {m})."
            )
        if not converged:
            hint = "raise max_iter, raise eps, or loosen tol."
            if self.strict:
                raise RuntimeError(
                    f"Sinkhorn did not converge: marginal error {errs[-1] if errs else 'nan'} "
                    f"> tol {tol:.3g} after {n_iter} iterations; {hint}")
            warn_not_converged("Sinkhorn", n_iter, errs[-1] if errs else float("nan"), tol, hint)

        # Values: <C, P> and the dual objective <a, f> + <b, g> - eps (sum P - |a||b|).
        if plan is not None:
            cost_v = torch.dot(plan.reshape(-1), C.reshape(-1))  # type: ignore[union-attr]
            mass = plan.sum()
        else:
            cost_v, mass = _online_values(xd, yd, prob.cost, f, g, ad, bd, eps, rows)
        del C
        obj_v = (ad * f).sum() + (bd * g).sum() - eps * (mass - ad.sum() * bd.sum())
        data = EnvelopeData(cost=prob.cost, f=f, g=g, eps=eps,
                            plan=plan, rows=rows)
        return OTResult(
            cost=envelope_value(cost_v, x, y, a, b, data),
            plan=plan if self.keep_plan else None,
            f=f,
            g=g,
            converged=converged,
            n_iter=n_iter,
            errors=errors,
            objective=envelope_value(obj_v, x, y, a, b, data),
            eps=eps,
            method="sinkhorn-online" if online else "sinkhorn",
        )

    def _target_eps(self, mean_cost: float) -> float:
        if self.eps is not None:
            return float(self.eps)
        rel = self.eps_rel if self.eps_rel is not None else 0.05
        return rel * (mean_cost if mean_cost > 0 else 1.0)


def _check_init(init: tuple[Tensor, Tensor], n: int, m: int, x: Tensor) -> tuple[Tensor, Tensor]:
    if not (isinstance(init, tuple | list) and len(init) == 2):
        raise TypeError("`init` must be a pair (f, g) of potentials.")
    f, g = init
    for name, t, k in (("init[0] (f)", f, n), ("init[1] (g)", g, m)):
        if not isinstance(t, Tensor) or t.shape != (k,):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"`{name}` must be a tensor of shape ({k},), got {got}.")
        check_finite(name, t)
    return f.detach().to(x), g.detach().to(x)


def _schedule(eps: float, scale: float, scaling: bool) -> list[float]:
    """ε-scaling stages ε·2^k, ..., 2ε, ε starting at (or just above) the cost scale."""
    if not scaling or scale <= eps:
        return [eps]
    k = math.ceil(math.log2(scale / eps))
    return [eps * 2.0**i for i in range(k, -1, -1)]


def _absorb_threshold(dtype: torch.dtype) -> float:
    # |log u| beyond which the scalings are folded into the potentials and the kernel
    return 25.0 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 150.0


def _dense_engine(
    C: Tensor, a: Tensor, b: Tensor, eps_list: list[float], tol: float, max_iter: int,
    f0: Tensor | None, g0: Tensor | None, bar: tqdm,
) -> tuple[Tensor, Tensor, Tensor, list[float], int, float]:
    """Kernel-domain Sinkhorn with absorption; returns ``(f, g, plan, errors, n_iter,
    eps)`` with ``eps`` the ε of the stage it stopped in (the target unless ``max_iter``
    ran out during ε-scaling).

    State: potentials ``f, g`` and scalings ``u, v`` with ``K = exp((f + g - C) / eps)``,
    so the current plan is ``a u K v b``. Halving eps squares ``K``, ``u`` and ``v``.
    The last stage uses over-relaxation ``log u <- (1 - w) log u + w log(1 / K v b)`` with
    ``w`` set from the observed convergence rate (Thibault et al. 2017) and backed off when
    the error grows; the reported error is then the sum of row and column L1 errors.
    """
    n, m = C.shape
    f = torch.zeros(n, dtype=C.dtype, device=C.device) if f0 is None else f0.clone()
    g = torch.zeros(m, dtype=C.dtype, device=C.device) if g0 is None else g0.clone()
    thr = _absorb_threshold(C.dtype)
    K = torch.mul(C, -1.0 / eps_list[0]).exp_() if f0 is None else _kernel(C, f, g, eps_list[0])
    u = torch.ones_like(f)
    v = torch.ones_like(g)
    errs: list[float] = []
    it = 0
    err = float("inf")
    omega = 1.0  # over-relaxation weight, carried across stages (rates only worsen)
    for stage, eps in enumerate(eps_list):
        last = stage == len(eps_list) - 1
        if stage > 0:  # eps -> eps / 2: exp(2z) = exp(z)^2, one pass over K
            # Entries of K below sqrt(tiny) vanish when squared; they stay negligible in
            # the plan u K v only while |log u| + |log v| is well below half the range.
            if _log_span(u, v) > _square_threshold(K.dtype):
                f, g, u, v = _absorb(K, f, g, u, v, eps_list[stage - 1])
            K.square_()
            u.square_()
            v.square_()
            if _too_large(u, v, thr):
                f, g, u, v = _absorb(K, f, g, u, v, eps)
        target = tol if last else max(tol, _STAGE_TOL)
        history: list[float] = []
        s = K @ (v * b)  # (n,)
        while it < max_iter:
            if not _positive_finite(s):
                f, g, K, u, v = _refresh(C, f + eps * u.log(), g + eps * v.log(), a, b, eps)
                s = K @ (v * b)
            u = _relax(u, 1.0 / s, omega)
            t = K.T @ (u * a)  # (m,)
            if not _positive_finite(t):
                f, g, K, u, v = _refresh(C, f + eps * u.log(), g + eps * v.log(), a, b, eps)
                t = K.T @ (u * a)
            v = _relax(v, 1.0 / t, omega)
            s = K @ (v * b)
            # L1 errors of both marginals of a u K v b (the column one is 0 if omega = 1)
            err = float((a * (u * s - 1.0).abs()).sum() + (b * (v * t - 1.0).abs()).sum())
            it += 1
            bar.update(1)
            if last:
                errs.append(err)
            if err <= target:
                break
            omega = _adapt_omega(history, err, omega)
            if _too_large(u, v, thr):
                f, g, u, v = _absorb(K, f, g, u, v, eps)
                s = K @ (v * b)
        else:
            if not last or not errs:
                errs.append(err)
            break
    # `eps` is the stage the loop stopped in: potentials and plan belong to it
    f = f + eps * u.log()
    g = g + eps * v.log()
    plan = K.mul_((a * u)[:, None]).mul_((v * b)[None, :])  # reuse the kernel's memory
    return f, g, plan, errs, it, eps


def _relax(old: Tensor, new: Tensor, omega: float) -> Tensor:
    """Geometric over-relaxation old^(1 - omega) new^omega (plain update for omega = 1)."""
    if omega == 1.0:
        return new
    return old.pow(1.0 - omega).mul_(new.pow(omega))


def _adapt_omega(history: list[float], err: float, omega: float) -> float:
    """Over-relaxation weight from the observed rate (``history`` is mutated).

    With plain Sinkhorn contracting at rate θ, SOR theory gives the optimal weight
    ω* = 2 / (1 + sqrt(1 - θ)). Under a weight ω < ω* the observed rate λ satisfies
    (λ + ω - 1)² = λ ω² θ, which lets θ be re-estimated while relaxing. A growing error
    halves ω - 1. The history is reset whenever ω changes.
    """
    history.append(err)
    if len(history) < 4:
        return omega
    lam = (history[-1] / history[-3]) ** 0.5 if history[-3] > 0 else 0.0
    if not math.isfinite(lam) or lam >= 1.0:
        history.clear()
        return 1.0 + 0.5 * (omega - 1.0) if omega > 1.05 else 1.0
    if lam <= omega - 1.0 or lam == 0.0:
        return omega
    theta = min((lam + omega - 1.0) ** 2 / (lam * omega**2), 0.9999)
    new = min(_OMEGA_MAX, 2.0 / (1.0 + math.sqrt(1.0 - theta)))
    if new > omega + 0.02:
        history.clear()
        return new
    return omega


def _log_span(u: Tensor, v: Tensor) -> float:
    return float(u.log().abs().max()) + float(v.log().abs().max())


def _square_threshold(dtype: torch.dtype) -> float:
    # half the exponent range of the dtype, less a margin of 30 (e^-30 ~ 1e-13)
    return 0.5 * -math.log(torch.finfo(dtype).tiny) - 30.0


def _too_large(u: Tensor, v: Tensor, thr: float) -> bool:
    return max(float(u.log().abs().max()), float(v.log().abs().max())) > thr


def _absorb(
    K: Tensor, f: Tensor, g: Tensor, u: Tensor, v: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fold the scalings into the potentials and the kernel (in place on ``K``)."""
    f = f + eps * u.log()
    g = g + eps * v.log()
    K.mul_(u[:, None]).mul_(v[None, :])
    return f, g, torch.ones_like(u), torch.ones_like(v)


def _kernel(C: Tensor, f: Tensor, g: Tensor, eps: float) -> Tensor:
    """Stabilised kernel exp((f_i + g_j - C_ij) / eps), one pass, new (n, m) tensor."""
    return torch.sub(f[:, None], C).add_(g[None, :]).div_(eps).exp_()


def _positive_finite(s: Tensor) -> bool:
    return bool(((s > 0) & torch.isfinite(s)).all())


def _refresh(
    C: Tensor, f: Tensor, g: Tensor, a: Tensor, b: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Exact log-domain sweep and kernel rebuild, used when the kernel-domain scalings
    underflow or overflow (rare: after a large jump of the potentials)."""
    f = torch.where(torch.isfinite(f), f, torch.zeros_like(f))
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    lb = torch.where(b > 0, b.log(), torch.full_like(b, -torch.inf))
    la = torch.where(a > 0, a.log(), torch.full_like(a, -torch.inf))
    f = -eps * torch.logsumexp((g[None, :] - C) / eps + lb[None, :], dim=1)
    g = -eps * torch.logsumexp((f[:, None] - C) / eps + la[:, None], dim=0)
    return f, g, _kernel(C, f, g, eps), torch.ones_like(f), torch.ones_like(g)


def _online_engine(
    x: Tensor, y: Tensor, cost, a: Tensor, b: Tensor, eps_list: list[float], tol: float,
    max_iter: int, f0: Tensor | None, g0: Tensor | None, rows: int, cols: int, bar: tqdm,
) -> tuple[Tensor, Tensor, list[float], int, float]:
    """Blockwise log-sum-exp Sinkhorn; returns ``(f, g, errors, n_iter, eps)`` (``eps`` of
    the stage it stopped in)."""
    g = torch.zeros(y.shape[0], dtype=x.dtype, device=x.device) if g0 is None else g0
    errs: list[float] = []
    it = 0
    err = float("inf")
    omega = 1.0
    f = softmin_rows(x, y, cost, g, b, eps_list[0], rows) if f0 is None else f0
    for stage, eps in enumerate(eps_list):
        last = stage == len(eps_list) - 1
        target = tol if last else max(tol, _STAGE_TOL)
        history: list[float] = []
        while it < max_iter:
            g_new = softmin_cols(x, y, cost, f, a, eps, cols)
            g = g_new if omega == 1.0 else (1.0 - omega) * g + omega * g_new
            f_new = softmin_rows(x, y, cost, g, b, eps, rows)
            # marginals at (f, g): rows a_i e^{(f_i - f_new_i)/eps},
            # columns b_j e^{(g_j - g_new_j)/eps}
            err = float((a * torch.expm1((f - f_new) / eps).abs()).sum()
                        + (b * torch.expm1((g - g_new) / eps).abs()).sum())
            it += 1
            bar.update(1)
            if last:
                errs.append(err)
            if err <= target:
                break
            f = f_new if omega == 1.0 else (1.0 - omega) * f + omega * f_new
            omega = _adapt_omega(history, err, omega)
        else:
            if not last or not errs:
                errs.append(err)
            break
    return f, g, errs, it, eps


def _online_values(
    x: Tensor, y: Tensor, cost, f: Tensor, g: Tensor, a: Tensor, b: Tensor,
    eps: float, rows: int,
) -> tuple[Tensor, Tensor]:
    """``(<C, P>, sum P)`` accumulated over row blocks of the plan."""
    from otgen.ot._kernels import _log_or_neginf

    total = torch.zeros((), dtype=torch.float64, device=x.device)
    mass = torch.zeros((), dtype=torch.float64, device=x.device)
    lb = _log_or_neginf(b)
    with torch.no_grad():
        for s in range(0, x.shape[0], rows):
            c = cost(x[s : s + rows], y)  # (rows, m)
            p = ((f[s : s + rows, None] + g[None, :] - c) / eps + lb[None, :]
                 + _log_or_neginf(a[s : s + rows])[:, None]).exp_()
            total += (p * c).sum(dtype=torch.float64)
            mass += p.sum(dtype=torch.float64)
    return total.to(x.dtype), mass.to(x.dtype)
