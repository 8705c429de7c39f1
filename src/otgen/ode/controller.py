r"""Step-size control for embedded Runge--Kutta pairs: PI / I controller and first step.

Given the scaled error norm ``err`` of a step (accept iff ``err <= 1``, see
:func:`otgen.ode._tree.rms_error`), the next step is :math:`h_{new} = h \cdot \mathrm{fac}`
with the PI rule of Gustafsson as written in Hairer's ``DOPRI5``
(Hairer & Wanner, *Solving ODEs II*, IV.2, and *Solving ODEs I*, II.4):

.. math::
    \mathrm{fac} = \mathrm{clip}\Big(\mathrm{safety}\cdot \mathrm{err}_n^{-\alpha}\,
        \mathrm{err}_{n-1}^{\beta},\ \mathrm{min\_factor},\ \mathrm{max\_factor}\Big),
    \qquad \alpha = \frac{1}{q + 1} - 0.75\,\beta,

where ``q`` is the order of the embedded (lower-order) solution, :math:`\mathrm{err}_{n-1}`
the error of the last accepted step (floored at 1e-4). ``beta = 0`` is the classic
I controller :math:`\mathrm{fac} = \mathrm{safety}\cdot\mathrm{err}^{-1/(q+1)}` used by
torchdiffeq. After a rejection only the I part is used and the step may not grow on the
next attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from otgen._validate import check_positive
from otgen.ode._tree import State, VectorField, axpy, rms, tree_map

__all__ = ["PIController", "pi_factor", "initial_step"]


def pi_factor(
    err: float,
    err_prev: float,
    *,
    accepted: bool,
    order: int,
    safety: float,
    min_factor: float,
    max_factor: float,
    beta: float,
) -> float:
    r"""Multiplicative change of the step size after a step with scaled error ``err``.

    Args:
        err: Scaled RMS error of the step just attempted (``inf`` for a non-finite step).
        err_prev: Scaled error of the last accepted step (use 1.0 before the first).
        accepted: Whether the step was accepted (``err <= 1``).
        order: Order ``q`` of the embedded error estimator (4 for Dopri5).
        safety: Safety factor in (0, 1].
        min_factor: Smallest factor (< 1).
        max_factor: Largest factor (> 1).
        beta: PI exponent on the previous error; 0 gives the I controller.
    Returns:
        The factor ``fac``; the next step is ``h * fac``.
    """
    if not math.isfinite(err):
        return min_factor
    alpha = 1.0 / (order + 1) - 0.75 * beta
    if err == 0.0:
        return max_factor if accepted else min_factor
    i_part = safety * err ** (-alpha)
    if not accepted:
        return max(min_factor, min(1.0, i_part))
    fac = i_part * max(err_prev, 1e-4) ** beta
    return min(max_factor, max(min_factor, fac))


@dataclass(frozen=True)
class PIController:
    """Proportional-integral step-size controller (``beta=0``: integral / I controller).

    Attributes:
        safety: Safety factor applied to the optimal step (Hairer: 0.9).
        min_factor: Largest shrink per step (the step is multiplied by at least this).
        max_factor: Largest growth per step.
        beta: Weight of the previous error; 0 (default) is the I controller, torchdiffeq's
            rule, so NFE counts compare with published torchdiffeq figures; 0.04 is
            Hairer's DOPRI5 PI setting (a little more accurate per step, more steps).
    Example:
        >>> PIController(beta=0.0).factor(0.5, 1.0, accepted=True, order=4)  # 0.9 * 0.5**-0.2
        1.0338...
    """

    safety: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 10.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        check_positive("safety", self.safety)
        check_positive("min_factor", self.min_factor)
        check_positive("max_factor", self.max_factor)
        if self.safety > 1.0:
            raise ValueError(
                f"`safety` must be in (0, 1], got {self.safety!r}; use e.g. 0.9."
            )
        if not self.min_factor < 1.0 < self.max_factor:
            raise ValueError(
                f"need `min_factor` < 1 < `max_factor`, got {self.min_factor!r} and "
                f"{self.max_factor!r}; use e.g. min_factor=0.2, max_factor=10.0."
            )
        if not 0.0 <= self.beta < 0.2:
            raise ValueError(
                f"`beta` must be in [0, 0.2), got {self.beta!r}; use 0.04 (PI) or 0 (I)."
            )

    def factor(self, err: float, err_prev: float, *, accepted: bool, order: int) -> float:
        """Step-size factor for this controller; see :func:`pi_factor`."""
        return pi_factor(
            err, err_prev, accepted=accepted, order=order, safety=self.safety,
            min_factor=self.min_factor, max_factor=self.max_factor, beta=self.beta,
        )


def initial_step(
    field: VectorField,
    t0: float,
    y0: State,
    f0: State,
    direction: float,
    *,
    order: int,
    atol: float,
    rtol: float,
) -> float:
    r"""Hairer's starting step size (*Solving ODEs I*, II.4, algorithm ``HINIT``).

    With :math:`\|\cdot\|` the RMS norm weighted by :math:`\mathrm{atol} + \mathrm{rtol}|y_0|`:
    :math:`d_0 = \|y_0\|`, :math:`d_1 = \|f_0\|`, :math:`h_0 = 0.01\, d_0 / d_1` (or 1e-6
    if either is tiny); one explicit Euler step gives
    :math:`d_2 = \|f(t_0 + h_0, y_0 + h_0 f_0) - f_0\| / h_0`, and
    :math:`h_1 = (0.01 / \max(d_1, d_2))^{1/(q+1)}`; the result is :math:`\min(100 h_0, h_1)`.
    Costs one evaluation of ``field``.

    Args:
        field: Vector field ``field(t, y)`` (``t`` a float).
        t0: Start time.
        y0: Initial state, leaves ``(B, *D)``.
        f0: ``field(t0, y0)``.
        direction: +1.0 forward in time, -1.0 backward.
        order: Order ``q`` of the method's error estimator (4 for Dopri5).
        atol: Absolute tolerance.
        rtol: Relative tolerance.
    Returns:
        Positive step size (multiply by ``direction`` to step).
    """
    d0 = rms(y0, y0, atol, rtol)
    d1 = rms(f0, y0, atol, rtol)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    with torch.no_grad():
        y1 = axpy(y0, direction * h0, [1.0], [f0])
        f1 = field(t0 + direction * h0, y1)
        d2 = rms(tree_map(lambda a, b: a - b, f1, f0), y0, atol, rtol) / h0
    big = max(d1, d2)
    if not math.isfinite(big):
        return h0
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1.0 / (order + 1))
    return min(100.0 * h0, h1)
