r"""Explicit Runge--Kutta steppers: pure step functions and frozen configuration objects.

Each method advances :math:`\dot y = v(t, y)` by one step :math:`t \to t + \Delta t`
(:math:`\Delta t < 0` integrates backward). States are tensors ``(B, *D)`` or tuples of
them (see :mod:`otgen.ode._tree`); every combination is out of place, so autograd flows
through the steps (backpropagation is by unrolling the solver; no adjoint).

========== ===== ==================================================================
method     order update
========== ===== ==================================================================
Euler      1     :math:`y + h k_1`
Heun       2     :math:`y + \tfrac h2 (k_1 + k_2)`, :math:`k_2 = v(t+h, y + h k_1)`
Midpoint   2     :math:`y + h\, v(t + \tfrac h2, y + \tfrac h2 k_1)`
RK4        4     :math:`y + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)` (classic)
Dopri5     5(4)  Dormand--Prince pair, FSAL, embedded 4th-order error estimate
========== ===== ==================================================================

with :math:`k_1 = v(t, y)`. The step functions (``euler_step``, ...) take any ``t`` that
supports ``t + float`` (a float or a 0-d tensor) and pass it to ``field`` unchanged in kind.
The stepper classes only hold configuration; :func:`otgen.ode.integrate` drives them.

Example:
    >>> import torch
    >>> x = torch.ones(1, 1, dtype=torch.float64)
    >>> rk4_step(lambda t, x: -x, 0.0, x, 0.1)  # exp(-0.1) = 0.904837418...
    tensor([[0.9048]], dtype=torch.float64)
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from otgen._validate import check_int, check_positive, check_positive_or_none
from otgen.ode._checks import check_nonnegative
from otgen.ode._tree import State, VectorField, axpy, scaled_sum
from otgen.ode.controller import PIController

__all__ = [
    "AbstractStepper", "AbstractAdaptiveStepper", "Euler", "Heun", "Midpoint", "RK4",
    "Dopri5", "euler_step", "heun_step", "midpoint_step", "rk4_step", "dopri5_step",
    "get_stepper", "STEPPERS",
]

# --------------------------------------------------------------------------- pure steps


def euler_step(field: VectorField, t: Any, y: State, dt: float) -> State:
    """Explicit Euler: ``y + dt * v(t, y)`` (1 evaluation, order 1)."""
    return axpy(y, dt, [1.0], [field(t, y)])


def heun_step(field: VectorField, t: Any, y: State, dt: float) -> State:
    """Heun / explicit trapezoid: ``y + dt/2 (k1 + k2)`` (2 evaluations, order 2)."""
    k1 = field(t, y)
    k2 = field(t + dt, axpy(y, dt, [1.0], [k1]))
    return axpy(y, dt, [0.5, 0.5], [k1, k2])


def midpoint_step(field: VectorField, t: Any, y: State, dt: float) -> State:
    """Explicit midpoint: ``y + dt v(t + dt/2, y + dt/2 k1)`` (2 evaluations, order 2)."""
    k1 = field(t, y)
    k2 = field(t + 0.5 * dt, axpy(y, dt, [0.5], [k1]))
    return axpy(y, dt, [1.0], [k2])


def rk4_step(field: VectorField, t: Any, y: State, dt: float) -> State:
    """Classic 4-stage Runge--Kutta (4 evaluations, order 4)."""
    k1 = field(t, y)
    k2 = field(t + 0.5 * dt, axpy(y, dt, [0.5], [k1]))
    k3 = field(t + 0.5 * dt, axpy(y, dt, [0.5], [k2]))
    k4 = field(t + dt, axpy(y, dt, [1.0], [k3]))
    return axpy(y, dt, [1 / 6, 1 / 3, 1 / 3, 1 / 6], [k1, k2, k3, k4])


# Dormand & Prince (1980) tableau: nodes C, stage rows A, 5th-order weights B5 (= the last
# stage row, hence FSAL), and E = B5 - B4 (embedded 4th-order weights, 7 stages).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _dopri5_stages(
    field: VectorField, t: Any, y: State, dt: float, k1: State | None
) -> tuple[State, list[State]]:
    """The 6 stages and the 5th-order solution; returns ``(y5, [k1, ..., k6])``."""
    ks = [field(t, y) if k1 is None else k1]
    for i in range(1, 6):
        ks.append(field(t + _C[i] * dt, axpy(y, dt, _A[i], ks)))
    return axpy(y, dt, _B5, ks), ks


def dopri5_step(
    field: VectorField, t: Any, y: State, dt: float, k1: State | None = None
) -> tuple[State, State, State]:
    r"""One Dormand--Prince 5(4) step with its embedded error estimate.

    Args:
        field: Vector field ``v(t, y)``.
        t: Start time (float or 0-d tensor).
        y: State, leaves ``(B, *D)``.
        dt: Step (negative for backward integration).
        k1: ``v(t, y)`` if already known (first-same-as-last from the previous step);
            evaluated here when ``None``.
    Returns:
        ``(y5, err, k7)``: the 5th-order solution at ``t + dt`` (differentiable), the
        error estimate :math:`y_5 - y_4 = \Delta t \sum_j E_j k_j` (no autograd graph), and
        :math:`k_7 = v(t + \Delta t, y_5)`, which is ``k1`` of the next step. Costs 6
        evaluations when ``k1`` is given, 7 otherwise.
    """
    y5, ks = _dopri5_stages(field, t, y, dt, k1)
    k7 = field(t + dt, y5)
    with torch.no_grad():
        err = scaled_sum(dt, _E, [*ks, k7])
    return y5, err, k7


# ------------------------------------------------------------------------ configuration


class AbstractStepper(abc.ABC):
    """Interface of a one-step method; concrete steppers are final frozen dataclasses.

    Class attributes:
        name: Lower-case name accepted by ``integrate(method=...)``.
        order: Convergence order ``p`` (global error :math:`O(h^p)`).
        adaptive: ``True`` for embedded pairs driven by a step-size controller.
    """

    name: ClassVar[str]
    order: ClassVar[int]
    adaptive: ClassVar[bool] = False

    @abc.abstractmethod
    def step(self, field: VectorField, t: Any, y: State, dt: float) -> State:
        """Advance ``y`` from ``t`` to ``t + dt``; returns a state like ``y``."""


class AbstractAdaptiveStepper(AbstractStepper):
    """Interface of an embedded Runge--Kutta pair with error control.

    Concrete subclasses carry ``atol``, ``rtol``, ``max_steps``, ``controller`` and
    ``first_step`` and implement :meth:`step_with_error`.

    Class attributes:
        error_order: Order ``q`` of the embedded solution (sets the controller exponent).
        fsal: Whether the last stage equals the first stage of the next step.
    """

    adaptive: ClassVar[bool] = True
    error_order: ClassVar[int]
    fsal: ClassVar[bool]
    atol: float
    rtol: float
    max_steps: int
    controller: PIController
    first_step: float | None

    @abc.abstractmethod
    def step_with_error(
        self, field: VectorField, t: Any, y: State, dt: float, k1: State | None
    ) -> tuple[State, State, State]:
        """One step with error estimate; returns ``(y_new, err, k_last)``."""


@dataclass(frozen=True)
class Euler(AbstractStepper):
    """Explicit Euler, order 1, 1 evaluation per step; see :func:`euler_step`."""

    name: ClassVar[str] = "euler"
    order: ClassVar[int] = 1

    def step(self, field: VectorField, t: Any, y: State, dt: float) -> State:
        return euler_step(field, t, y, dt)


@dataclass(frozen=True)
class Heun(AbstractStepper):
    """Heun's method (explicit trapezoid), order 2, 2 evaluations; see :func:`heun_step`."""

    name: ClassVar[str] = "heun"
    order: ClassVar[int] = 2

    def step(self, field: VectorField, t: Any, y: State, dt: float) -> State:
        return heun_step(field, t, y, dt)


