r"""Flow-matching objectives: a coupling, a conditional path and a regression loss.

Conditional flow matching (Lipman et al. 2023; Tong et al. 2023) regresses a field
:math:`v_\theta` onto the conditional velocity of a path:

.. math::
    \mathcal L(\theta) = \mathbb E_{t \sim U[0,1],\,(x_0,x_1) \sim \pi,\,\varepsilon}
        \big\| v_\theta(t, x_t) - u_t(x_t \mid x_0, x_1) \big\|^2 ,

whose minimiser is the marginal field that transports :math:`p_0` to :math:`p_1`. The
coupling :math:`\pi` is independent (I-CFM), the minibatch OT plan (OT-CFM), the entropic
plan with :math:`\varepsilon = 2\sigma^2` (SB-CFM), or the endpoints of a trained flow
(reflow). SB-CFM also trains a score model with the weighted denoising loss
:math:`\|\lambda_t s_\phi(t, x_t) + \varepsilon\|^2`, :math:`\lambda_t = 2\sigma_t/\sigma^2`,
so that :math:`s_\phi \approx \tfrac{\sigma^2}{2}\nabla\log p_t` (the drift correction of
the bridge SDE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from otgen._validate import check_choice, check_positive
from otgen.flows._losses import sq_error
from otgen.flows.couplings import (
    AbstractCoupling,
    EntropicOTCoupling,
    ExactOTCoupling,
    IndependentCoupling,
)
from otgen.flows.diffusion import DiffusionMatcher
from otgen.flows.paths import (
    AbstractPath,
    BrownianBridgePath,
    LinearPath,
    LipmanPath,
    PathSample,
    VPPath,
)

__all__ = ["FlowMatcher", "MatcherBatch", "make_matcher", "make_objective", "METHODS"]

Field = Callable[..., Tensor]

#: names accepted by :func:`make_objective` (and ``otgen train --method``); all but
#: ``"diffusion"`` (a score model, :class:`~otgen.flows.diffusion.DiffusionMatcher`) are
#: flow-matching objectives built by :func:`make_matcher`
METHODS = ("otcfm", "cfm", "sbcfm", "fm", "vp", "rectified", "diffusion")


@dataclass(frozen=True)
class MatcherBatch:
    """What one training step regresses on: times ``t`` ``(B,)``, points ``xt`` and targets
    ``ut`` ``(B, *D)``, the partner indices ``j`` ``(B,)`` and the path draw."""

    t: Tensor
    xt: Tensor
    ut: Tensor
    j: Tensor
    draw: PathSample


@dataclass(frozen=True)
class FlowMatcher:
    """A flow-matching objective = coupling + path (+ optional score loss).

    Args:
        path: Conditional probability path.
        coupling: Minibatch coupling.
        t_range: Times are drawn uniformly in ``[t_range[0], t_range[1]]``.
    Example:
        >>> fm = make_matcher("otcfm")
        >>> batch = fm.sample(torch.randn(8, 2), torch.randn(8, 2))
        >>> batch.xt.shape, batch.ut.shape
        (torch.Size([8, 2]), torch.Size([8, 2]))
    """

    path: AbstractPath
    coupling: AbstractCoupling = field(default_factory=IndependentCoupling)
    t_range: tuple[float, float] = (0.0, 1.0)

    def sample(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, *,
               pairs: tuple[Tensor, Tensor, Tensor] | None = None) -> MatcherBatch:
        """Couple the batches, draw times and points on the path; shapes ``(B, *D)``.

        ``pairs = (x0, x1_paired, j)`` skips the coupling (already computed, e.g. ahead of
        time in another thread by :meth:`pair`)."""
        x0, x1, j = pairs if pairs is not None else self.coupling(x0, x1, generator)
        lo, hi = self.t_range
        t = lo + (hi - lo) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype,
                                        device=x0.device)
        draw = self.path.sample(x0, x1, t, generator=generator)
        return MatcherBatch(t=t, xt=draw.xt, ut=draw.ut, j=j, draw=draw)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None
             ) -> tuple[Tensor, Tensor, Tensor]:
        """Only the coupling step: ``(x0, x1[j], j)``."""
        return self.coupling(x0, x1, generator)

    def loss(
        self, field: Field, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None,
        score: Field | None = None, cond: Tensor | None = None,
        pairs: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Mean squared regression error (plus the score loss when ``score`` is given).

        Args:
            field: Model ``v(t, x)`` (or ``v(t, x, cond)`` when ``cond`` is given).
            x0, x1: Source and data batches ``(B, *D)``.
            generator: Randomness for the coupling, times and noise.
            score: Optional score model ``s(t, x)`` for stochastic paths (SB-CFM).
            cond: Optional per-sample condition of ``x1`` (``(B, ...)``); it follows the
                coupling's pairing.
            pairs: Precomputed coupling ``(x0, x1_paired, j)`` (see :meth:`pair`).
        Returns:
            Scalar loss.
        """
        b = self.sample(x0, x1, generator, pairs=pairs)
        if cond is not None:
            v = field(b.t, b.xt, cond[b.j])
        else:
            v = field(b.t, b.xt)
        loss = sq_error(v, b.ut)
        if score is not None:
            loss = loss + self.score_loss(score, b)
        return loss

    def score_loss(self, score: Field, b: MatcherBatch) -> Tensor:
        r""":math:`\|\lambda_t s(t, x_t) + \varepsilon\|^2` averaged over the batch."""
        if not isinstance(self.path, BrownianBridgePath):
            raise ValueError("a score loss needs a stochastic bridge path (method 'sbcfm').")
        sig = self.path.sigma
        tp = b.t.reshape(-1, *([1] * (b.xt.ndim - 1)))
        lam = 2 * self.path.sigma_t(tp) / sig**2
        s = score(b.t, b.xt)
        return sq_error(lam * s, -b.draw.eps)


