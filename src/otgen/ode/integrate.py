r"""``integrate``: solve :math:`\dot x = v(t, x)` from ``t0`` to ``t1`` with any stepper.

Fixed-step methods walk a uniform grid (``steps`` intervals, or steps of ``dt`` with a
shorter last one); requested output times ``t_eval`` that fall between grid points are
inserted into the grid, so every recorded state comes from a genuine step. The adaptive
method (Dopri5) steps *exactly onto* each requested time (the step is clipped there, no
interpolation), so the output accuracy equals the solver's local accuracy; very dense
``t_eval`` therefore costs extra steps.

Gradients flow through every accepted step (discretise-then-optimise, unrolled); the
step-size decisions themselves are not differentiated. Times are handled as Python floats
and passed to the field as 0-d tensors of the state's dtype and device.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from otgen._validate import check_int, check_positive, check_positive_or_none
from otgen.ode._checks import (
    as_state,
    as_t_eval,
    check_field_output,
    check_nonnegative,
    check_time,
)
from otgen.ode._tree import State, VectorField, leaves, rebuild, rms_error
from otgen.ode.controller import initial_step
from otgen.ode.result import (
    IntegrationError,
    IntegrationWarning,
    MaxStepsExceeded,
    ODEResult,
    StepSizeUnderflowError,
)
from otgen.ode.steppers import AbstractAdaptiveStepper, AbstractStepper, get_stepper

__all__ = ["integrate"]

_DEFAULTS = {"atol": 1e-5, "rtol": 1e-5, "max_steps": 10_000}


class _Counted:
    """Wrap ``field``: float time -> 0-d tensor, count evaluations, check the output."""

    def __init__(self, field: VectorField, like: State) -> None:
        self.field = field
        self.nfe = 0
        first = leaves(like)[0]
        self.dtype, self.device = first.dtype, first.device

    def __call__(self, t: float, y: State) -> State:
        self.nfe += 1
        out = self.field(torch.full((), t, dtype=self.dtype, device=self.device), y)
        check_field_output(out, y)
        return out if isinstance(out, Tensor) else tuple(out)


class _Trace:
    """Collects the states at the requested times and builds the result."""

    def __init__(self, t_eval: Tensor | None, method: str, like: State) -> None:
        self.t_eval, self.method, self.like = t_eval, method, like
        self.saved: list[State] = []

    def record(self, y: State) -> None:
        self.saved.append(y)

    def result(self, y: State, t: float, nfe: int, n_acc: int, n_rej: int,
               message: str = "") -> ODEResult:
        xs: State | None = None
        ts: Tensor | None = None
        if self.t_eval is not None:
            full = len(self.saved) == self.t_eval.shape[0]
            ts = self.t_eval if full else self.t_eval[: len(self.saved)]
            if self.saved:
                stacked = [torch.stack(parts) for parts in zip(
                    *(leaves(s) for s in self.saved), strict=True)]  # each (T, B, *D)
            else:
                stacked = [leaf.new_empty((0, *leaf.shape)) for leaf in leaves(self.like)]
            xs = rebuild(self.like, stacked)
        return ODEResult(x=y, xs=xs, ts=ts, nfe=nfe, n_accepted=n_acc, n_rejected=n_rej,
                         success=not message, t_final=t, method=self.method, message=message)


def _resolve(method: object, atol: float, rtol: float, max_steps: int,
             dt: float | None) -> tuple[AbstractStepper, float | None]:
    """The stepper plus, for adaptive ones, the first step; checks argument conflicts."""
    stepper = get_stepper(method, atol=atol, rtol=rtol, max_steps=max_steps)
    if not isinstance(stepper, AbstractAdaptiveStepper):
        return stepper, None
    if isinstance(method, AbstractAdaptiveStepper):
        given = {"atol": atol, "rtol": rtol, "max_steps": max_steps}
        for name, value in given.items():
            own = getattr(method, name)
            if value != _DEFAULTS[name] and value != own:
                raise ValueError(
                    f"`{name}`={value!r} conflicts with method={method!r}, which has "
                    f"{name}={own!r}; set it on the stepper (dataclasses.replace(method, "
                    f"{name}={value!r})) or pass method={method.name!r}."
                )
    first = stepper.first_step
    if dt is not None and first is not None and dt != first:
        raise ValueError(
            f"`dt`={dt!r} conflicts with first_step={first!r} of method={method!r}; "
            f"give the first step in one place only."
        )
    return stepper, dt if dt is not None else first


def integrate(
    field: VectorField,
    x0: State,
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    method: str | AbstractStepper = "dopri5",
    steps: int | None = None,
    dt: float | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_steps: int = 10_000,
    t_eval: Tensor | None = None,
    strict: bool = True,
    progress: bool = False,
) -> ODEResult:
    r"""Solve :math:`\frac{dx}{dt} = v(t, x)`, :math:`x(t_0) = x_0`, up to :math:`t_1`.

    Time 0 is the source (noise) and 1 the target (data); ``t1 < t0`` integrates backward.

    Args:
        field: Vector field ``v(t, x)``; ``t`` is passed as a 0-d tensor with ``x``'s dtype
            and device, ``x`` has shape ``(B, *D)`` and the output must too. For a tuple
            state ``(x, logp)`` the field takes and returns tuples of the same shapes (see
            :func:`otgen.ode.augmented_dynamics`). If ``field`` has a method
            ``on_integrate_start()``, it is called once before the solve (used to draw
            per-solve Hutchinson probes).
        x0: Initial state: a floating tensor ``(B, *D)``, or a tuple of tensors sharing
            dtype and device. Any float dtype and device; gradients flow back to it.
        t0: Start time.
        t1: End time (``t1 < t0`` integrates backward; ``t1 == t0`` returns ``x0``).
        method: ``"dopri5"`` (adaptive, default), ``"euler"``, ``"heun"``,
            ``"midpoint"``, ``"rk4"``, or a stepper object such as ``RK4()`` or
            ``Dopri5(atol=1e-8, rtol=1e-8)``. Settings on a stepper object take
            precedence; a non-default ``atol`` / ``rtol`` / ``max_steps`` here that
            disagrees with the object raises.
        steps: Number of uniform steps for fixed-step methods (or give ``dt``). Not
            accepted for adaptive methods.
        dt: Fixed-step size ``|h|`` (the last step is shortened to land on ``t1``); for
            adaptive methods, the first step size (default: Hairer's selection).
        atol: Absolute tolerance of adaptive methods (> 0; ignored by fixed-step ones).
        rtol: Relative tolerance of adaptive methods (>= 0).
        max_steps: Most attempted adaptive steps (accepted + rejected).
        t_eval: Optional 1-D tensor ``(T,)`` of output times in ``[t0, t1]``, strictly
            monotone in the direction of integration; the states there are returned in
            ``xs`` (the fixed grid is refined / adaptive steps land exactly on them).
        strict: If ``True`` (default) a failed adaptive solve raises
            :class:`StepSizeUnderflowError` or :class:`MaxStepsExceeded`; if ``False`` it
            warns (:class:`IntegrationWarning`) and returns ``success=False`` with the
            state at ``t_final``.
        progress: Show a tqdm progress bar over time.
    Returns:
        :class:`ODEResult` with ``x`` (like ``x0``), ``xs`` ``(T, B, *D)`` or ``None``,
        ``ts`` ``(T,)`` or ``None``, ``nfe``, ``n_accepted``, ``n_rejected``, ``success``,
        ``t_final``.
    Raises:
        TypeError: non-tensor state, non-callable field, wrong output type or dtype.
        ValueError: invalid numbers, missing ``steps``, bad ``t_eval``, output shape.
        StepSizeUnderflowError, MaxStepsExceeded: adaptive failure with ``strict=True``.
    Example:
        >>> import torch
        >>> x0 = torch.ones(3, 2, dtype=torch.float64)
        >>> res = integrate(lambda t, x: -x, x0, method="rk4", steps=50)
        >>> torch.allclose(res.x, x0 * torch.exp(torch.tensor(-1.0)), atol=1e-8), res.nfe
        (True, 200)
    """
    if not callable(field):
        raise TypeError(
            f"`field` must be callable as field(t, x), got {type(field).__name__}; pass a "
            f"function or an nn.Module."
        )
    y0 = as_state("x0", x0)
    t0, t1 = check_time("t0", t0), check_time("t1", t1)
    atol = check_positive("atol", atol)
    rtol = check_nonnegative("rtol", rtol)
    max_steps = check_int("max_steps", max_steps, minimum=1)
    if steps is not None:
        steps = check_int("steps", steps, minimum=1)
    dt = check_positive_or_none("dt", dt)
    times = None if t_eval is None else as_t_eval(t_eval, t0, t1)
    stepper, first_step = _resolve(method, atol, rtol, max_steps, dt)
    if stepper.adaptive and steps is not None:
        raise ValueError(
            f"`steps` applies to fixed-step methods only, got steps={steps} with "
            f"method={stepper.name!r}; drop `steps` (use atol/rtol) or pick method='rk4'."
        )
    if not stepper.adaptive:
        if steps is None and dt is None:
            raise ValueError(
                f"fixed-step method {stepper.name!r} needs `steps` (number of steps) or "
                f"`dt` (step size), got neither; pass e.g. steps=100."
            )
        if steps is not None and dt is not None:
            raise ValueError(
                f"give either `steps` or `dt` for method {stepper.name!r}, got steps="
                f"{steps} and dt={dt}; drop one of them."
            )
    hook = getattr(field, "on_integrate_start", None)
    if callable(hook):
        hook()

    f = _Counted(field, y0)
    trace = _Trace(t_eval, stepper.name, y0)
    if t0 == t1:
        for _ in times or []:
            trace.record(y0)
        return trace.result(y0, t0, 0, 0, 0)
    bar = _progress_bar(progress, abs(t1 - t0), stepper.name)
    try:
        if isinstance(stepper, AbstractAdaptiveStepper):
            return _solve_adaptive(stepper, f, y0, t0, t1, times or [], first_step, strict,
                                   trace, bar)
        return _solve_fixed(stepper, f, y0, t0, t1, steps, dt, times or [], trace, bar)
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(enabled: bool, total: float, name: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"ode[{name}]", unit="t",
                bar_format="{l_bar}{bar}| t {n:.3g}/{total:.3g} [{elapsed}{postfix}]")


# -------------------------------------------------------------------------- fixed steps


def _fixed_grid(t0: float, t1: float, steps: int | None, dt: float | None) -> list[float]:
    """Uniform grid from ``t0`` to ``t1`` (both included, last point exactly ``t1``)."""
    span = t1 - t0
    if steps is None:
        h_abs = dt if dt is not None else abs(span)
        steps = max(1, math.ceil(abs(span) / h_abs * (1.0 - 1e-12)))
        h = math.copysign(h_abs, span)
        return [t0 + k * h for k in range(steps)] + [t1]
    return [t0 + span * k / steps for k in range(steps)] + [t1]


def _merge_grid(grid: list[float], times: list[float], t0: float, t1: float,
                tol: float) -> tuple[list[float], list[int]]:
    """Insert ``times`` into ``grid`` (both monotone from ``t0``); return the merged grid
    and the index of each requested time in it (snapping to grid points within ``tol``)."""
    direction = 1.0 if t1 > t0 else -1.0
    merged: list[float] = []
    where: list[int] = []
    i = 0
    for t in times:
        while i < len(grid) and (grid[i] - t) * direction < -tol:
            merged.append(grid[i])
            i += 1
        if i < len(grid) and abs(grid[i] - t) <= tol:
            merged.append(grid[i])
            i += 1
        elif not merged or abs(merged[-1] - t) > tol:
            merged.append(t)
        where.append(len(merged) - 1)
    merged.extend(grid[i:])
    return merged, where


def _solve_fixed(stepper: AbstractStepper, f: _Counted, y: State, t0: float, t1: float,
                 steps: int | None, dt: float | None, times: list[float], trace: _Trace,
                 bar: Any) -> ODEResult:
    eps = torch.finfo(trace.t_eval.dtype).eps if trace.t_eval is not None else 2.0 ** -52
    tol = 8.0 * eps * max(abs(t0), abs(t1), 1.0)
    grid, where = _merge_grid(_fixed_grid(t0, t1, steps, dt), times, t0, t1, tol)
    marks = set(where)
    if 0 in marks:
        trace.record(y)
    for k in range(len(grid) - 1):
        y = stepper.step(f, grid[k], y, grid[k + 1] - grid[k])
        if k + 1 in marks:
            trace.record(y)
        if bar is not None:
            bar.update(abs(grid[k + 1] - grid[k]))
    return trace.result(y, t1, f.nfe, len(grid) - 1, 0)


# ----------------------------------------------------------------------- adaptive steps


def _solve_adaptive(stepper: AbstractAdaptiveStepper, f: _Counted, y: State, t0: float,
                    t1: float, times: list[float], first_step: float | None, strict: bool,
                    trace: _Trace, bar: Any) -> ODEResult:
    direction = 1.0 if t1 > t0 else -1.0
    atol, rtol, ctrl = stepper.atol, stepper.rtol, stepper.controller
    eps = torch.finfo(leaves(y)[0].dtype).eps
    span_scale = max(abs(t0), abs(t1))
    targets = list(times)
    if targets and targets[0] == t0:
        trace.record(y)
        targets = targets[1:]
    record_last = bool(targets) and targets[-1] == t1
    if not record_last:
        targets.append(t1)

    t = t0
    k1 = f(t0, y)
    h = first_step if first_step is not None else initial_step(
        f, t0, y, k1, direction, order=stepper.error_order, atol=atol, rtol=rtol)
    # never start below the underflow threshold (HINIT's 1e-6 fallback is < float32 ulps)
    h = min(max(h, 8.0 * eps * span_scale), abs(t1 - t0))
    n_acc = n_rej = 0
    err_prev, rejected_last = 1.0, False

    def fail(kind: type[IntegrationError], why: str) -> ODEResult:
        msg = (f"{stepper.name} stopped at t={t!r} (from t0={t0:g} to t1={t1:g}) with "
               f"dt={direction * h:.3e}: {why}")
        if strict:
            raise kind(msg)
        warnings.warn(msg, IntegrationWarning, stacklevel=3)
        return trace.result(y, t, f.nfe, n_acc, n_rej, message=msg)

    for i, target in enumerate(targets):
        while True:
            if n_acc + n_rej >= stepper.max_steps:
                return fail(MaxStepsExceeded, (
                    f"max_steps={stepper.max_steps} steps attempted ({n_acc} accepted, "
                    f"{n_rej} rejected); raise max_steps, loosen atol/rtol, or check the "
                    f"field for stiffness or blow-up."))
            remaining = target - t
            land = 1.01 * h >= abs(remaining)
            step = remaining if land else direction * h
            dt_min = 4.0 * eps * max(abs(t), span_scale)  # below: t + dt ~ t
            if abs(step) < dt_min and not land:
                return fail(StepSizeUnderflowError, (
                    f"step size underflow (|dt| < {dt_min:.1e}, t + dt == t in "
                    f"{leaves(y)[0].dtype}); the solution probably blows up or the field "
                    f"is discontinuous/non-finite near t; shorten [t0, t1] or fix the field."))
            y_new, err_est, k_new = stepper.step_with_error(f, t, y, step, k1)
            err = rms_error(err_est, y, y_new, atol, rtol)
            accepted = err <= 1.0
            fac = ctrl.factor(err, err_prev, accepted=accepted, order=stepper.error_order)
            h_next = abs(step) * fac
            if not accepted:
                n_rej += 1
                rejected_last = True
                h = h_next
                continue
            n_acc += 1
            if land and fac >= 1.0:
                h_next = max(h_next, h)  # a clipped step says little about the next size
            if rejected_last:
                h_next = min(h_next, abs(step))
            if bar is not None:
                bar.update(abs(step))
                bar.set_postfix_str(f"nfe={f.nfe}", refresh=False)
            t = target if land else t + step
            y, k1, h = y_new, k_new, h_next
            err_prev, rejected_last = err, False
            if land:
                if i < len(targets) - 1 or record_last:
                    trace.record(y)
                break
    return trace.result(y, t1, f.nfe, n_acc, n_rej)