@dataclass(frozen=True)
class Midpoint(AbstractStepper):
    """Explicit midpoint rule, order 2, 2 evaluations; see :func:`midpoint_step`."""

    name: ClassVar[str] = "midpoint"
    order: ClassVar[int] = 2

    def step(self, field: VectorField, t: Any, y: State, dt: float) -> State:
        return midpoint_step(field, t, y, dt)


@dataclass(frozen=True)
class RK4(AbstractStepper):
    """Classic Runge--Kutta, order 4, 4 evaluations; see :func:`rk4_step`."""

    name: ClassVar[str] = "rk4"
    order: ClassVar[int] = 4

    def step(self, field: VectorField, t: Any, y: State, dt: float) -> State:
        return rk4_step(field, t, y, dt)


@dataclass(frozen=True)
class Dopri5(AbstractAdaptiveStepper):
    r"""Adaptive Dormand--Prince 5(4) with FSAL and a PI step-size controller.

    A step of size ``h`` is accepted when the scaled RMS error (over every entry of every
    leaf, batch included)

    .. math::
        \mathrm{err} = \mathrm{RMS}_i\Big(\frac{(y_5 - y_4)_i}
            {\mathrm{atol} + \mathrm{rtol}\max(|y_{0,i}|, |y_{5,i}|)}\Big) \le 1,

    and the next step is ``h * controller.factor(err, ...)``. Accepted steps cost 6
    evaluations (FSAL), the first step selection 2 (Hairer's ``HINIT``).

    Attributes:
        atol: Absolute tolerance > 0.
        rtol: Relative tolerance >= 0.
        max_steps: Most attempted steps (accepted + rejected) before giving up.
        controller: Step-size controller; ``PIController(beta=0.0)`` is the I controller.
        first_step: Initial ``|h|``; ``None`` selects it automatically.
    Example:
        >>> from otgen.ode import integrate
        >>> x0 = torch.ones(1, 1, dtype=torch.float64)
        >>> res = integrate(lambda t, x: -x, x0, method=Dopri5(atol=1e-9, rtol=1e-9))
        >>> round(float(res.x), 8)  # exp(-1)
        0.36787944
    """

    name: ClassVar[str] = "dopri5"
    order: ClassVar[int] = 5
    error_order: ClassVar[int] = 4
    fsal: ClassVar[bool] = True

    atol: float = 1e-5
    rtol: float = 1e-5
    max_steps: int = 10_000
    controller: PIController = PIController()
    first_step: float | None = None

    def __post_init__(self) -> None:
        check_positive("atol", self.atol)
        check_nonnegative("rtol", self.rtol)
        check_int("max_steps", self.max_steps, minimum=1)
        if not isinstance(self.controller, PIController):
            raise TypeError(
                f"`controller` must be a PIController, got {type(self.controller).__name__}; "
                f"use PIController() (PI) or PIController(beta=0.0) (I)."
            )
        check_positive_or_none("first_step", self.first_step)

    def step(self, field: VectorField, t: Any, y: State, dt: float) -> State:
        """Fixed step of the 5th-order solution, no error control (6 evaluations)."""
        return _dopri5_stages(field, t, y, dt, None)[0]

    def step_with_error(
        self, field: VectorField, t: Any, y: State, dt: float, k1: State | None
    ) -> tuple[State, State, State]:
        return dopri5_step(field, t, y, dt, k1)