def make_matcher(method: str = "otcfm", *, sigma: float | None = None,
                 schedule: str = "cosine") -> FlowMatcher:
    """Build a named objective.

    ``"cfm"`` (I-CFM: independent, straight path, noise ``sigma`` default 0),
    ``"otcfm"`` (exact minibatch OT, straight path), ``"sbcfm"`` (entropic OT with
    ε = 2σ², Brownian bridge with ``sigma`` default 1), ``"fm"`` (Lipman's path with
    ``sigma_min`` = ``sigma`` default 1e-4), ``"vp"`` (variance-preserving path, ``schedule``
    cosine or linear), ``"rectified"`` (independent, straight, noiseless; reflow by
    re-training on :class:`~otgen.flows.couplings.ReflowCoupling` pairs).
    """
    check_choice("method", method, METHODS)
    if method == "diffusion":
        raise ValueError("`method` 'diffusion' trains a score (noise-prediction) model, not a "
                         "velocity field; build it with make_objective('diffusion') or "
                         "otgen.flows.diffusion.DiffusionMatcher().")
    if method in ("cfm", "otcfm"):
        s = 0.0 if sigma is None else float(sigma)
        coupling: AbstractCoupling = ExactOTCoupling() if method == "otcfm" else \
            IndependentCoupling()
        return FlowMatcher(LinearPath(s), coupling)
    if method == "sbcfm":
        s = check_positive("sigma", 1.0 if sigma is None else sigma)
        return FlowMatcher(BrownianBridgePath(s), EntropicOTCoupling(eps=2 * s * s),
                           t_range=(1e-4, 1 - 1e-4))
    if method == "fm":
        return FlowMatcher(LipmanPath(1e-4 if sigma is None else float(sigma)))
    if method == "vp":
        return FlowMatcher(VPPath(schedule), t_range=(0.0, 1.0 - 1e-4))
    return FlowMatcher(LinearPath(0.0))


def make_objective(method: str = "otcfm", *, sigma: float | None = None,
                   schedule: str = "cosine", beta_min: float = 0.1, beta_max: float = 20.0
                   ) -> FlowMatcher | DiffusionMatcher:
    """Any training objective by name: :func:`make_matcher` for the flow-matching methods,
    a :class:`~otgen.flows.diffusion.DiffusionMatcher` on the linear-β VP-SDE
    (``beta_min``, ``beta_max``) for ``"diffusion"``."""
    check_choice("method", method, METHODS)
    if method == "diffusion":
        from otgen.gradflows.sdes import VPSDE

        return DiffusionMatcher(VPSDE("linear", beta_min, beta_max))
    return make_matcher(method, sigma=sigma, schedule=schedule)
