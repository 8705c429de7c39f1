"""Leaf-wise arithmetic on ODE states.

A *state* is a tensor ``x`` of shape ``(B, *D)`` or a tuple of such tensors, e.g. the
CNF state ``(x, logp)`` with shapes ``((B, d), (B,))``. Runge--Kutta combinations act on
every leaf alike, and the adaptive error norm pools all leaves (Hairer, Nørsett & Wanner,
*Solving ODEs I*, II.4; torchdiffeq does the same after flattening a tuple state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

__all__ = [
    "State", "VectorField", "leaves", "rebuild", "tree_map", "axpy", "scaled_sum",
    "rms_error", "rms",
]

#: An ODE state: a tensor or a tuple of tensors (leaves).
State: TypeAlias = Tensor | tuple[Tensor, ...]
#: A vector field ``v(t, y)``: ``t`` a 0-d tensor (or a float in the pure step functions),
#: ``y`` a state; returns a state of the same structure and shapes.
VectorField: TypeAlias = Callable[[Any, Any], Any]


def leaves(y: State) -> tuple[Tensor, ...]:
    """The tensors of a state, as a tuple (a bare tensor gives a 1-tuple)."""
    return (y,) if isinstance(y, Tensor) else tuple(y)


def rebuild(like: State, parts: Sequence[Tensor]) -> State:
    """Put ``parts`` back into the structure of ``like`` (tensor or tuple)."""
    return parts[0] if isinstance(like, Tensor) else tuple(parts)


def tree_map(fn: Callable[..., Tensor], *states: State) -> State:
    """Apply ``fn`` leaf-wise to states of one structure: ``fn(y1_i, y2_i, ...)``."""
    if isinstance(states[0], Tensor):
        return fn(*states)
    return tuple(fn(*ls) for ls in zip(*states, strict=True))


def axpy(y: State, dt: float, coeffs: Sequence[float], ks: Sequence[State]) -> State:
    r"""Runge--Kutta combination :math:`y + \Delta t \sum_j c_j k_j`, leaf-wise.

    Zero coefficients are skipped, so a sparse Butcher row costs nothing extra.

    Args:
        y: State, leaves of shape ``(B, *D)``.
        dt: Step size (may be negative when integrating backward in time).
        coeffs: Weights ``c_j`` (plain floats).
        ks: Stage derivatives ``k_j``, same structure and shapes as ``y``.
    Returns:
        New state of the same structure, dtype and device; differentiable in ``y`` and
        every ``k_j``.
    """
    pairs = [(c, k) for c, k in zip(coeffs, ks, strict=True) if c != 0.0]

    def one(y_leaf: Tensor, *k_leaves: Tensor) -> Tensor:
        acc = k_leaves[0] * pairs[0][0]
        for (c, _), k in zip(pairs[1:], k_leaves[1:], strict=True):
            acc = acc + k * c
        return y_leaf + acc * dt

    if not pairs:
        return y
    return tree_map(one, y, *(k for _, k in pairs))


def rms_error(err: State, y0: State, y1: State, atol: float, rtol: float) -> float:
    r"""Scaled RMS error norm of an embedded Runge--Kutta pair (Hairer's ``err``).

    .. math::
        \mathrm{err} = \sqrt{\frac{1}{N} \sum_i
            \Big(\frac{e_i}{\mathrm{atol} + \mathrm{rtol}\,\max(|y_{0,i}|, |y_{1,i}|)}\Big)^2}

    where ``i`` runs over all ``N`` entries of all leaves (batch included, so one step size
    serves the whole batch). A step is accepted when ``err <= 1``. Computed without
    autograd; returns a Python float (one host sync), ``inf`` if anything is non-finite.

    Args:
        err: Error estimate, same structure as ``y0``.
        y0: State at the start of the step.
        y1: Proposed state at the end of the step.
        atol: Absolute tolerance > 0.
        rtol: Relative tolerance >= 0.
    """
    parts = []
    count = 0
    with torch.no_grad():
        for e, a, b in zip(leaves(err), leaves(y0), leaves(y1), strict=True):
            scale = atol + rtol * torch.maximum(a.abs(), b.abs())
            parts.append(((e / scale) ** 2).sum(dtype=torch.float64))
            count += e.numel()
    return _finish(parts, count)


def rms(y: State, scale_like: State, atol: float, rtol: float) -> float:
    r"""RMS norm of ``y`` weighted by ``atol + rtol |scale_like|`` (for initial-step choice)."""
    parts = []
    count = 0
    with torch.no_grad():
        for v, s in zip(leaves(y), leaves(scale_like), strict=True):
            parts.append(((v / (atol + rtol * s.abs())) ** 2).sum(dtype=torch.float64))
            count += v.numel()
    return _finish(parts, count)


def _finish(parts: list[Tensor], count: int) -> float:
    """``sqrt(sum(parts) / count)`` as a float with one host sync; ``inf`` if non-finite."""
    if count == 0:
        return 0.0
    total = float(torch.stack(parts).sum())  # leaves share one device (checked upstream)
    return math.sqrt(total / count) if math.isfinite(total) else math.inf


def scaled_sum(dt: float, coeffs: Sequence[float], ks: Sequence[State]) -> State:
    r""":math:`\Delta t \sum_j c_j k_j` leaf-wise (zero weights skipped; at least one nonzero)."""
    pairs = [(c, k) for c, k in zip(coeffs, ks, strict=True) if c != 0.0]

    def one(*k_leaves: Tensor) -> Tensor:
        acc = k_leaves[0] * (pairs[0][0] * dt)
        for (c, _), k in zip(pairs[1:], k_leaves[1:], strict=True):
            acc = acc + k * (c * dt)
        return acc

    return tree_map(one, *(k for _, k in pairs))