#: Stepper classes by name (what ``integrate(method=<str>)`` accepts).
STEPPERS: dict[str, type[AbstractStepper]] = {
    cls.name: cls for cls in (Euler, Heun, Midpoint, RK4, Dopri5)
}


def get_stepper(method: object, *, atol: float = 1e-5, rtol: float = 1e-5,
                max_steps: int = 10_000) -> AbstractStepper:
    """Resolve ``method`` (a name or a stepper object) to a stepper object.

    Args:
        method: One of ``STEPPERS`` (``"dopri5"``, ``"euler"``, ``"heun"``, ``"midpoint"``,
            ``"rk4"``), or an :class:`AbstractStepper` instance (returned as is).
        atol, rtol, max_steps: Used to build an adaptive stepper from its name.
    Raises:
        ValueError: unknown name.  TypeError: neither a string nor a stepper.
    """
    if isinstance(method, AbstractStepper):
        return method
    if isinstance(method, str):
        key = method.lower()
        if key not in STEPPERS:
            raise ValueError(
                f"`method` must be one of {', '.join(repr(k) for k in STEPPERS)} or a "
                f"stepper object such as Heun(), got {method!r}."
            )
        if key == Dopri5.name:
            return Dopri5(atol=atol, rtol=rtol, max_steps=max_steps)
        return STEPPERS[key]()
    raise TypeError(
        f"`method` must be a string or an AbstractStepper, got {type(method).__name__}; "
        f"pass e.g. method='rk4' or method=RK4()."
    )

