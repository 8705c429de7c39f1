r"""An SDE zoo with closed-form marginals: OU, heat, VP-SDE, Langevin, Brownian bridges.

Each SDE has ``drift(t, x)`` and ``diffusion(t, x)`` (diagonal, additive noise) and runs
with :func:`otgen.ode.sdeint`; where the law at time ``t`` from a Gaussian start
:math:`N(m, S)` is known, ``marginal(t, m, S) -> (mean, cov)`` returns it.

============================ ================================================ ===============
SDE                          :math:`dX = f\,dt + g\,dW`                        gradient flow of
============================ ================================================ ===============
:class:`OrnsteinUhlenbeck`   :math:`-\theta(X - \mu)dt + \sigma dW`            KL to
                                                                              :math:`N(\mu,
                                                                              \tfrac{\sigma^2}
                                                                              {2\theta}I)`
:class:`HeatSDE`             :math:`\sqrt{2D}\,dW`                             :math:`D\int\rho
                                                                              \log\rho`
:class:`VPSDE`               :math:`-\tfrac12\beta(s)X ds + \sqrt{\beta(s)}dW` KL to N(0, I)
                                                                              (time-changed)
:class:`LangevinSDE`         :math:`-\nabla V dt + \sqrt{2T}dW`                KL to
                                                                              :math:`e^{-V/T}`
:class:`BrownianBridge`      forward :math:`\frac{x_1 - X}{1-t}dt + \sigma dW`  (seed: KL to
                             backward :math:`\frac{X - x_0}{t}dt + \sigma dW`  shrinking
                                                                              Gaussians)
============================ ================================================ ===============

**Time conventions of the VP-SDE.** :class:`VPSDE` is written in *diffusion time*
:math:`s \in [0, 1]` (``s = 0`` data, ``s = 1`` noise, the direction in which noise is
added), with :math:`\beta(s) = \beta_{min} + s(\beta_{max} - \beta_{min})` ("linear", the
DDPM / Song et al. schedule) or the cosine schedule. Its marginal given :math:`X_0 = x`
is :math:`N(\alpha(s)x, \sigma(s)^2 I)`, :math:`\alpha(s) = e^{-\frac12\int_0^s\beta}`,
:math:`\sigma^2 = 1 - \alpha^2`. Generative models in otgen run in *generative time*
:math:`t = 1 - s` (0 = noise, 1 = data): ``VPSDE.alpha(1 - t)`` equals
``otgen.flows.VPPath(schedule).alpha(t)[0]`` (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from otgen._validate import check_choice, check_positive
from otgen.gradflows.exact import heat_gaussian, ou_gaussian
from otgen.gradflows.potentials import Potential, grad_potential

__all__ = ["OrnsteinUhlenbeck", "HeatSDE", "VPSDE", "LangevinSDE", "BrownianBridge",
           "BridgeSDE"]


def _eye(S: Tensor) -> Tensor:
    return torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)


@dataclass(frozen=True)
class OrnsteinUhlenbeck:
    r""":math:`dX = -\theta(X - \mu)dt + \sigma dW`; the defaults
    (:math:`\theta = 1, \mu = 0, \sigma = \sqrt 2`) are the Fokker--Planck flow of
    :math:`\mathrm{KL}(\cdot\,\|\,N(0, I))`."""

    theta: float = 1.0
    mu: float = 0.0
    sigma: float = math.sqrt(2.0)

    def __post_init__(self) -> None:
        check_positive("theta", self.theta)
        check_positive("sigma", self.sigma)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return -self.theta * (x - self.mu)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, self.sigma)

    def marginal(self, t: float, m: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
        """Law at ``t`` from :math:`N(m, S)`: mean ``(d,)``, covariance ``(d, d)``."""
        return ou_gaussian(m, S, t, theta=self.theta, mu=self.mu, sigma=self.sigma)

    def stationary(self, d: int, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """:math:`N(\\mu, \\sigma^2/(2\\theta) I)`."""
        return (torch.full((d,), self.mu, dtype=dtype),
                self.sigma**2 / (2 * self.theta) * torch.eye(d, dtype=dtype))


@dataclass(frozen=True)
class HeatSDE:
    r""":math:`dX = \sqrt{2D}\,dW`: the heat equation :math:`\partial_t\rho = D\Delta\rho`,
    gradient flow of :math:`D\int\rho\log\rho`."""

    D: float = 1.0

    def __post_init__(self) -> None:
        check_positive("D", self.D)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, math.sqrt(2 * self.D))

    def marginal(self, t: float, m: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`N(m, S + 2Dt\\,I)`."""
        return heat_gaussian(m, S, t, self.D)


