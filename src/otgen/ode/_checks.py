"""Input checks specific to the ODE layer (the generic ones live in ``otgen._validate``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from otgen._validate import check_finite, check_same_dtype_device, check_tensor
from otgen.ode._tree import State, leaves

__all__ = ["check_nonnegative", "check_time", "as_state", "check_field_output", "as_t_eval"]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_nonnegative(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"`{name}` must be a number >= 0, got {_describe(value)}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0, got {value!r}; pass e.g. 1e-5."
        )
    return float(value)


def check_time(name: str, value: object) -> float:
    """Return a time (number or one-element tensor) as a finite Python float."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"`{name}` must be a scalar time, got a tensor of shape "
                f"{tuple(value.shape)}; pass a float such as {name}=0.0."
            )
        value = float(value.detach())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"`{name}` must be a number, got {_describe(value)}.")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}; pass a finite time.")
    return float(value)


def as_state(name: str, x: object) -> State:
    """Validate an ODE state: a floating tensor ``(B, *D)`` or a tuple/list of them.

    All leaves must share one dtype and device and be finite. Lists become tuples.
    """
    if isinstance(x, Tensor):
        parts: Sequence[object] = (x,)
    elif isinstance(x, tuple | list):
        if len(x) == 0:
            raise ValueError(
                f"`{name}` must be a tensor or a non-empty tuple of tensors, got an empty "
                f"{type(x).__name__}; pass e.g. (x, logp)."
            )
        parts = x
    else:
        raise TypeError(
            f"`{name}` must be a torch.Tensor of shape (B, *D) or a tuple of tensors, got "
            f"{_describe(x)}; convert it with torch.as_tensor({name}, dtype=torch.float64)."
        )
    checked = []
    for i, leaf in enumerate(parts):
        leaf_name = name if isinstance(x, Tensor) else f"{name}[{i}]"
        leaf = check_tensor(leaf_name, leaf)
        if leaf.ndim == 0:
            raise ValueError(
                f"`{leaf_name}` must have a batch dimension, shape (B, *D), got shape (); "
                f"use {leaf_name}.reshape(1)."
            )
        check_finite(leaf_name, leaf)
        checked.append(leaf)
    check_same_dtype_device(*((f"{name}[{i}]", t) for i, t in enumerate(checked)))
    return checked[0] if isinstance(x, Tensor) else tuple(checked)


def check_field_output(out: object, y: State) -> None:
    """Raise unless ``out = field(t, y)`` has the structure, shapes, dtype of ``y``."""
    fix = "the field must return dx/dt with the same shape (and tuple structure) as x"
    if isinstance(y, Tensor):
        if not isinstance(out, Tensor):
            raise TypeError(
                f"`field` must return a tensor for a tensor state, got {_describe(out)}; "
                f"{fix}."
            )
        outs: tuple[Tensor, ...] = (out,)
    else:
        if not isinstance(out, tuple | list) or len(out) != len(y):
            raise TypeError(
                f"`field` must return a tuple of {len(y)} tensors for a tuple state, got "
                f"{_describe(out)}" + (f" of length {len(out)}" if isinstance(
                    out, tuple | list) else "") + f"; {fix}."
            )
        outs = tuple(out)
    for i, (o, leaf) in enumerate(zip(outs, leaves(y), strict=True)):
        where = "" if isinstance(y, Tensor) else f" (leaf {i})"
        if not isinstance(o, Tensor):
            raise TypeError(f"`field` returned {_describe(o)}{where}; {fix}.")
        if o.shape != leaf.shape:
            raise ValueError(
                f"`field` returned shape {tuple(o.shape)}{where} for a state of shape "
                f"{tuple(leaf.shape)}; {fix}."
            )
        if o.dtype != leaf.dtype:
            raise TypeError(
                f"`field` returned dtype {o.dtype}{where} for a state of dtype {leaf.dtype}; "
                f"cast the output (or the model) to {leaf.dtype}."
            )


def as_t_eval(t_eval: object, t0: float, t1: float) -> list[float]:
    """Validate output times: a 1-D tensor, strictly monotone from ``t0`` towards ``t1``.

    Values within a few ulps (of ``t_eval``'s dtype) of ``t0`` or ``t1`` are snapped onto
    them, so e.g. float32 times still hit the endpoints exactly.
    Returns the times as Python floats.
    """
    t_eval = check_tensor("t_eval", t_eval)
    if t_eval.ndim != 1 or t_eval.numel() == 0:
        raise ValueError(
            f"`t_eval` must be a non-empty 1-D tensor of times, got shape "
            f"{tuple(t_eval.shape)}; pass e.g. torch.linspace(t0, t1, 11)."
        )
    check_finite("t_eval", t_eval)
    ts = [float(v) for v in t_eval.detach().cpu().to(torch.float64).tolist()]
    lo, hi = min(t0, t1), max(t0, t1)
    tol = 4.0 * torch.finfo(t_eval.dtype).eps * max(abs(t0), abs(t1), 1.0)
    if min(ts) < lo - tol or max(ts) > hi + tol:
        raise ValueError(
            f"`t_eval` must lie within [t0, t1] = [{t0:g}, {t1:g}], got values in "
            f"[{min(ts):g}, {max(ts):g}]; drop or clip the times outside the interval."
        )
    direction = 1.0 if t1 >= t0 else -1.0
    word = "increasing" if direction > 0 else "decreasing"
    for a, b in zip(ts, ts[1:], strict=False):
        if (b - a) * direction <= 0:
            raise ValueError(
                f"`t_eval` must be strictly {word} (the direction of integration from "
                f"t0={t0:g} to t1={t1:g}), got {a:g} followed by {b:g}; sort it"
                + (" in descending order" if direction < 0 else "") + " and drop repeats."
            )
    # clamp onto the interval and snap near-endpoints (e.g. float32 round-off) onto them
    return [t0 if abs(v - t0) <= tol else t1 if abs(v - t1) <= tol else min(hi, max(lo, v))
            for v in ts]
