r"""Time embeddings for vector fields ``v(t, x)``.

The sinusoidal embedding is the transformer / DDPM one (Vaswani et al. 2017; Ho et al.
2020, ``timestep_embedding`` in guided-diffusion): for ``dim`` features, ``h = dim // 2``
frequencies

    ω_k = max_period^(-k / h),   k = 0, …, h - 1,

and, with the time first multiplied by ``scale`` (1000 by default, so that t ∈ [0, 1]
covers the range of DDPM's integer steps),

    e(t) = [cos(scale · t · ω₀), …, cos(scale · t · ω_{h-1}),
            sin(scale · t · ω₀), …, sin(scale · t · ω_{h-1})]   (+ one zero if dim is odd).

So e(0) = [1, …, 1, 0, …, 0], and feature k is periodic in t with period
2π / (scale · ω_k); the fastest one (k = 0) has period 2π / scale.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from otgen._validate import check_int, check_positive, check_tensor

__all__ = ["SinusoidalTimeEmbedding", "sinusoidal_embedding", "expand_time"]


def expand_time(t: object, batch: int, like: Tensor) -> Tensor:
    """Turn a time ``t`` into a ``(batch,)`` tensor with the dtype and device of ``like``.

    Args:
        t: A Python number, a 0-d tensor (one time for the whole batch) or a ``(batch,)``
            tensor (one time per row).
        batch: Batch size ``B``.
        like: Tensor whose dtype and device the result takes.
    Returns:
        Tensor of shape ``(batch,)``.
    Raises:
        TypeError: ``t`` is neither a number nor a tensor.
        ValueError: ``t`` has a shape other than ``()`` or ``(batch,)``.
    Example:
        >>> expand_time(0.5, 3, torch.zeros(3, 2))
        tensor([0.5000, 0.5000, 0.5000])
    """
    if isinstance(t, int | float) and not isinstance(t, bool):
        return torch.full((batch,), float(t), dtype=like.dtype, device=like.device)
    if not isinstance(t, Tensor):
        raise TypeError(
            f"`t` must be a float or a tensor of shape () or ({batch},), got "
            f"{type(t).__name__}; pass e.g. torch.tensor(0.5)."
        )
    if t.ndim == 0:
        return t.to(dtype=like.dtype, device=like.device).expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"`t` must have shape () or ({batch},) to match the batch, got {tuple(t.shape)}; "
            f"use t.reshape(-1) for a (B, 1) tensor or one time per row of `x`."
        )
    return t.to(dtype=like.dtype, device=like.device)


def sinusoidal_embedding(
    t: Tensor, dim: int, *, max_period: float = 10000.0, scale: float = 1000.0
) -> Tensor:
    r"""Sinusoidal features of times ``t`` (see the module docstring for the formula).

    Args:
        t: Times, shape ``(B,)``, floating.
        dim: Number of features, >= 2.
        max_period: Longest period parameter (sets the lowest frequency 1 / max_period
            for ``scale · t``).
        scale: Factor applied to ``t`` first.
    Returns:
        Tensor of shape ``(B, dim)``, dtype and device of ``t``.
    Example:
        >>> sinusoidal_embedding(torch.zeros(1), 4)
        tensor([[1., 1., 0., 0.]])
    """
    half = dim // 2
    k = torch.arange(half, dtype=t.dtype, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)  # (h,)
    args = (scale * t)[:, None] * freqs[None, :]  # (B, h)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2h)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=1)
    return emb


class SinusoidalTimeEmbedding(nn.Module):
    r"""Module form of :func:`sinusoidal_embedding` (no parameters).

    Args:
        dim: Number of features, >= 2.
        max_period: Longest period parameter, > 0 (10000 as in transformers).
        scale: Factor applied to ``t`` before the features, > 0 (1000: t ∈ [0, 1] is read
            like DDPM's step index).

    Shapes:
        ``t``: a float, a 0-d tensor (→ ``B = 1``) or ``(B,)``; output ``(B, dim)``.

    Example:
        >>> emb = SinusoidalTimeEmbedding(8)
        >>> emb(torch.tensor([0.0, 0.5])).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=2)
        self.max_period = check_positive("max_period", max_period)
        self.scale = check_positive("scale", scale)

    def forward(self, t: Tensor | float) -> Tensor:
        if isinstance(t, int | float) and not isinstance(t, bool):
            t = torch.tensor([float(t)])
        t = check_tensor("t", t)
        if t.ndim == 0:
            t = t.reshape(1)
        if t.ndim != 1:
            raise ValueError(
                f"`t` must have shape () or (B,), got {tuple(t.shape)}; use t.reshape(-1)."
            )
        return sinusoidal_embedding(t, self.dim, max_period=self.max_period, scale=self.scale)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, scale={self.scale:g}"
