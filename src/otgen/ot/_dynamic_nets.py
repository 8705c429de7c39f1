r"""Networks of the least-action solver (:mod:`otgen.ot.dynamic`).

Two parametrisations of the velocity :math:`u(x, t)` of a Benamou--Brenier flow:

* free, :math:`u_\theta(x, t) = \mathrm{MLP}([x, t])` (:class:`VelocityNet`);
* gradient, :math:`u = \nabla_x\varphi_\theta(x, t)` (:class:`GradientField` of a
  :class:`PotentialNet`), the form the first-order optimality condition prescribes.

Shapes: ``t`` a float, 0-d or ``(n,)``; ``x`` ``(n, d)``; velocities ``(n, d)``, potentials
``(n,)``. :func:`_init_` draws the initial weights from a ``torch.Generator`` and zeroes the
last layer, so an untrained flow is the identity (zero action).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from otgen.models.mlp import MLP

__all__ = ["GradientField", "PotentialNet", "VelocityNet"]


def _time_column(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` (a float, 0-d or ``(n,)``) as a column ``(n, 1)`` in ``x``'s dtype/device."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, 1).expand(x.shape[0], 1) if t.numel() == 1 else t.reshape(-1, 1)


class VelocityNet(nn.Module):
    r"""Free velocity :math:`u_\theta(x, t) = \mathrm{MLP}([x, t])`, ``(n, d) -> (n, d)``.

    Args:
        dim: Dimension ``d``; hidden, depth, activation: of the :class:`~otgen.models.MLP`.
    """

    def __init__(self, dim: int, hidden: int = 64, depth: int = 2,
                 activation: str = "silu") -> None:
        super().__init__()
        self.net = MLP(dim + 1, dim, hidden=hidden, depth=depth, activation=activation)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        return self.net(torch.cat([x, _time_column(t, x)], 1))


class PotentialNet(nn.Module):
    r"""Potential :math:`\varphi_\theta(x, t) = \mathrm{MLP}([x, t])`: ``t`` 0-d or
    ``(n,)``, ``x`` ``(n, d)`` -> ``(n,)``. Smooth activations keep
    :math:`\partial_t\varphi` and :math:`\nabla^2\varphi` meaningful."""

    def __init__(self, dim: int, hidden: int = 64, depth: int = 2,
                 activation: str = "silu") -> None:
        super().__init__()
        self.net = MLP(dim + 1, 1, hidden=hidden, depth=depth, activation=activation)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        return self.net(torch.cat([x, _time_column(t, x)], 1))[:, 0]


class GradientField(nn.Module):
    r"""Gradient velocity :math:`u = \nabla_x\varphi(x, t)` of a potential module.

    The gradient is taken by autograd; while grad mode is on it keeps the graph
    (``create_graph``), so a loss on :math:`u` trains :math:`\varphi`'s parameters.
    """

    def __init__(self, potential: nn.Module) -> None:
        super().__init__()
        self.potential = potential

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        train = torch.is_grad_enabled()
        with torch.enable_grad():
            xi = x if x.requires_grad else x.detach().requires_grad_(True)
            phi = self.potential(t, xi)
            (g,) = torch.autograd.grad(phi.sum(), xi, create_graph=train)
        return g


def _init_(module: nn.Module, generator: torch.Generator | None) -> None:
    """PyTorch's default ``Linear`` init drawn from ``generator``; last layer zero, so the
    flow starts at the identity (no motion, zero action)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin in linears:
            bound = 1.0 / math.sqrt(lin.in_features)
            lin.weight.uniform_(-bound, bound, generator=generator)
            if lin.bias is not None:
                lin.bias.uniform_(-bound, bound, generator=generator)
        if linears:
            linears[-1].weight.zero_()
            if linears[-1].bias is not None:
                linears[-1].bias.zero_()
