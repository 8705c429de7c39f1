r"""Score-based diffusion (VP-SDE) and its unification with flow matching.

**Conventions.** Generative time ``t`` runs from 0 (noise) to 1 (data), as everywhere in
otgen; the VP-SDE of :class:`otgen.gradflows.VPSDE` runs in diffusion time
:math:`s = 1 - t`. The marginal path is Gaussian,

.. math::
    x_t = \alpha_t x_1 + \sigma_t x_0,\quad x_0 \sim N(0, I),\quad
    \alpha_t = \alpha(1 - t),\ \sigma_t = \sqrt{1 - \alpha_t^2}

(the same :math:`\alpha_t` as ``VPPath``). Sampling stops at :math:`t = 1 - t_\epsilon`
(default :math:`t_\epsilon = 10^{-3}`) where :math:`\sigma_t > 0`.

**Training** (denoising score matching, Vincent 2011; Song et al. 2021): a network
:math:`\hat\varepsilon_\theta(t, x)` predicts the noise, :math:`\mathcal L = \mathbb E_{t,
x_0, x_1}\|\hat\varepsilon_\theta(t, x_t) - x_0\|^2` with :math:`t \sim U[0, 1 -
t_\epsilon]`; the score is :math:`s_\theta = -\hat\varepsilon_\theta/\sigma_t` (the
:math:`\sigma_t^2`-weighted DSM loss).

**Samplers.** Reverse SDE (in generative time):
:math:`dX = [\tfrac12\beta X + \beta s_\theta]dt + \sqrt\beta\,dW`, :math:`\beta =
\beta(1 - t)`, via :func:`otgen.ode.sdeint`; probability-flow ODE
:math:`\dot x = \tfrac12\beta(x + s_\theta)` via :func:`otgen.ode.integrate`; likelihood
through the PF-ODE with :func:`otgen.flows.likelihood.log_likelihood`.

**Score ↔ velocity** (any Gaussian path :math:`x_t = \alpha_t x_1 + \sigma_t x_0`): with
:math:`\mathbb E[x_0|x_t] = -\sigma_t s_t` (Tweedie) and :math:`x_t = \alpha_t\mathbb
E[x_1|x_t] + \sigma_t\mathbb E[x_0|x_t]`, the marginal velocity is

.. math::
    v_t(x) = \frac{\dot\alpha_t}{\alpha_t}x + \sigma_t\Big(\frac{\dot\alpha_t\sigma_t}
    {\alpha_t} - \dot\sigma_t\Big) s_t(x),

and for the VP path this is exactly the PF-ODE field :math:`\tfrac12\beta(x + s)`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from otgen._validate import check_positive
from otgen.flows._losses import sq_error
from otgen.flows.couplings import AbstractCoupling, IndependentCoupling
from otgen.flows.likelihood import LikelihoodResult, log_likelihood, standard_normal_logprob
from otgen.gradflows.sdes import VPSDE
from otgen.ode import ODEResult, SDEResult, integrate, sdeint

__all__ = [
    "GaussianSchedule", "LinearSchedule", "VPSchedule", "score_to_velocity",
    "velocity_to_score", "EpsScore", "ProbabilityFlowField", "ReverseVPSDE",
    "DiffusionMatcher", "reverse_sde_sample", "probability_flow_sample",
    "probability_flow_log_likelihood",
]

Fn = Callable[..., Tensor]


def _pad(t: Tensor, x: Tensor) -> Tensor:
    """``t`` of shape ``()`` or ``(B,)`` → broadcastable against ``x`` ``(B, *D)``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t if t.ndim == 0 else t.reshape(-1, *([1] * (x.ndim - 1)))


# ---------------------------------------------------------------------------- schedules


