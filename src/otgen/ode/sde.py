r"""SDE steppers (Euler--Maruyama, stochastic Heun) and ``sdeint``.

An SDE with diagonal noise

.. math::
    dX_t = f(t, X_t)\,dt + g(t, X_t) \odot dW_t

is given by a *drift* ``f(t, x)`` and a *diffusion* ``g(t, x)`` (``x`` of shape ``(B, *D)``;
``g`` returns a tensor broadcastable to ``x``: a scalar, ``(B, 1, ...)`` or ``(B, *D)``).
Times are passed as 0-d tensors of ``x``'s dtype and device, as in :func:`otgen.ode.integrate`.

========================= ======================================================== =======
method                    update (``dW ~ N(0, |dt| I)``)                           evals
========================= ======================================================== =======
Euler--Maruyama           :math:`x + f\,\Delta t + g\,\Delta W`                      1
stochastic Heun           predictor :math:`\tilde x = x + f\,\Delta t + g\,\Delta W`, 2
                          :math:`x + \tfrac12(f + \tilde f)\Delta t
                          + \tfrac12(g + \tilde g)\Delta W`
========================= ======================================================== =======

Heun converges to the *Stratonovich* solution (as torchsde's ``"heun"``); for additive
noise (``g`` independent of ``x``, every SDE of :mod:`otgen.gradflows.sdes`) Itô and
Stratonovich agree. Orders for additive noise (measured in ``tests/ode/test_sde.py``): both
have strong order 1; the weak order is 1 for Euler--Maruyama and 2 for Heun.

Backward integration (``t1 < t0``) uses the signed step in the drift and ``|dt|`` for the
noise: :math:`X_{t - h} = X_t - h f(t, X_t) + g\sqrt h\,\xi`. That is the convention of
the backward SDEs of a Brownian bridge; reverse-time *diffusion* samplers instead write
their reverse drift as a forward SDE in generative time (see :mod:`otgen.flows.diffusion`).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> res = sdeint((lambda t, x: -x, lambda t, x: torch.ones_like(x)),
    ...              torch.zeros(4, 2, dtype=torch.float64), steps=10, generator=g)
    >>> res.x.shape, res.nfe
    (torch.Size([4, 2]), 10)
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from otgen._validate import check_finite, check_int, check_tensor
from otgen.ode._checks import check_time

__all__ = [
    "AbstractSDEStepper", "EulerMaruyama", "StochasticHeun", "SDE_STEPPERS", "SDEResult",
    "SDELike", "euler_maruyama_step", "stochastic_heun_step", "get_sde_stepper",
    "brownian_increments", "sdeint",
]

Fn = Callable[[Tensor, Tensor], Tensor]


@runtime_checkable
class SDELike(Protocol):
    """Anything with ``drift(t, x)`` and ``diffusion(t, x)`` methods."""

    def drift(self, t: Tensor, x: Tensor) -> Tensor: ...

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------- pure steps


def euler_maruyama_step(drift: Fn, diffusion: Fn, t: Tensor, x: Tensor, dt: float,
                        dw: Tensor) -> Tensor:
    r"""Euler--Maruyama: :math:`x + f(t, x)\,\Delta t + g(t, x)\,\Delta W`.

    Args:
        drift, diffusion: ``f(t, x)`` and ``g(t, x)``; ``x`` is ``(B, *D)``.
        t: Current time (0-d tensor).
        x: State ``(B, *D)``.
        dt: Signed step.
        dw: Brownian increment ``(B, *D)`` with variance ``|dt|``.
    Returns:
        The state at ``t + dt``, ``(B, *D)``.
    """
    return x + drift(t, x) * dt + diffusion(t, x) * dw


def stochastic_heun_step(drift: Fn, diffusion: Fn, t: Tensor, x: Tensor, dt: float,
                         dw: Tensor) -> Tensor:
    r"""Stochastic Heun (Stratonovich trapezoid): an Euler--Maruyama predictor
    :math:`\tilde x`, then :math:`x + \tfrac12(f(t,x) + f(t+\Delta t,\tilde x))\Delta t +
    \tfrac12(g(t,x) + g(t+\Delta t,\tilde x))\Delta W`. Shapes as
    :func:`euler_maruyama_step`; two drift evaluations."""
    f0, g0 = drift(t, x), diffusion(t, x)
    xp = x + f0 * dt + g0 * dw
    t1 = t + dt
    return x + 0.5 * (f0 + drift(t1, xp)) * dt + 0.5 * (g0 + diffusion(t1, xp)) * dw


# ------------------------------------------------------------------------ configuration


class AbstractSDEStepper(abc.ABC):
    """Interface of a one-step SDE method (final frozen dataclasses below).

    Class attributes: ``name`` (accepted by ``sdeint(method=...)``), ``evals`` (drift
    evaluations per step), ``strong_order`` and ``weak_order`` for additive noise.
    """

    name: ClassVar[str]
    evals: ClassVar[int]
    strong_order: ClassVar[float]
    weak_order: ClassVar[float]

    @abc.abstractmethod
    def step(self, drift: Fn, diffusion: Fn, t: Tensor, x: Tensor, dt: float,
             dw: Tensor) -> Tensor:
        """Advance ``x`` from ``t`` to ``t + dt`` with Brownian increment ``dw``."""


@dataclass(frozen=True)
class EulerMaruyama(AbstractSDEStepper):
    """Euler--Maruyama; see :func:`euler_maruyama_step`."""

    name: ClassVar[str] = "euler"
    evals: ClassVar[int] = 1
    strong_order: ClassVar[float] = 1.0
    weak_order: ClassVar[float] = 1.0

    def step(self, drift: Fn, diffusion: Fn, t: Tensor, x: Tensor, dt: float,
             dw: Tensor) -> Tensor:
        return euler_maruyama_step(drift, diffusion, t, x, dt, dw)


@dataclass(frozen=True)
class StochasticHeun(AbstractSDEStepper):
    """Stochastic Heun; see :func:`stochastic_heun_step`."""

    name: ClassVar[str] = "heun"
    evals: ClassVar[int] = 2
    strong_order: ClassVar[float] = 1.0
    weak_order: ClassVar[float] = 2.0

    def step(self, drift: Fn, diffusion: Fn, t: Tensor, x: Tensor, dt: float,
             dw: Tensor) -> Tensor:
        return stochastic_heun_step(drift, diffusion, t, x, dt, dw)


#: SDE stepper classes by name; ``"euler_maruyama"`` is an alias of ``"euler"``.
SDE_STEPPERS: dict[str, type[AbstractSDEStepper]] = {
    "euler": EulerMaruyama, "euler_maruyama": EulerMaruyama, "heun": StochasticHeun}


def get_sde_stepper(method: object) -> AbstractSDEStepper:
    """Resolve a name (``"euler"``, ``"euler_maruyama"``, ``"heun"``) or a stepper object."""
    if isinstance(method, AbstractSDEStepper):
        return method
    if isinstance(method, str) and method.lower() in SDE_STEPPERS:
        return SDE_STEPPERS[method.lower()]()
    raise ValueError(f"`method` must be one of {', '.join(repr(k) for k in SDE_STEPPERS)} or "
                     f"an AbstractSDEStepper such as StochasticHeun(), got {method!r}.")


@dataclass(frozen=True)
class SDEResult:
    """Outcome of :func:`sdeint`.

    Attributes:
        x: State at ``t1``, ``(B, *D)`` (differentiable w.r.t. ``x0`` and the SDE's
            parameters; backpropagation through the unrolled steps).
        xs: States at the grid times ``ts``, ``(T, B, *D)``, or ``None``.
        ts: Times of ``xs`` ``(T,)`` or ``None``.
        nfe: Drift evaluations.
        steps: Number of steps taken.
        method: Name of the stepper.
    """

    x: Tensor
    xs: Tensor | None
    ts: Tensor | None
    nfe: int
    steps: int
    method: str


def brownian_increments(shape: tuple[int, ...], dt: float, *, generator:
                        torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                        device: torch.device | str | None = None) -> Tensor:
    """Draw :math:`\\Delta W \\sim N(0, |dt| I)` of ``shape`` on ``generator``'s device, then
    move it to ``device`` (so a CPU generator drives a CUDA run reproducibly)."""
    gdev = generator.device if generator is not None else device
    z = torch.randn(shape, generator=generator, dtype=dtype, device=gdev)
    return (z * abs(dt) ** 0.5).to(device) if device is not None else z * abs(dt) ** 0.5


def _resolve_sde(sde: object) -> tuple[Fn, Fn]:
    if isinstance(sde, tuple) and len(sde) == 2 and all(callable(f) for f in sde):
        return sde[0], sde[1]
    if isinstance(sde, SDELike):
        return sde.drift, sde.diffusion
    raise TypeError(f"`sde` must be an object with drift(t, x) and diffusion(t, x) methods or "
                    f"a pair (drift, diffusion) of callables, got {type(sde).__name__}.")


def sdeint(
    sde: SDELike | tuple[Fn, Fn], x0: Tensor, *, t0: float = 0.0, t1: float = 1.0,
    steps: int = 100, method: str | AbstractSDEStepper = "euler",
    generator: torch.Generator | None = None, save_every: int | None = None,
    progress: bool = False,
) -> SDEResult:
    r"""Integrate :math:`dX = f\,dt + g\,dW` on a uniform grid of ``steps`` steps.

    Args:
        sde: An object with ``drift(t, x)`` / ``diffusion(t, x)`` (e.g. the SDEs of
            :mod:`otgen.gradflows.sdes`) or a pair ``(drift, diffusion)``.
        x0: Initial state ``(B, *D)``, any float dtype and device.
        t0, t1: Start and end time (``t1 < t0`` integrates backward, see the module doc).
        steps: Number of uniform steps (>= 1).
        method: ``"euler"`` (Euler--Maruyama), ``"heun"`` or a stepper object.
        generator: Randomness of the Brownian increments (drawn on its device).
        save_every: Record the state every ``save_every`` steps (and at ``t0``, ``t1``) in
            ``xs``; ``None`` records nothing.
        progress: tqdm progress bar (stderr).
    Returns:
        :class:`SDEResult`.
    Raises:
        TypeError: bad ``sde`` or ``x0``. ValueError: bad numbers, non-finite ``x0``.
    """
    drift, diffusion = _resolve_sde(sde)
    x = check_finite("x0", check_tensor("x0", x0))
    if x.ndim == 0:
        raise ValueError("`x0` must have a batch dimension, shape (B, *D), got shape (); "
                         "use x0.reshape(1, 1).")
    t0, t1 = check_time("t0", t0), check_time("t1", t1)
    steps = check_int("steps", steps)
    if save_every is not None:
        save_every = check_int("save_every", save_every)
    stepper = get_sde_stepper(method)
    grid = [t0 + (t1 - t0) * k / steps for k in range(steps)] + [t1]
    xs: list[Tensor] = [x] if save_every is not None else []
    ts: list[float] = [t0] if save_every is not None else []
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"sde[{stepper.name}]", unit="step", leave=False)
    try:
        for k in range(steps):
            dt = grid[k + 1] - grid[k]
            dw = brownian_increments(tuple(x.shape), dt, generator=generator, dtype=x.dtype,
                                     device=x.device)
            t = torch.tensor(grid[k], dtype=x.dtype, device=x.device)
            x = stepper.step(drift, diffusion, t, x, dt, dw)
            if save_every is not None and ((k + 1) % save_every == 0 or k + 1 == steps):
                xs.append(x)
                ts.append(grid[k + 1])
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return SDEResult(
        x=x, xs=torch.stack(xs) if xs else None,
        ts=torch.tensor(ts, dtype=x.dtype, device=x.device) if ts else None,
        nfe=steps * stepper.evals, steps=steps, method=stepper.name)
