r"""Conditional probability paths for flow matching.

A path turns a coupled pair ``(x0, x1)`` (``x0`` from the source / noise at ``t = 0``, ``x1``
from the data at ``t = 1``) and a time ``t`` into a point ``x_t`` and the conditional target
velocity :math:`u_t = \frac{d}{dt} x_t`. Every path here has the Gaussian form

.. math::
    x_t = \mu_t(x_0, x_1) + \sigma_t\,\varepsilon,\qquad \varepsilon \sim N(0, I),\qquad
    u_t = \dot\mu_t + \dot\sigma_t\,\varepsilon
        = \dot\mu_t + \frac{\dot\sigma_t}{\sigma_t}(x_t - \mu_t),

so ``u_t`` is exactly the time derivative of ``x_t`` along a fixed ``(x0, x1, ε)``; the tests
check this by finite differences. Shapes: ``x0, x1`` are ``(B, *D)``, ``t`` is ``(B,)``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from otgen._validate import check_choice, check_positive

__all__ = [
    "PathSample",
    "AbstractPath",
    "LinearPath",
    "LipmanPath",
    "BrownianBridgePath",
    "VPPath",
    "CurvedPath",
    "pad_like",
]


def pad_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape ``t`` of shape ``(B,)`` to ``(B, 1, ..., 1)`` to broadcast against ``x``."""
    return t.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class PathSample:
    """A draw from a conditional path: ``xt``, target ``ut`` (both ``(B, *D)``), the noise
    ``eps`` used (``(B, *D)``, zeros for noiseless paths), times ``t`` ``(B,)``, and for
    stochastic paths the conditional score :math:`\\nabla\\log p_t(x_t|x_0,x_1)` (else
    ``None``)."""

    xt: Tensor
    ut: Tensor
    eps: Tensor
    t: Tensor
    score: Tensor | None = None


class AbstractPath(abc.ABC):
    """Interface: ``mu_t(x0, x1, t)``, ``dmu_t``, ``sigma_t(t)``, ``dsigma_t(t)``."""

    @abc.abstractmethod
    def mu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Mean :math:`\\mu_t`, shape ``(B, *D)``; ``t`` already padded."""

    @abc.abstractmethod
    def dmu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Time derivative :math:`\\dot\\mu_t`, shape ``(B, *D)``."""

    def sigma_t(self, t: Tensor) -> Tensor:
        """Noise scale :math:`\\sigma_t` (same shape as ``t``); zero by default."""
        return torch.zeros_like(t)

    def dsigma_t(self, t: Tensor) -> Tensor:
        """Time derivative :math:`\\dot\\sigma_t`."""
        return torch.zeros_like(t)

    @property
    def stochastic(self) -> bool:
        """Whether the path adds Gaussian noise (``sigma_t`` not identically zero)."""
        return True

    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor, *, eps: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Draw ``x_t`` and the target velocity for each pair.

        Args:
            x0: Source points ``(B, *D)``.
            x1: Target points ``(B, *D)`` coupled with ``x0``.
            t: Times ``(B,)`` in ``[0, 1]``.
            eps: Optional noise ``(B, *D)``; drawn with ``generator`` if ``None``.
            generator: Randomness for ``eps``.
        Returns:
            A :class:`PathSample`.
        """
        if x0.shape != x1.shape:
            raise ValueError(f"`x0` and `x1` must have one shape, got {tuple(x0.shape)} and "
                             f"{tuple(x1.shape)}; couple them first.")
        if t.shape != (x0.shape[0],):
            raise ValueError(f"`t` must have shape ({x0.shape[0]},), got {tuple(t.shape)}.")
        tp = pad_like(t, x0)
        mu = self.mu_t(x0, x1, tp)
        if not self.stochastic:
            zeros = torch.zeros_like(x0)
            return PathSample(xt=mu, ut=self.dmu_t(x0, x1, tp), eps=zeros, t=t)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        s, ds = self.sigma_t(tp), self.dsigma_t(tp)
        xt = mu + s * eps
        ut = self.dmu_t(x0, x1, tp) + ds * eps
        score = -eps / s.clamp_min(torch.finfo(x0.dtype).tiny)
        return PathSample(xt=xt, ut=ut, eps=eps, t=t, score=score)


@dataclass(frozen=True)
class LinearPath(AbstractPath):
    r"""Straight interpolation with constant noise (I-CFM / OT-CFM, Tong et al. 2023):
    :math:`x_t = (1-t)x_0 + t x_1 + \sigma\varepsilon`, :math:`u_t = x_1 - x_0`."""

    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.sigma < 0 or not math.isfinite(self.sigma):
            raise ValueError(f"`sigma` must be a finite number >= 0, got {self.sigma}.")

    @property
    def stochastic(self) -> bool:
        return self.sigma > 0

    def mu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return (1 - t) * x0 + t * x1

    def dmu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return x1 - x0

    def sigma_t(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.sigma)


@dataclass(frozen=True)
class LipmanPath(AbstractPath):
    r"""Lipman et al. (2023) OT path from noise ``x0``:
    :math:`x_t = (1 - (1-\sigma_{min})t)\,x_0 + t x_1`,
    :math:`u_t = x_1 - (1-\sigma_{min})x_0`. At ``t = 1`` the sample is
    :math:`x_1 + \sigma_{min} x_0`, a Gaussian of scale σ_min around the data."""

    sigma_min: float = 1e-4

    @property
    def stochastic(self) -> bool:
        return False

    def mu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return (1 - (1 - self.sigma_min) * t) * x0 + t * x1

    def dmu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return x1 - (1 - self.sigma_min) * x0


@dataclass(frozen=True)
class BrownianBridgePath(AbstractPath):
    r"""Brownian bridge between the pair (Schrödinger-bridge CFM):
    :math:`x_t = (1-t)x_0 + t x_1 + \sigma\sqrt{t(1-t)}\,\varepsilon`,
    :math:`u_t = x_1 - x_0 + \frac{1-2t}{2t(1-t)}(x_t - \mu_t)`. The conditional score is
    :math:`-\varepsilon / \sigma_t`."""

    sigma: float = 1.0

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)

    def mu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return (1 - t) * x0 + t * x1

    def dmu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return x1 - x0

    def sigma_t(self, t: Tensor) -> Tensor:
        return self.sigma * torch.sqrt(t * (1 - t))

    def dsigma_t(self, t: Tensor) -> Tensor:
        # d/dt sigma sqrt(t(1-t)) = sigma (1 - 2t) / (2 sqrt(t(1-t))); finite for t in (0, 1)
        tiny = torch.finfo(t.dtype).tiny
        return self.sigma * (1 - 2 * t) / (2 * torch.sqrt(t * (1 - t)).clamp_min(tiny))


@dataclass(frozen=True)
class VPPath(AbstractPath):
    r"""Variance-preserving path from noise ``x0`` to data ``x1``:
    :math:`x_t = \alpha_t x_1 + s_t x_0` with :math:`\alpha_t^2 + s_t^2 = 1`,
    :math:`u_t = \dot\alpha_t x_1 + \dot s_t x_0`.

    Schedules: ``"cosine"``: :math:`\alpha_t = \sin(\pi t/2)`; ``"linear"`` (the VP-SDE of
    Song et al. with :math:`\beta(s) = \beta_{min} + s(\beta_{max}-\beta_{min})` run in
    reverse time :math:`s = 1 - t`): :math:`\alpha_t = \exp(-\tfrac14 (1-t)^2
    (\beta_{max}-\beta_{min}) - \tfrac12 (1-t)\beta_{min})`.
    """

    schedule: str = "cosine"
    beta_min: float = 0.1
    beta_max: float = 20.0
    _names: tuple[str, ...] = field(default=("cosine", "linear"), repr=False)

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, self._names)

    @property
    def stochastic(self) -> bool:
        return False

    def alpha(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_t, d alpha_t / dt)``."""
        if self.schedule == "cosine":
            return torch.sin(0.5 * math.pi * t), 0.5 * math.pi * torch.cos(0.5 * math.pi * t)
        s = 1 - t
        db = self.beta_max - self.beta_min
        log_a = -0.25 * s**2 * db - 0.5 * s * self.beta_min
        a = torch.exp(log_a)
        return a, a * (0.5 * s * db + 0.5 * self.beta_min)

    def mu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        a, _ = self.alpha(t)
        return a * x1 + torch.sqrt((1 - a * a).clamp_min(0.0)) * x0

    def dmu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        a, da = self.alpha(t)
        s = torch.sqrt((1 - a * a).clamp_min(torch.finfo(t.dtype).tiny))
        return da * x1 - (a * da / s) * x0


