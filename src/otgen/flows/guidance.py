r"""Classifier-free guidance for conditional flows (Ho & Salimans 2022, in velocity form).

A network trained with label dropout (:class:`~otgen.flows.conditional.ConditionalFlowMatcher`)
gives both the conditional field :math:`v(t, x, c)` and the unconditional one
:math:`v(t, x, \varnothing)`. Guidance with scale :math:`w` samples with

.. math::
    v_w(t, x) = v(t, x, \varnothing) + w\,\big(v(t, x, c) - v(t, x, \varnothing)\big),

so :math:`w = 0` is the unconditional model, :math:`w = 1` the conditional one and
:math:`w > 1` extrapolates away from the unconditional field. For Gaussian paths the
velocity is affine in the score, :math:`v = a_t x + b_t \nabla \log p_t`, so :math:`v_w` is
the field of the score :math:`(1-w)\nabla\log p_t(x) + w\nabla\log p_t(x\mid c)`, i.e. of the
tilted density :math:`p_t(x)^{1-w} p_t(x \mid c)^w` at each time (not, in general, a flow
between the source and that tilted target).

For :math:`w \notin \{0, 1\}` both fields are needed: they are computed in **one**
batched forward pass of size ``2B``, so one field evaluation costs two network rows per
sample; :attr:`ClassifierFreeGuidance.network_rows` counts them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from otgen.ode import integrate
from otgen.ode.result import ODEResult

__all__ = ["ClassifierFreeGuidance", "guided_sample"]


class ClassifierFreeGuidance(nn.Module):
    r"""The guided field :math:`v_w(t, x) = v(t,x,\varnothing) + w (v(t,x,c) - v(t,x,\varnothing))`.

    Args:
        model: Network ``model(t, x, c)`` with ``c`` int64 ``(B,)`` and a null class.
        labels: Requested classes, int64 ``(B,)`` (or a Python int for all rows).
        scale: Guidance scale :math:`w` (finite; 0 unconditional, 1 conditional).
        null_class: Index of ∅ (default ``model.null_class``).

    Shapes:
        ``t``: 0-d or ``(B,)``; ``x``: ``(B, *D)``; output ``(B, *D)``.
    Raises:
        ValueError: non-finite scale, labels not matching the batch (at call time).
    Example:
        >>> from otgen.models import ConvVectorField
        >>> net = ConvVectorField((1, 8, 8), n_classes=10, width=8)
        >>> v = ClassifierFreeGuidance(net, 3, 2.0)
        >>> v(torch.tensor(0.5), torch.zeros(4, 64)).shape
        torch.Size([4, 64])
    """

    def __init__(self, model: nn.Module, labels: Tensor | int, scale: float,
                 null_class: int | None = None) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int | float) or \
                not math.isfinite(scale):
            raise ValueError(f"`scale` (guidance) must be a finite number, got {scale!r}.")
        self.model = model
        self.scale = float(scale)
        null = getattr(model, "null_class", None) if null_class is None else null_class
        if not isinstance(null, int):
            raise ValueError("`null_class` is required when the model has no `null_class` "
                             "attribute.")
        self.null_class = null
        self.labels = labels
        self.network_rows = 0

    def _labels(self, b: int, device: torch.device) -> Tensor:
        if isinstance(self.labels, int):
            return torch.full((b,), self.labels, dtype=torch.long, device=device)
        y = self.labels
        if y.shape != (b,):
            raise ValueError(f"`labels` must have shape ({b},) to match the batch, got "
                             f"{tuple(y.shape)}.")
        return y.to(device)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        b = x.shape[0]
        c = self._labels(b, x.device)
        w = self.scale
        if w == 1.0:
            self.network_rows += b
            return self.model(t, x, c)
        null = torch.full_like(c, self.null_class)
        if w == 0.0:
            self.network_rows += b
            return self.model(t, x, null)
        tt = t if t.ndim == 0 else torch.cat([t, t])
        out = self.model(tt, torch.cat([x, x]), torch.cat([c, null]))  # (2B, *D)
        self.network_rows += 2 * b
        v_c, v_u = out[:b], out[b:]
        return v_u + w * (v_c - v_u)


def guided_sample(model: nn.Module, x0: Tensor, labels: Tensor | int, scale: float, *,
                  method: str = "dopri5", steps: int | None = None, atol: float = 1e-5,
                  rtol: float = 1e-5, null_class: int | None = None
                  ) -> tuple[Tensor, ODEResult, int]:
    """Integrate the guided field from noise ``x0`` ``(B, *D)`` at t = 0 to t = 1.

    Returns:
        ``(x1, result, network_rows)``: samples ``(B, *D)``, the :class:`ODEResult`
        (``nfe`` = field evaluations) and the number of network rows evaluated (``nfe · B``
        for ``w`` in {0, 1}, ``2 nfe · B`` otherwise).
    """
    field = ClassifierFreeGuidance(model, labels, scale, null_class)
    kw: dict[str, Any] = {"atol": atol, "rtol": rtol} if method == "dopri5" else \
        {"steps": steps}
    res = integrate(field, x0, method=method, **kw)
    x1 = res.x
    if isinstance(x1, tuple):
        raise TypeError("internal: sampling state must be a tensor")
    return x1, res, field.network_rows
