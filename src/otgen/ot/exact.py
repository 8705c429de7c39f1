r"""Exact (unregularised) discrete OT by the network simplex.

.. math::
    \min_{P\in\Pi(a,b)} \langle C, P\rangle = \max_{f_i + g_j \le C_{ij}} \langle a, f\rangle
    + \langle b, g\rangle.

The linear program is solved by POT's network simplex (``ot.emd``), behind our API, with
an iteration limit scaled to the problem so that it never stops early silently: when the
solver reports that it hit the limit, the result says ``converged=False`` and a
:class:`~otgen.ot.result.ConvergenceWarning` is emitted. Measured on this project's 2-core
CPU (see ``benchmarks/RESULTS.md``), the network simplex also beats
``scipy.optimize.linear_sum_assignment`` on uniform equal-size clouds (n = 2000, 2-D:
0.40 s vs 0.49 s) and returns dual potentials, so it serves both cases; for uniform
equal-size clouds the optimal vertex it returns is a permutation.

The plan is returned dense (``plan``) and as sparse triplets (``plan_indices``,
``plan_values``: at most n + m - 1 entries). Gradients of ``cost`` follow the envelope
theorem: ``∂/∂C = P``, ``∂/∂a = f``, ``∂/∂b = g``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from otgen._validate import check_finite, check_int
from otgen.ot._kernels import EnvelopeData, envelope_value
from otgen.ot.costs import AbstractCost, SqEuclidean
from otgen.ot.problem import LinearProblem
from otgen.ot.result import OTResult, warn_not_converged

__all__ = ["Exact", "assignment", "assignment_permutation", "emd_numpy", "prefer_assignment"]


def prefer_assignment(n: int, d: int) -> bool:
    """Whether scipy's ``linear_sum_assignment`` beats the network simplex on an ``n x n``
    uniform problem in dimension ``d``. Measured on this project's 2-core CPU (medians,
    float64, ms, LSA / simplex): uniform clouds d = 2: n=128 0.67/1.10, n=256 3.2/4.4,
    n=1000 119/99, n=2000 706/478; Gaussian -> moons batches (the OT-CFM use): n=128
    1.6/1.4, n=256 10.1/6.3, n=512 86/57; d = 64: n=512 15/30, n=2000 610/900. So the
    simplex for d < 16 (except tiny n), scipy in high dimension."""
    return n <= 64 or d >= 16


def assignment(x: Tensor, y: Tensor, cost: str | AbstractCost = "sqeuclidean") -> Tensor:
    r"""Optimal assignment (Monge problem between equal-size uniform clouds).

    .. math:: \sigma^\star = \arg\min_{\sigma \in S_n} \sum_i c(x_i, y_{\sigma(i)})

    For the squared Euclidean cost the solver sees :math:`-2\langle x_i, y_j\rangle`:
    :math:`|x_i|^2 + |y_j|^2` adds the same constant to every permutation's cost, so the
    argmin is unchanged and the matrix costs one product.

    Args:
        x, y: ``(n, d)`` clouds of the same size.
        cost: Ground cost.
    Returns:
        ``(n,)`` LongTensor ``sigma`` on ``x``'s device: ``x[i]`` is matched to
        ``y[sigma[i]]``. Uses the faster of scipy's Hungarian-type solver and the network
        simplex (see :func:`prefer_assignment`).
    Example:
        >>> assignment(torch.tensor([[0.0], [1.0]]), torch.tensor([[1.1], [0.1]]))
        tensor([1, 0])
    """
    prob = LinearProblem(x, y, cost=cost)
    n, m = prob.shape
    if n != m:
        raise ValueError(f"`assignment` needs clouds of one size, got {n} and {m}; use "
                         "otgen.ot.solve for unequal sizes.")
    with torch.no_grad():
        if isinstance(prob.cost, SqEuclidean):
            check_finite("x", x)
            check_finite("y", y)
            a = x.detach().to(dtype=torch.float64, device="cpu").numpy()
            b = y.detach().to(dtype=torch.float64, device="cpu").numpy()
            C64 = np.ascontiguousarray(-2.0 * (a @ b.T))  # (n, n)
        else:
            C = prob.cost(x.detach(), y.detach())
            check_finite("cost matrix", C)
            C64 = np.ascontiguousarray(C.to(dtype=torch.float64, device="cpu").numpy())
    sigma = assignment_permutation(C64, x.shape[1])
    return torch.from_numpy(sigma).to(x.device)


def _assign(C: Tensor, d: int) -> Tensor:
    """:func:`assignment_permutation` of a torch cost matrix, on ``C``'s device."""
    C64 = np.ascontiguousarray(C.to(dtype=torch.float64, device="cpu").numpy())
    return torch.from_numpy(assignment_permutation(C64, d)).to(C.device)


