r"""Kantorovich critic: the dual side of :math:`\min_\theta W_1(g_\theta\#\zeta, \nu)` (WGAN).

Kantorovich--Rubinstein duality for the cost :math:`c(x, y) = |x - y|`:

.. math::
    W_1(\mu, \nu) = \sup_{\mathrm{Lip}(h) \le 1}\; \mathbb E_{y \sim \nu}[h(y)]
        - \mathbb E_{x \sim \mu}[h(x)],

since for :math:`c = |\cdot|` the c-transform of a 1-Lipschitz :math:`h` is :math:`-h`
(seed note 003, option 2: a neural potential :math:`h_\xi`). The critic :math:`h_\xi` is an
MLP kept (approximately) 1-Lipschitz by

* the **gradient penalty** :math:`\lambda\,\mathbb E_{\hat x}(|\nabla h(\hat x)| - 1)^2` on
  random interpolates :math:`\hat x = t y + (1 - t) x` (Gulrajani et al. 2017; the optimal
  critic has unit gradient norm on the segments of the optimal plan), and/or
* **spectral normalisation** of every linear layer (Miyato et al. 2018), which bounds the
  Lipschitz constant by the product of the activations' constants (1 for relu/tanh/silu-ish).

The generator is then trained on :math:`-\mathbb E_z h_\xi(g_\theta(z))`, whose gradient is
the seed note's :math:`\int [\partial_\theta g_\theta(z)]^\top \nabla h^\star(g_\theta(z))
\,d\zeta` with :math:`h^\star \approx -h_\xi`.

:class:`KantorovichCritic` is the same critic used as a solver: it fits :math:`h_\xi` on two
fixed samples and returns the dual estimate of :math:`W_1`.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(500, 1, generator=g, dtype=torch.float64)
    >>> res = KantorovichCritic(steps=300, progress=False)(x, x + 2.0)
    >>> round(float(res.value), 1)
    2.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from otgen._validate import (
    as_points,
    check_choice,
    check_int,
    check_positive,
    check_same_dim,
    check_same_dtype_device,
)
from otgen.models.mlp import ACTIVATIONS, MLP

__all__ = [
    "make_critic",
    "gradient_penalty",
    "critic_loss",
    "critic_generator_loss",
    "kantorovich_dual",
    "KantorovichCritic",
    "CriticResult",
]


class _Squeeze(nn.Module):
    """``(n, 1) -> (n,)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0]


def make_critic(dim: int, *, hidden: int = 128, depth: int = 3, activation: str = "relu",
                spectral_norm: bool = False) -> nn.Sequential:
    r"""A scalar potential :math:`h_\xi : \mathbb R^d \to \mathbb R` (MLP).

    Args:
        dim: Input dimension ``d``.
        hidden, depth, activation: The MLP (see :class:`otgen.models.MLP`).
        spectral_norm: Wrap every ``Linear`` in
            :func:`torch.nn.utils.parametrizations.spectral_norm` (one power iteration per
            forward pass in training mode), so each layer has operator norm ≤ 1.
    Shapes:
        ``(n, d) -> (n,)``.
    Example:
        >>> make_critic(2, hidden=8, depth=1)(torch.zeros(5, 2)).shape
        torch.Size([5])
    """
    check_choice("activation", activation, tuple(ACTIVATIONS))
    mlp = MLP(check_int("dim", dim), 1, hidden=hidden, depth=depth, activation=activation)
    if spectral_norm:
        for i, layer in enumerate(mlp):
            if isinstance(layer, nn.Linear):
                mlp[i] = nn.utils.parametrizations.spectral_norm(layer)
    return nn.Sequential(mlp, _Squeeze())


def gradient_penalty(critic: nn.Module, x: Tensor, y: Tensor, *, one_sided: bool = True,
                     generator: torch.Generator | None = None) -> Tensor:
    r"""Gradient penalty on interpolates :math:`\hat x = t y + (1-t) x`, :math:`t \sim U[0,1]`:

    * one-sided (default; Petzka et al. 2018): :math:`\mathbb E (|\nabla h(\hat x)| - 1)_+^2`,
    * two-sided (WGAN-GP, Gulrajani et al. 2017): :math:`\mathbb E (|\nabla h(\hat x)| -
      1)^2`.

    The one-sided penalty is convex in :math:`\nabla h`, so ``-dual + λ·penalty`` is a convex
    problem in ``h``. The two-sided one is not: it also has a spurious local optimum near
    :math:`-h^\star` (slopes of the wrong sign held at norm 1; starting from a small random
    critic, λ = 10 drives the slope's initial sign to norm 1 before the dual term can flip it,
    which we observed in 1-D). Both allow slopes slightly above 1 (by about
    :math:`W_1 / (2\lambda)` in relative terms), so the dual value is biased upwards by that.

    Args:
        critic: ``(n, d) -> (n,)``.
        x, y: Paired batches ``(n, d)`` (generated and data).
        one_sided: Penalise only gradient norms above 1.
        generator: Random stream of the interpolation weights ``t`` ``(n, 1)``.
    Returns:
        Scalar, differentiable in the critic's parameters (double back-propagation).
    """
    t = torch.rand(x.shape[0], 1, generator=generator, dtype=x.dtype).to(x.device)
    xh = (t * y.detach() + (1 - t) * x.detach()).requires_grad_(True)  # (n, d)
    (grad,) = torch.autograd.grad(critic(xh).sum(), xh, create_graph=True)
    excess = grad.norm(dim=1) - 1.0  # (n,)
    if one_sided:
        excess = excess.clamp_min(0.0)
    return excess.square().mean()


