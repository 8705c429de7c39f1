r"""Closed-form solutions of gradient flows (ground truth for the schemes and the CLI).

* Heat flow :math:`\partial_t\rho = D\Delta\rho` from :math:`N(m, S)`:
  :math:`N(m, S + 2Dt\,I)`.
* Ornstein--Uhlenbeck / Fokker--Planck :math:`dX = -\theta(X - \mu)dt + \sigma dW` from
  :math:`N(m, S)`: :math:`N(\mu + e^{-\theta t}(m - \mu),\ e^{-2\theta t}S +
  \tfrac{\sigma^2}{2\theta}(1 - e^{-2\theta t}) I)`; with :math:`\theta = 1,\sigma = \sqrt 2`
  it is the KL flow to :math:`N(\mu, I)`.
* Aggregation with :math:`W = \tfrac12|z|^2`: :math:`\dot x = -(x - \bar x)`, so
  :math:`N(m, S) \mapsto N(m, e^{-2t}S)`.
* Barenblatt profile of the porous medium equation :math:`\partial_t\rho = \Delta\rho^m`
  in :math:`\mathbb R^d` (unit mass):
  :math:`\rho(t, x) = t^{-\alpha}(C - k|x|^2 t^{-2\alpha/d})_+^{1/(m-1)}`,
  :math:`\alpha = d/(d(m-1)+2)`, :math:`k = \alpha(m-1)/(2md)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from otgen._validate import check_positive

__all__ = ["heat_gaussian", "ou_gaussian", "aggregation_gaussian", "barenblatt",
           "gaussian_quantiles"]


def _eye_like(S: Tensor) -> Tensor:
    return torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)


def heat_gaussian(m: Tensor, S: Tensor, t: float, D: float = 1.0) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and covariance ``(d, d)`` at time ``t`` of the heat flow
    :math:`\\partial_t\\rho = D\\Delta\\rho` started at :math:`N(m, S)`."""
    return m, S + 2.0 * D * t * _eye_like(S)


def ou_gaussian(m: Tensor, S: Tensor, t: float, *, theta: float = 1.0, mu: float | Tensor = 0.0,
                sigma: float = math.sqrt(2.0)) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and covariance ``(d, d)`` at time ``t`` of
    :math:`dX = -\\theta(X - \\mu)dt + \\sigma dW` started at :math:`N(m, S)`."""
    e = math.exp(-theta * t)
    mean = mu + e * (m - mu)
    cov = e * e * S + sigma**2 / (2 * theta) * (1 - e * e) * _eye_like(S)
    return mean, cov


def aggregation_gaussian(m: Tensor, S: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """Interaction flow with :math:`W = |z|^2/2` from :math:`N(m, S)`: ``(m, e^{-2t} S)``."""
    return m, math.exp(-2.0 * t) * S


def barenblatt(x: Tensor, t: float, m: float = 2.0) -> Tensor:
    r"""Unit-mass Barenblatt solution of :math:`\partial_t\rho = \Delta\rho^m` at ``t > 0``.

    Args:
        x: Points ``(B, d)``.
        t: Time (> 0; the profile is a Dirac mass at ``t = 0``).
        m: Exponent > 1.
    Returns:
        Densities ``(B,)``.
    """
    check_positive("t", t)
    d = x.shape[-1]
    alpha = d / (d * (m - 1) + 2)
    k = alpha * (m - 1) / (2 * m * d)
    q = 1.0 / (m - 1)
    # unit mass: int (C - k|y|^2)_+^q dy = C^(q + d/2) k^(-d/2) pi^(d/2) G(q+1) / G(q+1+d/2)
    log_c = (math.log(k) * d / 2 + math.lgamma(q + 1 + d / 2) - math.lgamma(q + 1)
             - d / 2 * math.log(math.pi)) / (q + d / 2)
    r2 = (x * x).sum(-1) * t ** (-2 * alpha / d)
    return t ** (-alpha) * (math.exp(log_c) - k * r2).clamp_min(0.0) ** q


def gaussian_quantiles(mean: float, std: float, n: int, *, dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> Tensor:
    """``n`` quantiles :math:`m + s\\,\\Phi^{-1}((i - 1/2)/n)` of :math:`N(m, s^2)`, ``(n,)``
    (the equal-mass particle representation used by the quantile JKO)."""
    s = (torch.arange(n, dtype=dtype, device=device) + 0.5) / n
    return mean + std * torch.special.ndtri(s)