class GaussianSchedule(abc.ABC):
    """:math:`x_t = \\alpha_t x_1 + \\sigma_t x_0` in generative time; ``coefficients(t)``
    returns :math:`(\\alpha, \\sigma, \\dot\\alpha, \\dot\\sigma)` shaped like ``t``."""

    @abc.abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(alpha, sigma, d alpha/dt, d sigma/dt)``."""


@dataclass(frozen=True)
class LinearSchedule(GaussianSchedule):
    """The straight (rectified-flow / OT-CFM) path :math:`\\alpha_t = t`,
    :math:`\\sigma_t = 1 - t`."""

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)


@dataclass(frozen=True)
class VPSchedule(GaussianSchedule):
    r"""The VP path of ``sde``: :math:`\alpha_t = \alpha(1-t)`, :math:`\dot\alpha_t =
    \tfrac12\beta(1-t)\alpha_t`, :math:`\dot\sigma_t = -\alpha_t\dot\alpha_t/\sigma_t`."""

    sde: VPSDE = field(default_factory=VPSDE)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = 1 - t
        a, sig = self.sde.alpha(s), self.sde.sigma(s)
        da = 0.5 * self.sde.beta(s) * a
        return a, sig, da, -a * da / sig


def score_to_velocity(score: Tensor, x: Tensor, t: Tensor, schedule: GaussianSchedule
                      ) -> Tensor:
    r"""Marginal velocity from the score on a Gaussian path (module docstring).

    Args:
        score: :math:`\nabla\log p_t(x)`, ``(B, *D)``.
        x: Points ``(B, *D)``.
        t: Generative time, ``()`` or ``(B,)``, strictly inside (0, 1) where the path is
            non-degenerate.
        schedule: The path.
    Returns:
        :math:`v_t(x)`, ``(B, *D)``.
    """
    a, s, da, ds = (_pad(c, x) for c in schedule.coefficients(_pad(t, x)))
    return (da / a) * x + s * (da * s / a - ds) * score


def velocity_to_score(v: Tensor, x: Tensor, t: Tensor, schedule: GaussianSchedule) -> Tensor:
    """Inverse of :func:`score_to_velocity`: :math:`s_t = (v - (\\dot\\alpha/\\alpha)x) /
    (\\sigma(\\dot\\alpha\\sigma/\\alpha - \\dot\\sigma))`; shapes as there."""
    a, s, da, ds = (_pad(c, x) for c in schedule.coefficients(_pad(t, x)))
    return (v - (da / a) * x) / (s * (da * s / a - ds))


# ------------------------------------------------------------------------------ models


class EpsScore(nn.Module):
    r"""Score :math:`s(t, x) = -\hat\varepsilon(t, x)/\sigma_t` of a noise-prediction
    network ``eps(t, x)`` (generative time)."""

    def __init__(self, eps: nn.Module | Fn, sde: VPSDE) -> None:
        super().__init__()
        self.eps = eps
        self.sde = sde

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return -self.eps(t, x) / _pad(self.sde.sigma(1 - torch.as_tensor(t).to(x)), x)


class ProbabilityFlowField(nn.Module):
    r"""The PF-ODE field :math:`v(t, x) = \tfrac12\beta(1-t)(x + s(t, x))`, rescaled so that
    integrating it over :math:`u \in [0, 1]` covers :math:`t = u\,t_{max}` with
    :math:`t_{max} = 1 - t_\epsilon`: ``forward(u, x)`` :math:`= t_{max}\,v(u t_{max}, x)`.
    Any otgen ODE code (``integrate``, ``log_likelihood``, ``path_energy``) can therefore
    treat a diffusion model as a flow on [0, 1].

    Args:
        score: Score ``s(t, x)`` in generative time (e.g. :class:`EpsScore`).
        sde: The VP-SDE.
        t_eps: Stop :math:`t_\epsilon` before the data end.
    """

    def __init__(self, score: nn.Module | Fn, sde: VPSDE, t_eps: float = 1e-3) -> None:
        super().__init__()
        self.score = score
        self.sde = sde
        self.t_max = 1.0 - check_positive("t_eps", t_eps)

    def forward(self, u: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(u).to(x) * self.t_max
        beta = _pad(self.sde.beta(1 - t), x)
        return self.t_max * 0.5 * beta * (x + self.score(t, x))


@dataclass(frozen=True)
class ReverseVPSDE:
    r"""Reverse-time VP-SDE in generative time:
    :math:`dX = [\tfrac12\beta X + \beta s(t, X)]dt + \sqrt\beta\,dW`,
    :math:`\beta = \beta(1 - t)`; run it from ``t = 0`` to :math:`1 - t_\epsilon`."""

    score: Fn
    sde: VPSDE

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        beta = _pad(self.sde.beta(1 - t), x)
        return 0.5 * beta * x + beta * self.score(t, x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.sqrt(self.sde.beta(1 - t)).expand_as(x)


# ------------------------------------------------------------------------------ samplers


def reverse_sde_sample(score: Fn, x0: Tensor, *, sde: VPSDE | None = None, steps: int = 500,
                       method: str = "euler", t_eps: float = 1e-3,
                       generator: torch.Generator | None = None, save_every: int | None = None
                       ) -> SDEResult:
    """Sample by the reverse SDE from noise ``x0`` ``(B, *D)`` (at ``t = 0``) to
    ``t = 1 - t_eps`` with ``steps`` Euler--Maruyama or Heun steps (``nfe`` counts score
    evaluations)."""
    sde = sde or VPSDE()
    return sdeint(ReverseVPSDE(score, sde), x0, t0=0.0, t1=1.0 - check_positive("t_eps", t_eps),
                  steps=steps, method=method, generator=generator, save_every=save_every)


def probability_flow_sample(score: Fn, x0: Tensor, *, sde: VPSDE | None = None,
                            t_eps: float = 1e-3, **kw: object) -> ODEResult:
    """Sample by the probability-flow ODE from noise ``x0``; ``kw`` go to
    :func:`otgen.ode.integrate` (default Dopri5). Time is the rescaled ``u`` of
    :class:`ProbabilityFlowField`."""
    field_ = ProbabilityFlowField(score, sde or VPSDE(), t_eps)
    return integrate(field_, x0, **kw)  # type: ignore[arg-type]


def probability_flow_log_likelihood(
    score: Fn, x1: Tensor, *, sde: VPSDE | None = None, t_eps: float = 1e-3,
    source_logprob: Callable[[Tensor], Tensor] = standard_normal_logprob, **kw: object,
) -> LikelihoodResult:
    r""":math:`\log p(x_1)` of data ``x1`` ``(B, *D)`` under the PF-ODE (the density of the
    model at :math:`t = 1 - t_\epsilon`), with the source :math:`N(0, I)` standing for the
    VP marginal at ``t = 0`` (exact up to :math:`\alpha(1)^2`); ``kw`` go to
    :func:`otgen.flows.likelihood.log_likelihood`."""
    field_ = ProbabilityFlowField(score, sde or VPSDE(), t_eps)
    return log_likelihood(field_, x1, source_logprob=source_logprob, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class DiffusionMatcher:
    r"""Denoising score matching for the VP-SDE with a noise-prediction network.

    Same training interface as :class:`otgen.flows.FlowMatcher` (``pair``, ``loss``): the
    source batch ``x0`` *is* the noise :math:`\varepsilon \sim N(0, I)`.

    Args:
        sde: The VP-SDE (default linear :math:`\beta` in [0.1, 20]).
        t_eps: Times are drawn in :math:`[0, 1 - t_\epsilon]`.
    Example:
        >>> dm = DiffusionMatcher()
        >>> net = lambda t, x: torch.zeros_like(x)
        >>> float(dm.loss(net, torch.ones(4, 2), torch.zeros(4, 2)))  # |0 - eps|^2 = 2
        2.0
    """

    sde: VPSDE = field(default_factory=VPSDE)
    t_eps: float = 1e-3
    coupling: AbstractCoupling = field(default_factory=IndependentCoupling)

    def __post_init__(self) -> None:
        check_positive("t_eps", self.t_eps)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None
             ) -> tuple[Tensor, Tensor, Tensor]:
        """Independent pairing ``(x0, x1, arange)``."""
        return self.coupling(x0, x1, generator)

    def noised(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """:math:`x_t = \\alpha_t x_1 + \\sigma_t x_0` for times ``t`` ``(B,)``."""
        s = 1 - t
        return _pad(self.sde.alpha(s), x1) * x1 + _pad(self.sde.sigma(s), x1) * x0

    def loss(self, field: Fn, x0: Tensor, x1: Tensor, *,
             generator: torch.Generator | None = None, score: Fn | None = None,
             cond: Tensor | None = None, pairs: tuple[Tensor, Tensor, Tensor] | None = None
             ) -> Tensor:
        """:math:`\\mathrm{mean}_i\\|\\hat\\varepsilon(t_i, x_{t_i}) - x_{0,i}\\|^2`; ``field``
        is the noise-prediction network ``eps(t, x)`` (``eps(t, x, cond)`` with ``cond``)."""
        x0, x1, j = pairs if pairs is not None else self.pair(x0, x1, generator)
        t = (1 - self.t_eps) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype,
                                          device=x0.device)
        xt = self.noised(x0, x1, t)
        out = field(t, xt, cond[j]) if cond is not None else field(t, xt)
        return sq_error(out, x0)

    def score(self, eps: nn.Module | Fn) -> EpsScore:
        """The score model of a noise-prediction network."""
        return EpsScore(eps, self.sde)

    def flow(self, eps: nn.Module | Fn) -> ProbabilityFlowField:
        """The PF-ODE field (on [0, 1], see :class:`ProbabilityFlowField`) of ``eps``."""
        return ProbabilityFlowField(self.score(eps), self.sde, self.t_eps)
