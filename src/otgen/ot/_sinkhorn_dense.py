r"""Dense kernel-domain Sinkhorn engine and the iteration helpers shared by the engines.

The dense engine iterates on the *stabilised* kernel
:math:`\tilde K_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}` with scalings ``u, v`` (two
mat-vecs per sweep), absorbed into ``f, g`` whenever :math:`|\log u|` or :math:`|\log v|`
grows large (Schmitzer 2019). See :mod:`otgen.ot.sinkhorn` for the problem and conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__: list[str] = []

#: loosest marginal error at which an intermediate ε-scaling stage is left
_STAGE_TOL = 3e-2
#: cap of the over-relaxation weight
_OMEGA_MAX = 1.8


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


def _log_stages(
    rows: Callable[[Tensor, float], Tensor], cols: Callable[[Tensor, float], Tensor],
    f: Tensor, g: Tensor, a: Tensor, b: Tensor, eps_list: list[float], tol: float,
    max_iter: int, it: int, bar: tqdm, *,
    on_stage: Callable[[Tensor, Tensor, float], Tensor] | None = None,
    after_sweep: Callable[[Tensor, Tensor, float], None] | None = None,
    require_finite: bool = False,
) -> tuple[Tensor, Tensor, list[float], int, float] | None:
    r"""Alternating log-domain Sinkhorn over an ε schedule, with over-relaxation.

    One sweep: :math:`g \leftarrow (1-\omega) g + \omega\,\mathrm{cols}(f, \varepsilon)`,
    :math:`f_{new} = \mathrm{rows}(g, \varepsilon)`; the error is the L1 error of both
    marginals of the plan of :math:`(f, g)`, :math:`\sum_i a_i |e^{(f_i - f_{new,i})/\varepsilon}
    - 1| + \sum_j b_j |e^{(g_j - g_{new,j})/\varepsilon} - 1|`. Intermediate stages stop at
    ``max(tol, _STAGE_TOL)``, the last at ``tol``; only the last stage's errors are kept.

    Args:
        rows: ``rows(g, eps) -> (n,)``, the row soft-min of ``g`` weighted by ``b``.
        cols: ``cols(f, eps) -> (m,)``, the column soft-min of ``f`` weighted by ``a``.
        f, g: Starting potentials ``(n,)``, ``(m,)``; ``it``: sweeps already done.
        on_stage: ``on_stage(f, g, eps) -> f`` at the start of each stage (else ``f`` is
            kept).
        after_sweep: ``after_sweep(f, g, eps)`` after every sweep that does not stop.
        require_finite: Return ``None`` when a soft-min is not finite.
    Returns:
        ``(f, g, errors, n_iter, eps)`` with ``eps`` the stage it stopped in, or ``None``.
    """
    errs: list[float] = []
    err, omega, eps = math.inf, 1.0, eps_list[0]
    for stage, eps in enumerate(eps_list):
        last = stage == len(eps_list) - 1
        if on_stage is not None:
            f = on_stage(f, g, eps)
        target = tol if last else max(tol, _STAGE_TOL)
        history: list[float] = []
        while it < max_iter:
            g_new = cols(f, eps)
            g = g_new if omega == 1.0 else (1.0 - omega) * g + omega * g_new
            f_new = rows(g, eps)
            if require_finite and not bool(torch.isfinite(f_new).all()
                                           and torch.isfinite(g_new).all()):
                return None
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
            if after_sweep is not None:
                after_sweep(f, g, eps)
        else:
            if not last or not errs:
                errs.append(err)
            break
    return f, g, errs, it, eps
