"""Decoders with known geometry shared by the geometry tests."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor


def sphere(u: Tensor) -> Tensor:
    """Inverse stereographic projection R^2 -> S^2 (from the north pole)."""
    r2 = u.square().sum(-1, keepdim=True)
    return torch.cat([2 * u, r2 - 1], dim=-1) / (1 + r2)


def great_circle(z0: Tensor, z1: Tensor) -> Tensor:
    return torch.arccos((sphere(z0) * sphere(z1)).sum(-1).clamp(-1, 1))


def disk_points(n: int, g: torch.Generator, radius: float = 0.95) -> Tensor:
    """Uniform points in a disk (the southern hemisphere: geodesics stay inside)."""
    a = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    r = radius * torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    return torch.stack([r * a.cos(), r * a.sin()], 1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest and leaves the other core to xdist's worker."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
