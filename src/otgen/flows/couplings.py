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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from otgen._validate import check_finite, check_positive_or_none
from otgen.ot.exact import _assign
from otgen.ot.problem import LinearProblem
from otgen.ot.sinkhorn import Sinkhorn

__all__ = [
    "AbstractCoupling",
    "IndependentCoupling",
    "ExactOTCoupling",
    "EntropicOTCoupling",
    "ReflowCoupling",
]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _check_pair(x0: Tensor, x1: Tensor) -> None:
    if x0.shape[0] != x1.shape[0] or x0.shape[1:] != x1.shape[1:]:
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


@dataclass(frozen=True)
class ExactOTCoupling(AbstractCoupling):
    """Exact minibatch OT (squared Euclidean on flattened samples) as a permutation."""

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        # Hot path of OT-CFM: validate the (B, d) batches, not the (B, B) cost matrix.
        a, b = _flat(x0), _flat(x1)
        check_finite("x0", a)
        check_finite("x1", b)
        # The simplex works in float64 on the CPU: build the (B, B) cost there directly,
        # |a_i|^2 + |b_j|^2 - 2 <a_i, b_j> in one fused addmm (no float32 matrix to convert).
        a64 = a.to(device="cpu", dtype=torch.float64)
        b64 = b.to(device="cpu", dtype=torch.float64)
        C = torch.addmm((a64 * a64).sum(1, keepdim=True) + (b64 * b64).sum(1)[None],
                        a64, b64.T, alpha=-2.0).clamp_(min=0.0)  # (B, B)
        return _assign(C, a.shape[1]).to(x0.device)


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
        probs = res.plan / res.plan.sum(1, keepdim=True)  # (B, B) rows sum to 1
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)


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
