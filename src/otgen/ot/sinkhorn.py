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
* **multiscale** (squared Euclidean cost, ``min(n, m) >= 4096``, ``d <= 8``): the coarse
  ε stages on kd-tree cluster centroids, the fine ones on the kernel truncated to the
  blocks a rigorous bound cannot rule out (:mod:`otgen.ot._multiscale`); stored when the
  matrix fits (the result is then checked on the full plan and finished densely if
  needed), recomputed block by block per sweep otherwise (:mod:`otgen.ot._truncated`).
  ``result.method`` names the engine that ran.

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
from otgen.ot._multiscale import (
    full_plan,
    multiscale_eligible,
    multiscale_engine,
    plan_cost,
    sq_mean,
)
from otgen.ot._sinkhorn_dense import (
    _dense_engine,
    _log_stages,
    _schedule,
)
from otgen.ot._truncated import online_multiscale, truncated_values
from otgen.ot.costs import SqEuclidean
from otgen.ot.problem import LinearProblem
from otgen.ot.result import OTResult, warn_not_converged

__all__ = ["Sinkhorn", "default_tol", "cost_scale"]



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
        multiscale: Squared Euclidean cost only: solve the coarse ε stages on kd-tree
            cluster centroids and the fine ones on a block-truncated kernel (stored for
            dense problems, where the final potentials are checked on the full plan and
            finished by the dense engine if needed; recomputed per sweep for online ones).
            ``None``: automatic when ``min(n, m) >= 4096`` and ``d <= 8``. When truncation
            would keep more than half the kernel the dense engine runs instead;
            ``result.method`` says which engine ran (``"sinkhorn-multiscale"``).
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
    multiscale: bool | None = None

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

        use_ms = not online and init is None and self._use_multiscale(prob)
        # the multiscale engine never needs the dense cost matrix unless it finishes densely
        C = None if (online or use_ms) else prob.cost(xd, yd).detach()
        if C is not None:
            check_finite("cost matrix", C)
            mean_c = float(C.mean())  # cascade sums: exact enough
        elif use_ms:
            mean_c = sq_mean(xd, yd)
        else:
            mean_c, _ = cost_scale(prob, rows)
        eps = self._target_eps(mean_c)
        tol = self.tol if self.tol is not None else default_tol(x.dtype)
        f0 = g0 = None
        if init is not None:
            f0, g0 = _check_init(init, n, m, x)
        eps_list = _schedule(eps, mean_c, self.scaling and init is None)

        show = self.progress
        bar = tqdm(total=self.max_iter, desc="sinkhorn", leave=False, delay=1.0,
                   disable=show is False, unit="it")
        method = "sinkhorn-online" if online else "sinkhorn"
        try:
            cost_v = None
            if use_ms:
                f, g, plan, errs, n_iter, eps, method, cost_v = _solve_multiscale(
                    prob, eps_list, tol, self.max_iter, bar)
            elif C is not None:
                f, g, plan, errs, n_iter, eps = _dense_engine(
                    C, ad, bd, eps_list, tol, self.max_iter, f0, g0, bar)
            else:
                plan = None
                trunc = online_multiscale(xd, yd, ad, bd, eps_list, tol, self.max_iter, bar,
                                          None if f0 is None or g0 is None else (f0, g0)) \
                    if self._use_multiscale(prob) else None
                if trunc is not None:
                    f, g, errs, n_iter, eps, op, px, py = trunc
                    cost_v, mass = truncated_values(op, f, g, ad, bd, px, py, eps)
                    method = "sinkhorn-online-multiscale"
                else:
                    f, g, errs, n_iter, eps = _online_engine(
                        xd, yd, prob.cost, ad, bd, eps_list, tol, self.max_iter,
                        f0, g0, rows, cols, bar)
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
        if cost_v is not None and plan is not None:
            mass = plan.sum()
        elif plan is not None:
            cost_v = torch.dot(plan.reshape(-1), C.reshape(-1))  # type: ignore[union-attr]
            mass = plan.sum()
        elif cost_v is None:
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
            method=method,
        )

    def _use_multiscale(self, prob: LinearProblem) -> bool:
        if self.multiscale is False or not self.scaling:
            return False
        if not isinstance(prob.cost, SqEuclidean):
            if self.multiscale:
                raise ValueError("`multiscale=True` needs the squared Euclidean cost, got "
                                 f"{type(prob.cost).__name__}; pass multiscale=None.")
            return False
        n, m = prob.shape
        return bool(self.multiscale) or multiscale_eligible(n, m, prob.x.shape[1])

    def _target_eps(self, mean_cost: float) -> float:
        if self.eps is not None:
            return float(self.eps)
        rel = self.eps_rel if self.eps_rel is not None else 0.05
        return rel * (mean_cost if mean_cost > 0 else 1.0)


def _solve_multiscale(
    prob: LinearProblem, eps_list: list[float], tol: float, max_iter: int, bar: tqdm,
) -> tuple[Tensor, Tensor, Tensor, list[float], int, float, str, Tensor | None]:
    """The multiscale engine, its check on the full plan and, if that check fails, a
    dense finish. Returns ``(f, g, plan, errors, n_iter, eps, method, cost)`` with
    ``cost = <C, P>`` when already known (else ``None``)."""
    x, y, a, b = prob.x.detach(), prob.y.detach(), prob.a.detach(), prob.b.detach()

    def cost_matrix() -> Tensor:
        C = prob.cost(x, y).detach()
        check_finite("cost matrix", C)
        return C

    f, g, plan, errs, n_iter, eps, method = multiscale_engine(
        x, y, cost_matrix, a, b, eps_list, tol, max_iter, bar)
    if plan is not None:  # the dense engine ran the last stage
        return f, g, plan, errs, n_iter, eps, method, plan_cost(x, y, plan)
    plan, errs[-1], cost_v = full_plan(x, y, f, g, a, b, eps)
    if errs[-1] <= tol or n_iter >= max_iter:
        return f, g, plan, errs, n_iter, eps, method, cost_v
    del plan  # truncation lost mass that matters: finish on the full kernel
    f, g, plan, errs2, it2, eps = _dense_engine(
        cost_matrix(), a, b, [eps], tol, max_iter - n_iter, f, g, bar)
    return f, g, plan, errs + errs2, n_iter + it2, eps, method, plan_cost(x, y, plan)


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


def _online_engine(
    x: Tensor, y: Tensor, cost, a: Tensor, b: Tensor, eps_list: list[float], tol: float,
    max_iter: int, f0: Tensor | None, g0: Tensor | None, rows: int, cols: int, bar: tqdm,
) -> tuple[Tensor, Tensor, list[float], int, float]:
    """Blockwise log-sum-exp Sinkhorn; returns ``(f, g, errors, n_iter, eps)`` (``eps`` of
    the stage it stopped in)."""
    g = torch.zeros(y.shape[0], dtype=x.dtype, device=x.device) if g0 is None else g0
    f = softmin_rows(x, y, cost, g, b, eps_list[0], rows) if f0 is None else f0
    out = _log_stages(lambda g_, e: softmin_rows(x, y, cost, g_, b, e, rows),
                      lambda f_, e: softmin_cols(x, y, cost, f_, a, e, cols),
                      f, g, a, b, eps_list, tol, max_iter, 0, bar)
    if out is None:  # pragma: no cover - only with require_finite
        raise RuntimeError("internal: online Sinkhorn stages returned no result")
    return out


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
