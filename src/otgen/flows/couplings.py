r"""Minibatch couplings: how source samples ``x0`` are paired with data samples ``x1``.

Each coupling maps two batches of equal size ``B`` to a pairing ``(x0[i], x1[j(i)])`` and
returns the index vector ``j`` so that labels or other per-sample data can follow.

* :class:`IndependentCoupling` keeps the batches as drawn (I-CFM).
* :class:`ExactOTCoupling` solves the minibatch assignment problem
  :math:`\min_\sigma \sum_i |x_{0,i} - x_{1,\sigma(i)}|^2` and returns a *permutation*:
  every sample is used exactly once (no duplicates, no dropped points — unlike sampling a
  plan with replacement).
* :class:`EntropicOTCoupling` draws, for each ``x0[i]``, one partner from the row
  :math:`P_{i\cdot}/a_i` of the Sinkhorn plan: every source point is used exactly once and
  the pairs follow the entropic plan (SB-CFM uses :math:`\varepsilon = 2\sigma^2`).
* :class:`ReflowCoupling` pairs ``x0`` with the endpoint of a trained flow started at it
  (rectified flow / k-reflow).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from otgen._validate import check_finite, check_positive_or_none
from otgen.ot.exact import assignment_permutation
from otgen.ot.problem import LinearProblem
from otgen.ot.sinkhorn import Sinkhorn

__all__ = [
    "AbstractCoupling",
    "IndependentCoupling",
    "ExactOTCoupling",
    "EntropicOTCoupling",
    "ReflowCoupling",
    "assignment_cost",
    "assignment_permutation",
    "sample_rows",
]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _check_pair(x0: Tensor, x1: Tensor) -> None:
    if x0.shape != x1.shape:
        raise ValueError(f"`x0` and `x1` must be batches of one shape, got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}; draw equal batch sizes.")


class AbstractCoupling(abc.ABC):
    """``coupling(x0, x1, generator=None) -> (x0, x1_paired, j)`` with ``j`` ``(B,)``."""

    @abc.abstractmethod
    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        """Index ``j`` ``(B,)`` of the partner of each ``x0[i]`` in ``x1``."""

    def __call__(
        self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        _check_pair(x0, x1)
        with torch.no_grad():
            j = self.pair(x0.detach(), x1.detach(), generator)
        return x0, x1[j], j


@dataclass(frozen=True)
class IndependentCoupling(AbstractCoupling):
    """The product coupling: pairs as drawn."""

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.arange(x0.shape[0], device=x0.device)


def _numpy_2d(x: Tensor) -> np.ndarray:
    """``(B, *D)`` tensor as a ``(B, prod D)`` NumPy array: a view of a CPU tensor without
    grad (one call on the hot path), else a float64 copy."""
    return _numpy_view_2d(x)[0]


def _numpy_view_2d(x: Tensor) -> tuple[np.ndarray, bool]:
    """:func:`_numpy_2d` and whether the array is a view of ``x`` (same dtype and memory)."""
    try:
        arr, view = x.numpy(), True
    except (RuntimeError, TypeError):  # requires grad, not on the CPU, or bfloat16
        arr, view = x.detach().to(device="cpu", dtype=torch.float64).numpy(), False
    return (arr if arr.ndim == 2 else arr.reshape(arr.shape[0], -1)), view


def assignment_cost(x0: Tensor, x1: Tensor) -> np.ndarray:
    r"""Matrix of the OT-CFM assignment: :math:`C_{ij} = -2\langle x_{0,i}, x_{1,j}\rangle`.

    For a permutation :math:`\sigma`,

    .. math::
        \sum_i |x_{0,i} - x_{1,\sigma(i)}|^2 = \sum_i |x_{0,i}|^2 + \sum_j |x_{1,j}|^2
            - 2 \sum_i \langle x_{0,i}, x_{1,\sigma(i)}\rangle ,

    and the first two sums do not depend on :math:`\sigma`: the squared-Euclidean
    assignment and the assignment on ``C`` have the same optimal permutations (likewise,
    every plan with the batch's uniform marginals has the same cost under both matrices up
    to that constant, so the network simplex solves the same problem). Dropping the norms
    saves two passes over the ``(B, B)`` matrix and the clamp of round-off negatives: one
    BLAS product writes ``C``.

    Args:
        x0, x1: ``(B, *D)`` batches (flattened to ``(B, d)``; any float dtype and device).
    Returns:
        ``(B, B)`` float64 C-contiguous NumPy array (what the compiled solvers take).
    Raises:
        ValueError: if ``x0`` or ``x1`` holds NaN or infinite entries.
    Example:
        >>> assignment_cost(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 3.0]]))
        array([[-4.]])
    """
    return _cost(_numpy_2d(x0), _numpy_2d(x1), x0, x1)


def _cost(a: np.ndarray, b: np.ndarray, x0: Tensor, x1: Tensor) -> np.ndarray:
    """:func:`assignment_cost` of the ``(B, d)`` arrays ``a``, ``b`` of ``x0``, ``x1``."""
    # Few NumPy calls on purpose: right after a solve the caches are cold and each call
    # costs 10-40 us (measured), more than the arithmetic on (B, d) arrays.
    b = np.multiply(b, -2.0, dtype=np.float64)  # (B, d), a new array
    # One dot product over the flattened (B, d) inputs sees every NaN/inf entry of either
    # (a NaN or an infinite product reaches the sum), instead of a pass over (B, B).
    if not math.isfinite(np.vdot(a, b)):
        check_finite("x0", x0)
        check_finite("x1", x1)
        raise ValueError("`x0`, `x1` have entries so large that their products overflow "
                         "float64; rescale the data.")
    return np.dot(a, b.T)  # (B, B) float64 (a is promoted)


@dataclass(frozen=True)
class ExactOTCoupling(AbstractCoupling):
    r"""Exact minibatch OT (squared Euclidean on flattened samples) as a permutation.

    .. math:: j = \arg\min_{\sigma \in S_B} \sum_i |x_{0,i} - x_{1,\sigma(i)}|^2 ,

    solved on the equivalent matrix :math:`-2\langle x_{0,i}, x_{1,j}\rangle`
    (:func:`assignment_cost`) by the compiled solver of :func:`assignment_permutation`. No
    randomness: ``generator`` is not used.

    This is the hot path of OT-CFM: everything around the solver is a handful of NumPy
    calls on the ``(B, d)`` batches (no autograd context, no ``(B, B)`` pass besides the
    product that writes the matrix and the ``argmax`` that reads the plan).
    """

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        return self(x0, x1, generator)[2]

    def __call__(
        self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        _check_pair(x0, x1)
        (a, _), (b, b_is_view) = _numpy_view_2d(x0), _numpy_view_2d(x1)  # (B, d)
        sigma = assignment_permutation(_cost(a, b, x0, x1), a.shape[1])  # (B,) int64
        j = torch.from_numpy(sigma) if x0.is_cpu else torch.from_numpy(sigma).to(x0.device)
        if b_is_view and x1.ndim == 2:
            # x1 is a plain CPU matrix: gather in NumPy (one call fewer than index_select;
            # right after the solve each call costs tens of microseconds, cold caches)
            return x0, torch.from_numpy(b[sigma]), j
        return x0, x1.index_select(0, j if x1.device == j.device else j.to(x1.device)), j


@dataclass(frozen=True)
class EntropicOTCoupling(AbstractCoupling):
    """Partners drawn row-wise from the entropic plan.

    Args:
        eps: Absolute regularisation (SB-CFM: ``2 sigma^2``); default ``eps_rel`` of the
            mean squared distance.
        eps_rel: Relative regularisation (default 0.05 when ``eps`` is ``None``).
        tol, max_iter: Sinkhorn controls.
    """

    eps: float | None = None
    eps_rel: float | None = None
    tol: float = 1e-4
    max_iter: int = 2000

    def __post_init__(self) -> None:
        check_positive_or_none("eps", self.eps)
        check_positive_or_none("eps_rel", self.eps_rel)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        # One seed from the caller's stream, then a private generator: the draw stays
        # deterministic when couplings of several batches run in worker threads.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        generator = torch.Generator(device=x0.device).manual_seed(seed)
        rel = self.eps_rel if (self.eps is None and self.eps_rel is not None) else None
        if self.eps is None and rel is None:
            rel = 0.05
        res = Sinkhorn(eps=self.eps, eps_rel=rel, tol=self.tol, max_iter=self.max_iter,
                       progress=False)(LinearProblem(_flat(x0), _flat(x1)))
        if res.plan is None:
            raise RuntimeError("internal: entropic coupling needs a dense plan")
        return sample_rows(res.plan, generator)


def sample_rows(plan: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""One column per row of a non-negative matrix, drawn with probability proportional
    to the row: :math:`P(j_i = k) = P_{ik} / \sum_l P_{il}`.

    Inverse-CDF sampling: with the row's running sums :math:`c_{ik}` (float64) and
    :math:`u_i \sim U[0, c_{i,m})`, :math:`j_i` is the first ``k`` with
    :math:`c_{ik} > u_i` (zero entries are never drawn). One ``cumsum`` and one
    ``searchsorted``: at ``256 x 256`` it takes ~0.1 ms where ``torch.multinomial`` takes
    ~1.7 ms (measured on this project's CPU), the largest cost of the SB-CFM coupling
    after Sinkhorn.

    Args:
        plan: ``(n, m)`` non-negative matrix whose rows have positive sums.
        generator: Randomness for the ``n`` uniforms.
    Returns:
        ``(n,)`` int64 column indices, on ``plan``'s device.
    """
    c = plan.detach().to(torch.float64).cumsum(1)  # (n, m)
    u = torch.rand(plan.shape[0], 1, generator=generator, dtype=torch.float64,
                   device=plan.device) * c[:, -1:]  # (n, 1), u_i < c_im
    return torch.searchsorted(c, u, right=True).squeeze(1).clamp_max_(plan.shape[1] - 1)


@dataclass(frozen=True)
class ReflowCoupling(AbstractCoupling):
    """Pairs ``x0`` with ``T(x0)``, the time-1 endpoint of a trained flow (reflow).

    Args:
        field: Vector field ``v(t, x)``.
        method, steps, atol, rtol: Passed to :func:`otgen.ode.integrate`.

    The returned ``x1`` ignores the data batch: it is the flow's own endpoint.
    """

    field: Callable[[Tensor, Tensor], Tensor]
    method: str = "dopri5"
    steps: int | None = None
    atol: float = 1e-5
    rtol: float = 1e-5

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.arange(x0.shape[0], device=x0.device)

    def __call__(
        self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        from otgen.ode import integrate

        _check_pair(x0, x1)
        with torch.no_grad():
            res = integrate(self.field, x0.detach(), method=self.method, steps=self.steps,
                            atol=self.atol, rtol=self.rtol)
        x1_flow = res.x
        if isinstance(x1_flow, tuple):
            raise TypeError("the reflow field must map a tensor state to a tensor")
        return x0, x1_flow, torch.arange(x0.shape[0], device=x0.device)