def assignment_permutation(C: np.ndarray, d: int) -> np.ndarray:
    """Optimal permutation of a square float64 matrix ``C``.

    Calls the compiled solver that :func:`prefer_assignment` picks for ``(n, d)`` clouds
    (scipy's ``linear_sum_assignment`` or POT's network simplex) and nothing else.

    Args:
        C: ``(n, n)`` float64 C-contiguous array, finite.
        d: Dimension of the samples (it picks the solver).
    Returns:
        ``sigma``, ``(n,)`` int64: row ``i`` is matched to column ``sigma[i]``.
    """
    n = C.shape[0]
    if prefer_assignment(n, d):
        import scipy.optimize  # lazily: importing it costs ~0.3 s

        return scipy.optimize.linear_sum_assignment(C)[1]  # square: rows are arange(n)
    plan, ok = _emd_plan(_uniform(n), C, max(10**7, 400 * n * n))
    if not ok:
        raise RuntimeError("network simplex did not converge on the assignment; report "
                           "this problem (its pivot limit was 400 n^2)")
    return plan.argmax(1)  # a vertex = permutation matrix / n: one non-zero per row


_UNIFORM: dict[int, np.ndarray] = {}


def _uniform(n: int) -> np.ndarray:
    """Read-only uniform weights ``(n,)`` of 1/n, cached per ``n``."""
    w = _UNIFORM.get(n)
    if w is None:
        w = np.full(n, 1.0 / n)
        w.flags.writeable = False
        _UNIFORM[n] = w
    return w


def _emd_plan(w: np.ndarray, C64: np.ndarray, max_iter: int) -> tuple[np.ndarray, bool]:
    """Plan of the network simplex for positive uniform weights ``w`` (no dual post-
    processing). Calls POT's compiled solver directly: ``ot.emd``'s Python wrapper (weight
    checks, zero-weight filtering, dual centring) costs ~0.5 ms per call at n = 256, more
    than everything else in the OT-CFM coupling; none of it applies to positive uniform
    weights. Falls back to ``ot.emd`` if POT's private entry point moves."""
    emd_c = _EMD_C[0] if _EMD_C else _load_emd_c()
    if emd_c is None:  # pragma: no cover - depends on the POT version
        plan, _, _, ok, _ = emd_numpy(w, w, C64, max_iter)
        return plan, ok
    plan, _, _, _, code = emd_c(w, w, C64, max_iter, 1)
    return plan, int(code) == 1


#: POT's compiled ``emd_c`` once loaded (importing POT takes seconds: done on first use)
_EMD_C: list[Any] = []


def _load_emd_c() -> Any:
    try:
        from ot.lp.emd_wrap import emd_c
    except ImportError:  # pragma: no cover - depends on the POT version
        emd_c = None
    _EMD_C.append(emd_c)
    return emd_c


def emd_numpy(
    a: np.ndarray, b: np.ndarray, C: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, str | None]:
    """Network simplex on float64 NumPy arrays: ``(plan, f, g, converged, message)``."""
    import ot  # POT: imported lazily, it is slow to import

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # we report non-convergence ourselves
        plan, log = ot.emd(a, b, C, numItermax=max_iter, log=True, check_marginals=False)
    code = int(log.get("result_code", 1))
    return plan, log["u"], log["v"], code == 1, log.get("warning")


