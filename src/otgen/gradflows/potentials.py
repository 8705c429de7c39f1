r"""Potentials :math:`V(x)` and interaction kernels :math:`W(z)` used by energies and SDEs.

A potential maps points ``(B, d)`` to values ``(B,)``; a kernel maps differences
``(..., d)`` to ``(...)``. Gradients come from autograd (:func:`grad_potential`), so any
differentiable torch function works.

Example:
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> quadratic(x)
    tensor([0.5000, 2.0000])
    >>> grad_potential(quadratic, x)
    tensor([[1., 0.],
            [0., 2.]])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from otgen._validate import check_choice

__all__ = [
    "Potential", "Kernel", "quadratic", "double_well", "zero_potential", "quadratic_kernel",
    "attractive_repulsive_kernel", "grad_potential", "POTENTIALS", "KERNELS", "get_potential",
    "get_kernel",
]

Potential = Callable[[Tensor], Tensor]
Kernel = Callable[[Tensor], Tensor]


def quadratic(x: Tensor) -> Tensor:
    r""":math:`V(x) = \tfrac12|x|^2`, so :math:`\pi \propto e^{-V} = N(0, I)`.
    ``(B, d) -> (B,)``."""
    return 0.5 * (x * x).sum(-1)


def double_well(x: Tensor) -> Tensor:
    r"""Double well along the first axis, quadratic in the others:
    :math:`V(x) = (x_1^2 - 1)^2 + \tfrac12\sum_{j \ge 2} x_j^2` (minima at
    :math:`x_1 = \pm 1`, barrier height 1). ``(B, d) -> (B,)``."""
    v = (x[..., 0] ** 2 - 1.0) ** 2
    if x.shape[-1] > 1:
        v = v + 0.5 * (x[..., 1:] ** 2).sum(-1)
    return v


def zero_potential(x: Tensor) -> Tensor:
    """:math:`V = 0` (free diffusion). ``(B, d) -> (B,)``."""
    return x.new_zeros(x.shape[:-1])


def quadratic_kernel(z: Tensor) -> Tensor:
    r"""Attractive :math:`W(z) = \tfrac12|z|^2`: the interaction flow contracts every point
    towards the mean, :math:`\dot x = -(x - \bar x)`. ``(..., d) -> (...)``."""
    return 0.5 * (z * z).sum(-1)


def attractive_repulsive_kernel(z: Tensor) -> Tensor:
    r""":math:`W(z) = \tfrac14|z|^4 - \tfrac12|z|^2` (repulsive at short, attractive at
    long range; the particles settle on a ring). ``(..., d) -> (...)``."""
    r2 = (z * z).sum(-1)
    return 0.25 * r2 * r2 - 0.5 * r2


def grad_potential(v: Potential, x: Tensor) -> Tensor:
    r""":math:`\nabla V(x)` by autograd, ``(B, d) -> (B, d)``; differentiable (graph kept)
    when ``x`` requires grad, otherwise detached."""
    keep = x.requires_grad and torch.is_grad_enabled()
    with torch.enable_grad():
        xx = x if keep else x.detach().requires_grad_(True)
        val = v(xx).sum()
        if not val.requires_grad:  # V does not depend on x (e.g. zero_potential)
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(val, xx, create_graph=keep, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


#: potentials by CLI name
POTENTIALS: dict[str, Potential] = {
    "quadratic": quadratic, "double-well": double_well, "none": zero_potential}
#: interaction kernels by CLI name
KERNELS: dict[str, Kernel] = {
    "quadratic": quadratic_kernel, "attractive-repulsive": attractive_repulsive_kernel}


def get_potential(name: str) -> Potential:
    """Potential by name (one of :data:`POTENTIALS`)."""
    return POTENTIALS[check_choice("potential", name, tuple(POTENTIALS))]


def get_kernel(name: str) -> Kernel:
    """Interaction kernel by name (one of :data:`KERNELS`)."""
    return KERNELS[check_choice("kernel", name, tuple(KERNELS))]
