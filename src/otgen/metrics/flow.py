r"""Diagnostics of a learned flow: kinetic energy of its paths, straightness, NPE, and the
distance of its map to the Bures (Brenier) map between Gaussians.

Path energy of the flow from samples :math:`x_0`:
:math:`E = \mathbb E\int_0^1 |v(t, x_t)|^2 dt`, integrated exactly with the trajectory as
the extra ODE component :math:`\dot e = |v|^2`. By Benamou–Brenier,
:math:`E \ge W_2^2(p_0, p_1)` with equality for the OT flow, so the normalised path energy
:math:`\mathrm{NPE} = |E - W_2^2(x_0, x_1)| / W_2^2(x_0, x_1)` (Tong et al. 2023), with
:math:`x_1` the flow's endpoints, measures how far the flow is from optimal transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from otgen.ode import integrate
from otgen.ot import bures_map, wasserstein

__all__ = ["FlowStats", "path_energy", "bures_map_error"]


@dataclass(frozen=True)
class FlowStats:
    """``x1`` ``(B, *D)`` endpoints; ``energy`` :math:`E`; ``w2sq`` exact
    :math:`W_2^2(x_0, x_1)`; ``npe``; ``straightness`` :math:`E - \\mathbb E|x_1 - x_0|^2`
    (0 for straight paths); ``nfe`` of the solve."""

    x1: Tensor
    energy: float
    w2sq: float
    npe: float
    straightness: float
    nfe: int


def path_energy(
    field: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *, method: str = "dopri5",
    steps: int | None = None, atol: float = 1e-5, rtol: float = 1e-5,
) -> FlowStats:
    """Integrate ``x0`` ``(B, *D)`` to t = 1 with the kinetic energy alongside."""

    def aug(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, _ = state
        v = field(t, x)
        return v, (v * v).reshape(v.shape[0], -1).sum(1)

    with torch.no_grad():
        res = integrate(aug, (x0, x0.new_zeros(x0.shape[0])), method=method, steps=steps,
                        atol=atol, rtol=rtol)
    x1, e = res.x
    flat0, flat1 = x0.reshape(x0.shape[0], -1).double(), x1.reshape(x1.shape[0], -1).double()
    w2sq = float(wasserstein(flat0, flat1) ** 2)
    energy = float(e.double().mean())
    chord = float(((flat1 - flat0) ** 2).sum(1).mean())
    npe = abs(energy - w2sq) / w2sq if w2sq > 0 else float("nan")
    return FlowStats(x1=x1, energy=energy, w2sq=w2sq, npe=npe, straightness=energy - chord,
                     nfe=res.nfe)


def bures_map_error(x0: Tensor, x1: Tensor, m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor
                    ) -> float:
    r""":math:`\mathbb E|T_{flow}(x_0) - T_{Bures}(x_0)|^2` over samples, for a flow between
    Gaussians; ``x0``, ``x1 = T_flow(x0)`` ``(B, d)``."""
    T = bures_map(m0.double(), S0.double(), m1.double(), S1.double())
    return float(((x1.double() - T(x0.double())) ** 2).sum(1).mean())
