r"""Discretisations shared by the energies (:mod:`otgen.gradflows.energies`).

* :class:`Grid`: a regular Cartesian grid; densities on it are tensors of ``grid.shape``
  (mass per volume), with central-difference gradients (:func:`_gradient`).
* Gaussian *blobs* (Carrillo, Craig & Patacchini, 2019): a particle measure
  :math:`\mu = \sum_j w_j\delta_{x_j}` smoothed by :math:`\varphi_h = N(0, h^2 I)`, with
  :math:`\log(\varphi_h * \mu)` (:func:`blob_log_density`) and a bandwidth rule
  (:func:`scott_bandwidth`, :func:`_bandwidth`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from otgen._validate import check_tensor
from otgen.gradflows.potentials import Potential

__all__ = ["Grid", "blob_log_density", "scott_bandwidth"]


# --------------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Grid:
    """A regular Cartesian grid; ``axes[k]`` ``(n_k,)`` are uniformly spaced coordinates.

    Example:
        >>> g = Grid.regular(-1.0, 1.0, 5, dim=2)
        >>> g.shape, g.spacing, g.points().shape
        ((5, 5), (0.5, 0.5), torch.Size([25, 2]))
    """

    axes: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        if not self.axes:
            raise ValueError("`axes` must hold at least one coordinate vector.")
        for k, a in enumerate(self.axes):
            check_tensor(f"axes[{k}]", a)
            if a.ndim != 1 or a.shape[0] < 3:
                raise ValueError(f"`axes[{k}]` must be 1-D with >= 3 points, got shape "
                                 f"{tuple(a.shape)}.")
            d = a[1:] - a[:-1]
            if not bool((d > 0).all()) or float((d - d[0]).abs().max()) > 1e-6 * float(d[0]):
                raise ValueError(f"`axes[{k}]` must be increasing and uniformly spaced.")

    @classmethod
    def regular(cls, lo: float, hi: float, n: int, *, dim: int = 1,
                dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
                ) -> Grid:
        """``n`` points per axis from ``lo`` to ``hi`` (both included), ``dim`` axes."""
        if not hi > lo:
            raise ValueError(f"`hi` must exceed `lo`, got lo={lo}, hi={hi}.")
        ax = torch.linspace(lo, hi, n, dtype=dtype, device=device)
        return cls(tuple(ax for _ in range(dim)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(a.shape[0]) for a in self.axes)

    @property
    def dim(self) -> int:
        return len(self.axes)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(a[1] - a[0]) for a in self.axes)

    @property
    def cell(self) -> float:
        """Cell volume :math:`\\prod_k \\Delta x_k`."""
        return math.prod(self.spacing)

    def points(self) -> Tensor:
        """Grid points in C order (``ij`` indexing), shape ``(prod(shape), dim)``."""
        mesh = torch.meshgrid(*self.axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=1)

    def evaluate(self, fn: Potential) -> Tensor:
        """``fn`` ``(N, d) -> (N,)`` on the grid, reshaped to ``shape``."""
        return fn(self.points()).reshape(self.shape)

    def density(self, logp: Tensor) -> Tensor:
        """Normalise an unnormalised log-density on the grid to a density (mass 1)."""
        logp = logp - torch.logsumexp(logp.reshape(-1), 0) - math.log(self.cell)
        return logp.exp()

    def check(self, name: str, rho: object) -> Tensor:
        """Validate a density ``rho`` of shape ``shape`` (finite, non-negative)."""
        rho = check_tensor(name, rho)
        if tuple(rho.shape) != self.shape:
            raise ValueError(f"`{name}` must have the grid's shape {self.shape}, got "
                             f"{tuple(rho.shape)}; evaluate it on grid.points().")
        if not bool(torch.isfinite(rho).all()) or bool((rho < 0).any()):
            raise ValueError(f"`{name}` must be finite and non-negative.")
        return rho


def _gradient(f: Tensor, grid: Grid) -> Tensor:
    """Central-difference gradient of ``f`` (``grid.shape``) → ``(*grid.shape, dim)``."""
    parts = torch.gradient(f, spacing=list(grid.spacing), dim=list(range(grid.dim)))
    return torch.stack(list(parts), dim=-1)


def _xlogx(p: Tensor, scale: float) -> Tensor:
    """:math:`p\\log(p/\\text{scale})` with :math:`0\\log 0 = 0`."""
    return torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny) / scale),
                       torch.zeros_like(p))


# ------------------------------------------------------------------------------- blobs


def scott_bandwidth(x: Tensor, w: Tensor | None = None) -> float:
    """Scott's rule :math:`h = \\bar s\\, n^{-1/(d+4)}` (mean coordinate std), detached."""
    n, d = x.shape
    s = float(x.detach().std(0).mean()) if n > 1 else 1.0
    return max(s, 1e-12) * n ** (-1.0 / (d + 4))


def _bandwidth(h: float | None, x: Tensor) -> float:
    """The blob width: ``h`` when given, else :func:`scott_bandwidth` of ``x`` ``(n, d)``."""
    return h if h is not None else scott_bandwidth(x)


def blob_log_density(y: Tensor, x: Tensor, w: Tensor, h: float) -> Tensor:
    r""":math:`\log(\varphi_h * \mu)(y)` for :math:`\mu = \sum_j w_j\delta_{x_j}`,
    :math:`\varphi_h = N(0, h^2 I)`; ``y`` ``(m, d)``, ``x`` ``(n, d)``, ``w`` ``(n,)`` →
    ``(m,)`` (log-sum-exp, differentiable in ``y``, ``x``, ``w``)."""
    d = x.shape[1]
    d2 = torch.cdist(y, x).pow(2) if y.shape[0] * x.shape[0] > 0 else y.new_zeros(0)
    logk = -d2 / (2 * h * h) - 0.5 * d * math.log(2 * math.pi * h * h)  # (m, n)
    return torch.logsumexp(logk + torch.log(w)[None, :], dim=1)


def _blob_kernel(y: Tensor, x: Tensor, h: float) -> Tensor:
    d = x.shape[1]
    return torch.exp(-torch.cdist(y, x).pow(2) / (2 * h * h)) / (2 * math.pi * h * h) ** (d / 2)