@dataclass(frozen=True)
class Exact:
    """Exact OT solver; ``Exact()(problem) -> OTResult``.

    Args:
        max_iter: Network-simplex pivot limit; ``None`` scales it with the problem
            (``max(10^7, 100 (n + m)^2)``), far above what it needs in practice.
        strict: Raise ``RuntimeError`` instead of warning when the limit is hit.
        duals: Compute the dual potentials. With ``duals=False`` uniform equal-size problems
            go through the faster assignment route (:func:`assignment`) and ``f``, ``g`` are
            ``None`` (gradients in ``a``, ``b`` are then unavailable).
    Example:
        >>> x = torch.tensor([[0.0], [1.0]]); y = torch.tensor([[1.0], [0.0]])
        >>> Exact()(LinearProblem(x, y)).cost
        tensor(0.)
    """

    max_iter: int | None = None
    strict: bool = False
    duals: bool = True

    def __post_init__(self) -> None:
        if self.max_iter is not None:
            check_int("max_iter", self.max_iter)

    def __call__(self, prob: LinearProblem) -> OTResult:
        x, y, a, b = prob.x, prob.y, prob.a, prob.b
        n, m = prob.shape
        with torch.no_grad():
            C = prob.cost(x.detach(), y.detach())
            check_finite("cost matrix", C)
        if not self.duals and n == m and _is_uniform(a) and _is_uniform(b):
            return self._assignment_result(prob, C)
        with torch.no_grad():
            C64 = C.to(dtype=torch.float64, device="cpu").numpy()
            a64 = a.detach().to(dtype=torch.float64, device="cpu").numpy()
            b64 = b.detach().to(dtype=torch.float64, device="cpu").numpy()
        b64 = b64 * (a64.sum() / b64.sum())  # equal mass to round-off (checked upstream)
        limit = self.max_iter if self.max_iter is not None else max(10**7, 100 * (n + m) ** 2)
        plan_np, f_np, g_np, ok, msg = emd_numpy(a64, b64, np.ascontiguousarray(C64), limit)
        if not ok:
            hint = f"POT says: {msg}. Raise max_iter (was {limit})."
            if self.strict:
                raise RuntimeError(f"exact OT did not converge; {hint}")
            warn_not_converged("exact OT (network simplex)", limit, float("nan"), 0.0, hint)
        flat = np.flatnonzero(plan_np)  # support: at most n + m - 1 entries
        i, j = np.divmod(flat, m)
        plan = torch.from_numpy(plan_np).to(device=x.device, dtype=x.dtype)
        f = torch.from_numpy(f_np).to(device=x.device, dtype=x.dtype)
        g = torch.from_numpy(g_np).to(device=x.device, dtype=x.dtype)
        indices = torch.from_numpy(np.stack([i, j])).to(device=x.device)
        values = torch.from_numpy(plan_np.reshape(-1)[flat]).to(device=x.device, dtype=x.dtype)
        with torch.no_grad():
            cost_v = (values * C[indices[0], indices[1]]).sum()
            err = (plan.sum(1) - a.detach()).abs().sum() + (plan.sum(0) - b.detach()).abs().sum()
        data = EnvelopeData(cost=prob.cost, f=f, g=g, indices=indices,
                            values=values)
        value = envelope_value(cost_v, x, y, a, b, data)
        return OTResult(
            cost=value,
            plan=plan,
            f=f,
            g=g,
            converged=ok,
            n_iter=limit if not ok else 0,
            errors=err.reshape(1),
            objective=value,
            eps=None,
            plan_indices=indices,
            plan_values=values,
            method="exact",
        )

    def _assignment_result(self, prob: LinearProblem, C: Tensor) -> OTResult:
        """Result of a uniform equal-size problem solved as an assignment (no duals)."""
        x, y, a = prob.x, prob.y, prob.a
        n = x.shape[0]
        sigma = _assign(C, x.shape[1])
        rows = torch.arange(n, device=x.device)
        indices = torch.stack([rows, sigma])
        values = torch.full((n,), float(a.detach().sum()) / n, dtype=x.dtype, device=x.device)
        plan = torch.zeros(n, n, dtype=x.dtype, device=x.device)
        plan[rows, sigma] = values
        with torch.no_grad():
            cost_v = (values * C[rows, sigma]).sum()
        if x.requires_grad or y.requires_grad:
            xs = x if x.requires_grad else x.detach()
            ys = y[sigma] if y.requires_grad else y.detach()[sigma]
            value = cost_v + ((values * prob.cost.pairwise(xs, ys)).sum() - cost_v.detach())
        else:
            value = cost_v
        return OTResult(
            cost=value, plan=plan, f=None, g=None, converged=True, n_iter=0,
            errors=torch.zeros(1, dtype=x.dtype, device=x.device), objective=value, eps=None,
            plan_indices=indices, plan_values=values, method="exact-assignment",
        )


def _is_uniform(w: Tensor) -> bool:
    return bool((w.detach() == w.detach()[0]).all())