def kantorovich_dual(critic: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    r"""The dual value :math:`\frac1m\sum_j h(y_j) - \frac1n\sum_i h(x_i)`, shape ``()``: a
    lower bound of :math:`W_1` of the empirical measures when ``h`` is 1-Lipschitz."""
    return critic(y).mean() - critic(x).mean()


def critic_loss(critic: nn.Module, x: Tensor, y: Tensor, *, gp_weight: float = 10.0,
                one_sided: bool = True, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
    r"""Critic objective to **minimise**: :math:`-(\mathbb E h(y) - \mathbb E h(x)) +
    \lambda\,\mathrm{GP}` (``x`` generated, detached; ``y`` data; equal batch sizes when
    ``gp_weight > 0``).

    Returns:
        ``(loss, dual)``: the loss and the (penalty-free) dual estimate, both ``()``.
    """
    dual = kantorovich_dual(critic, x.detach(), y)
    loss = -dual
    if gp_weight > 0:
        loss = loss + gp_weight * gradient_penalty(critic, x, y, one_sided=one_sided,
                                                   generator=generator)
    return loss, dual.detach()


def critic_generator_loss(critic: nn.Module, x: Tensor) -> Tensor:
    r"""Generator objective :math:`-\mathbb E_z h(g_\theta(z))` for generated ``x`` ``(n, d)``
    (the data term of the dual does not depend on θ)."""
    return -critic(x).mean()


@dataclass(frozen=True)
class CriticResult:
    """Result of :class:`KantorovichCritic`.

    Attributes:
        value: Dual estimate :math:`\\bar h(y) - \\bar h(x)` on all points, shape ``()``
            (detached).
        critic: The trained potential ``(n, d) -> (n,)`` (eval mode).
        history: Dual estimate on the training batch at each step, shape ``(steps,)``.
        max_grad_norm: Largest :math:`|\\nabla h|` over the points and 2000 interpolates
            (≈ 1 for a valid 1-Lipschitz critic).
    """

    value: Tensor
    critic: nn.Module
    history: Tensor
    max_grad_norm: float


@dataclass(frozen=True)
class KantorovichCritic:
    r"""Estimate :math:`W_1(\mu, \nu)` from samples by training a gradient-penalised critic.

    Maximises :math:`\bar h(y) - \bar h(x) - \lambda\,\mathrm{GP}` with Adam on full batches
    (or random minibatches of ``batch_size``) and returns the penalty-free dual value.

    Args:
        steps: Adam steps. lr: Learning rate. betas: Adam betas.
        hidden, depth, activation, spectral_norm: The critic (see :func:`make_critic`).
        gp_weight: λ of the gradient penalty (0 to rely on spectral normalisation only). The
            default 100 keeps the upward bias of the dual value (about :math:`W_1/(2\lambda)`
            relative, see :func:`gradient_penalty`) below 1 %; WGAN training uses 10.
        one_sided: One-sided penalty (default) or the two-sided WGAN-GP one.
        batch_size: Points per step and side (``None``: all).
        seed: Seed of the weights and of the interpolation / batch draws.
        progress: tqdm bar (shown for runs over a second).
    Example:
        >>> x = torch.zeros(4, 1, dtype=torch.float64)
        >>> KantorovichCritic(steps=5, progress=False)(x, x + 1).history.shape
        torch.Size([5])
    """

    steps: int = 1000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)
    hidden: int = 64
    depth: int = 2
    activation: str = "silu"
    spectral_norm: bool = False
    gp_weight: float = 100.0
    one_sided: bool = True
    batch_size: int | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        check_positive("lr", self.lr)
        if not self.gp_weight >= 0:
            raise ValueError(f"`gp_weight` must be >= 0, got {self.gp_weight!r}.")
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size)

    def __call__(self, x: Tensor, y: Tensor) -> CriticResult:
        """Fit on ``x`` ``(n, d)`` (source) and ``y`` ``(m, d)`` (target); see the class."""
        x, y = as_points("x", x).detach(), as_points("y", y).detach()
        check_same_dtype_device(("x", x), ("y", y))
        check_same_dim(x, y)
        torch.manual_seed(self.seed)
        critic = make_critic(x.shape[1], hidden=self.hidden, depth=self.depth,
                             activation=self.activation, spectral_norm=self.spectral_norm)
        critic = critic.to(dtype=x.dtype, device=x.device)
        opt = torch.optim.Adam(critic.parameters(), lr=self.lr, betas=self.betas)
        gen = torch.Generator().manual_seed(self.seed)
        history = []
        k = min(x.shape[0], y.shape[0]) if self.batch_size is None else self.batch_size
        for _ in tqdm(range(self.steps), desc="critic", delay=1.0, leave=False,
                      disable=not self.progress):
            if self.batch_size is None and x.shape[0] == y.shape[0]:
                # full batch; a random pairing for the interpolates of the penalty
                xi, yi = x, y[torch.randperm(y.shape[0], generator=gen).to(y.device)]
            else:
                xi = x[torch.randint(x.shape[0], (k,), generator=gen).to(x.device)]
                yi = y[torch.randint(y.shape[0], (k,), generator=gen).to(y.device)]
            loss, dual = critic_loss(critic, xi, yi, gp_weight=self.gp_weight,
                                     one_sided=self.one_sided, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(dual)
        critic.eval()
        with torch.no_grad():
            value = kantorovich_dual(critic, x, y)
        t = torch.rand(2000, 1, generator=gen, dtype=x.dtype).to(x.device)
        pts = torch.cat([x, y, t * y[torch.randint(y.shape[0], (2000,), generator=gen)]
                         + (1 - t) * x[torch.randint(x.shape[0], (2000,), generator=gen)]])
        pts.requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(pts).sum(), pts)
        return CriticResult(value=value, critic=critic.requires_grad_(False),
                            history=torch.stack(history),
                            max_grad_norm=float(grad.norm(dim=1).max()))