@dataclass(frozen=True)
class CurvedPath(AbstractPath):
    r"""The curved path of the flow-matching seed's exercise:
    :math:`x_t = (1-t)x_0 + t x_1 + c\,t(1-t)\,n_\perp`,
    :math:`u_t = x_1 - x_0 + c(1-2t)\,n_\perp`.

    In 2-D, :math:`n_\perp` is :math:`x_1 - x_0` rotated by +90° (so the bulge scales with
    the distance travelled); for ``d > 2``, the component of a fixed random unit direction
    (drawn from ``seed``) orthogonal to :math:`x_1 - x_0`, rescaled to
    :math:`|x_1 - x_0|`. Points are flattened to ``(B, d)`` for the construction.
    """

    c: float = 0.5
    seed: int = 0

    @property
    def stochastic(self) -> bool:
        return False

    def normal(self, x0: Tensor, x1: Tensor) -> Tensor:
        """:math:`n_\\perp` for each pair, shape ``(B, *D)``."""
        delta = (x1 - x0).reshape(x0.shape[0], -1)  # (B, d)
        d = delta.shape[1]
        if d == 2:
            n = torch.stack([-delta[:, 1], delta[:, 0]], dim=1)
        else:
            g = torch.Generator().manual_seed(self.seed)
            r = torch.randn(d, generator=g, dtype=torch.float64).to(delta)
            r = r / r.norm()
            sq = (delta * delta).sum(1, keepdim=True)
            proj = r[None, :] - (delta @ r)[:, None] * delta / sq.clamp_min(
                torch.finfo(delta.dtype).tiny)
            n = proj * (sq.sqrt() / proj.norm(dim=1, keepdim=True).clamp_min(
                torch.finfo(delta.dtype).tiny))
        return n.reshape(x0.shape)

    def mu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return (1 - t) * x0 + t * x1 + self.c * t * (1 - t) * self.normal(x0, x1)

    def dmu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return x1 - x0 + self.c * (1 - 2 * t) * self.normal(x0, x1)
