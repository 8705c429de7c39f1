"""The one result type of every OT solver."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import Tensor

__all__ = ["OTResult", "ConvergenceWarning"]


class ConvergenceWarning(RuntimeWarning):
    """A solver stopped before reaching its tolerance (see ``OTResult.converged``)."""


@dataclass(frozen=True)
class OTResult:
    r"""Solution of a linear OT problem, the same type for every solver and every flag.

    Attributes:
        cost: Transport cost :math:`\langle C, P\rangle`, shape ``()``; for the squared
            Euclidean cost this is :math:`W_2^2`. Differentiable in ``x``, ``y``, ``a``, ``b``
            by the envelope theorem: :math:`\partial/\partial C = P`, :math:`\partial/\partial
            a = f`, :math:`\partial/\partial b = g` with ``P``, ``f``, ``g`` detached.
        plan: Coupling ``P``, shape ``(n, m)``, or ``None`` when not materialised (online
            Sinkhorn, or the exact solver's sparse output; see ``plan_indices``).
        f: Source dual potential, shape ``(n,)`` (detached).
        g: Target dual potential, shape ``(m,)`` (detached).
        converged: Whether the stopping criterion was met.
        n_iter: Iterations performed (Sinkhorn sweeps, simplex pivots, SGD steps, ...).
        errors: Marginal errors :math:`\|P 1 - a\|_1` at each check, shape ``(k,)``.
        objective: Optimised objective, shape ``()``: equal to ``cost`` for unregularised
            solvers, the entropic objective :math:`\langle C,P\rangle + \varepsilon
            \mathrm{KL}(P\,\|\,a\otimes b)` for Sinkhorn; same envelope gradients as ``cost``.
        eps: Entropic regularisation used (``None`` for unregularised solvers).
        plan_indices: For sparse plans, ``(2, k)`` row/column indices of the support, with
            ``plan_values`` ``(k,)``; ``None`` otherwise.
        plan_values: Masses on ``plan_indices``.
        method: Name of the solver that produced the result.
    """

    cost: Tensor
    plan: Tensor | None
    f: Tensor | None
    g: Tensor | None
    converged: bool
    n_iter: int
    errors: Tensor
    objective: Tensor
    eps: float | None = None
    plan_indices: Tensor | None = None
    plan_values: Tensor | None = None
    method: str = ""

    @property
    def marginal_error(self) -> float:
        """Last recorded marginal error (``nan`` if none was recorded)."""
        return float(self.errors[-1]) if self.errors.numel() else float("nan")

    def dense_plan(self) -> Tensor:
        """The plan as a dense ``(n, m)`` tensor, building it from the sparse triplets if
        needed. Raises ``ValueError`` for online results that kept no plan."""
        if self.plan is not None:
            return self.plan
        if self.plan_indices is not None and self.plan_values is not None and self.f is not None \
                and self.g is not None:
            out = self.plan_values.new_zeros(self.f.shape[0], self.g.shape[0])
            out[self.plan_indices[0], self.plan_indices[1]] = self.plan_values
            return out
        raise ValueError(
            "this result holds no plan (online Sinkhorn never materialises it); use "
            "otgen.ot.maps.plan_block(...) on row blocks, or solve with online=False."
        )


def warn_not_converged(method: str, n_iter: int, err: float, tol: float, hint: str) -> None:
    """Emit a :class:`ConvergenceWarning` with the figures a user needs to act on."""
    warnings.warn(
        f"{method} did not converge: marginal error {err:.3g} > tol {tol:.3g} after "
        f"{n_iter} iterations; {hint}",
        ConvergenceWarning,
        stacklevel=3,
    )
