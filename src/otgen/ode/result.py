"""Result and failure types of :func:`otgen.ode.integrate`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from otgen.ode._tree import State

__all__ = [
    "ODEResult", "IntegrationError", "StepSizeUnderflowError", "MaxStepsExceeded",
    "IntegrationWarning",
]


class IntegrationError(RuntimeError):
    """An ODE solve could not reach ``t1`` (base of the specific failures below)."""


class StepSizeUnderflowError(IntegrationError):
    """The adaptive step shrank below what the time variable can resolve (``t + dt == t``
    in the state's precision); typically a finite-time blow-up or a discontinuous field."""


class MaxStepsExceeded(IntegrationError):
    """The adaptive solver attempted ``max_steps`` steps without reaching ``t1``."""


class IntegrationWarning(RuntimeWarning):
    """Emitted when ``integrate(..., strict=False)`` returns with ``success=False``."""


@dataclass(frozen=True)
class ODEResult:
    r"""Outcome of :func:`otgen.ode.integrate`; the same type for every method and flag.

    Attributes:
        x: State at ``t_final`` (``t1`` on success): a tensor ``(B, *D)`` or a tuple of
            tensors, like ``x0``; differentiable with respect to ``x0`` and the field's
            parameters (backpropagation through the unrolled solver).
        xs: Trajectory at the requested times, shape ``(T, B, *D)`` (a tuple of such for a
            tuple state), or ``None`` when no ``t_eval`` was given. After a failure with
            ``strict=False`` only the times reached are recorded (``T`` may be smaller).
        ts: The times of ``xs``, shape ``(T,)`` (the caller's ``t_eval``, cut like ``xs``),
            or ``None``.
        nfe: Number of evaluations of the vector field.
        n_accepted: Accepted steps (every step for fixed-step methods).
        n_rejected: Rejected steps (always 0 for fixed-step methods).
        success: Whether the solve reached ``t1``.
        t_final: Time of ``x``.
        method: Name of the stepper used.
        message: Why the solve stopped early (empty on success).
    """

    x: State
    xs: State | None
    ts: Tensor | None
    nfe: int
    n_accepted: int
    n_rejected: int
    success: bool
    t_final: float
    method: str = ""
    message: str = ""

    @property
    def n_steps(self) -> int:
        """Attempted steps, accepted plus rejected."""
        return self.n_accepted + self.n_rejected