@dataclass(frozen=True)
class VPSDE:
    r"""Variance-preserving SDE in diffusion time ``s`` (see the module docstring):
    :math:`dX = -\tfrac12\beta(s)X\,ds + \sqrt{\beta(s)}\,dW`.

    Args:
        schedule: ``"linear"`` (:math:`\beta(s) = \beta_{min} + s(\beta_{max}-\beta_{min})`)
            or ``"cosine"`` (:math:`\alpha(s) = \cos(\pi s/2)`, :math:`\beta(s) =
            \pi\tan(\pi s/2)`, singular at ``s = 1``).
        beta_min, beta_max: Linear schedule ends (defaults of Song et al. 2021).
    """

    schedule: str = "linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    _names: tuple[str, ...] = field(default=("linear", "cosine"), repr=False)

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, self._names)
        check_positive("beta_min", self.beta_min)
        if not self.beta_max >= self.beta_min:
            raise ValueError(f"`beta_max` must be >= beta_min={self.beta_min}, got "
                             f"{self.beta_max}.")

    def beta(self, s: Tensor) -> Tensor:
        r""":math:`\beta(s)`, same shape as ``s``."""
        if self.schedule == "cosine":
            return math.pi * torch.tan(0.5 * math.pi * s)
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def log_alpha(self, s: Tensor) -> Tensor:
        r""":math:`\log\alpha(s) = -\tfrac12\int_0^s\beta`."""
        if self.schedule == "cosine":
            return torch.log(torch.cos(0.5 * math.pi * s))
        return -0.25 * s**2 * (self.beta_max - self.beta_min) - 0.5 * s * self.beta_min

    def alpha(self, s: Tensor) -> Tensor:
        """:math:`\\alpha(s)`: the signal scale of the marginal."""
        return torch.exp(self.log_alpha(s))

    def sigma(self, s: Tensor) -> Tensor:
        """:math:`\\sigma(s) = \\sqrt{1 - \\alpha(s)^2}` (computed as ``sqrt(-expm1(2 log α))``)."""
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(s)))

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """:math:`-\\tfrac12\\beta(s)x` with ``t`` the diffusion time ``s``."""
        return -0.5 * self.beta(t) * x

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.sqrt(self.beta(t)).expand_as(x)

    def marginal(self, t: float, m: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
        """Law at diffusion time ``t`` from :math:`N(m, S)`:
        :math:`N(\\alpha m, \\alpha^2 S + \\sigma^2 I)`."""
        a = float(self.alpha(torch.tensor(t, dtype=torch.float64)))
        return a * m, a * a * S + (1 - a * a) * _eye(S)


@dataclass(frozen=True)
class LangevinSDE:
    r"""Overdamped Langevin dynamics :math:`dX = -\nabla V(X)dt + \sqrt{2T}\,dW`, the
    Fokker--Planck flow of :math:`\mathrm{KL}(\cdot\,\|\,\pi)`, :math:`\pi\propto e^{-V/T}`
    (no closed-form marginal for a general ``V``; for quadratic ``V`` use
    :class:`OrnsteinUhlenbeck`).

    Args:
        V: Potential ``(B, d) -> (B,)``; its gradient comes from autograd unless ``grad_V``
            is given.
        temperature: :math:`T > 0`.
        grad_V: Optional explicit :math:`\nabla V` ``(B, d) -> (B, d)``.
    """

    V: Potential
    temperature: float = 1.0
    grad_V: Potential | None = None

    def __post_init__(self) -> None:
        check_positive("temperature", self.temperature)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return -(self.grad_V(x) if self.grad_V is not None else grad_potential(self.V, x))

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, math.sqrt(2 * self.temperature))


@dataclass(frozen=True)
class BridgeSDE:
    r"""One direction of a :class:`BrownianBridge`: ``forward`` (run ``t`` from 0 to 1)
    :math:`dX = \frac{x_1 - X}{1 - t}dt + \sigma dW`, ``backward`` (run ``t`` from 1 to 0
    with :func:`otgen.ode.sdeint`, ``t1 < t0``) :math:`dX = \frac{X - x_0}{t}dt + \sigma
    d\bar W`. The drift is singular at the end point (``t = 1`` resp. ``0``): evaluate it
    only before it (Euler--Maruyama does; Heun's corrector would evaluate it there, so stop
    Heun one step short)."""

    x0: Tensor
    x1: Tensor
    sigma: float
    direction: str

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        tiny = torch.finfo(x.dtype).tiny
        if self.direction == "forward":
            return (self.x1 - x) / (1 - t).clamp_min(tiny)
        return (x - self.x0) / t.clamp_min(tiny)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, self.sigma)


@dataclass(frozen=True)
class BrownianBridge:
    r"""Brownian bridge of scale :math:`\sigma` between Dirac ends :math:`x_0` (t = 0) and
    :math:`x_1` (t = 1): the Schrödinger bridge for paired data with a Brownian reference
    (seed note; Bridge-TTS). Its marginal is

    .. math:: X_t \sim N\big((1-t)x_0 + t x_1,\ \sigma^2 t(1-t) I\big),

    reached by the forward SDE from :math:`x_0` and by the backward SDE from :math:`x_1`.

    Args:
        x0, x1: End points ``(B, d)`` (or broadcastable).
        sigma: Noise scale > 0.
    """

    x0: Tensor
    x1: Tensor
    sigma: float = 1.0

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)

    def forward(self) -> BridgeSDE:
        """SDE to run from ``t = 0`` (at ``x0``) to ``t = 1``."""
        return BridgeSDE(self.x0, self.x1, self.sigma, "forward")

    def backward(self) -> BridgeSDE:
        """SDE to run from ``t = 1`` (at ``x1``) back to ``t = 0``."""
        return BridgeSDE(self.x0, self.x1, self.sigma, "backward")

    def marginal(self, t: float) -> tuple[Tensor, Tensor]:
        """Mean ``(B, d)`` and (isotropic) variance :math:`\\sigma^2 t(1-t)` (0-d) at ``t``."""
        mean = (1 - t) * self.x0 + t * self.x1
        return mean, torch.tensor(self.sigma**2 * t * (1 - t), dtype=mean.dtype,
                                  device=mean.device)
