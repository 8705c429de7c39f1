"""Input checks for the public boundary.

Every public function validates its arguments once, here, and inner kernels trust them.
Each error names the argument, what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "as_points",
    "as_weights",
    "check_positive",
    "check_same_dtype_device",
    "check_finite",
]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    return f"{type(value).__name__}"


def check_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a floating-point tensor, else raise ``TypeError``."""
    if not isinstance(value, Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor, got {_describe(value)}; "
            f"convert it with torch.as_tensor({name}, dtype=torch.float64)."
        )
    if not value.is_floating_point():
        raise TypeError(
            f"`{name}` must have a floating-point dtype, got {value.dtype}; "
            f"cast it with {name}.double() or {name}.float()."
        )
    return value


def check_finite(name: str, value: Tensor) -> Tensor:
    """Raise ``ValueError`` if ``value`` holds NaN or infinite entries.

    One pass, no temporary: NaN propagates through ``aminmax`` and ``±inf`` shows in its
    extremes, so the full boolean mask is built only to count bad entries."""
    if value.numel() and not bool(torch.isfinite(torch.stack(
            torch.aminmax(value.detach()))).all()):
        bad = int((~torch.isfinite(value.detach())).sum())
        raise ValueError(
            f"`{name}` must be finite, got {bad} NaN/inf entries out of {value.numel()}; "
            f"drop or impute those entries first."
        )
    return value


def as_points(name: str, x: object, *, min_points: int = 1) -> Tensor:
    """Validate a point cloud of shape ``(n, d)``.

    Args:
        name: Argument name used in error messages.
        x: Candidate tensor.
        min_points: Smallest admissible ``n``.
    Returns:
        ``x`` itself (same dtype, device and autograd graph).
    Raises:
        TypeError: not a floating tensor.
        ValueError: wrong rank, empty, or non-finite.
    """
    x = check_tensor(name, x)
    if x.ndim != 2:
        hint = f"use {name}[:, None]" if x.ndim == 1 else f"reshape it to ({name}.shape[0], -1)"
        raise ValueError(
            f"`{name}` must be a point cloud of shape (n, d), got shape {tuple(x.shape)}; "
            f"{hint}."
        )
    if x.shape[0] < min_points or x.shape[1] == 0:
        raise ValueError(
            f"`{name}` must hold at least {min_points} point(s) of dimension >= 1, "
            f"got shape {tuple(x.shape)}; pass a non-empty cloud."
        )
    return check_finite(name, x)


def as_weights(name: str, w: object, n: int, like: Tensor) -> Tensor:
    """Validate (or create uniform) weights of shape ``(n,)``.

    Args:
        name: Argument name used in error messages.
        w: Candidate weights, or ``None`` for uniform ``1/n``.
        n: Number of points the weights must match.
        like: Tensor whose dtype and device the weights must share.
    Returns:
        A ``(n,)`` tensor of non-negative weights with positive mass.
    """
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    w = check_tensor(name, w)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(
            f"`{name}` must have shape ({n},) to match its point cloud, got "
            f"{tuple(w.shape)}; pass one weight per point."
        )
    check_same_dtype_device((name, w), ("points", like))
    check_finite(name, w)
    w_ = w.detach()
    if bool((w_ < 0).any()):
        raise ValueError(
            f"`{name}` must be non-negative, got minimum {float(w_.min()):.3g}; "
            f"weights are masses, clip or fix the negative entries."
        )
    if float(w_.sum()) <= 0:
        raise ValueError(
            f"`{name}` must have positive total mass, got {float(w_.sum()):.3g}; "
            f"give at least one point a positive weight."
        )
    return w


def check_same_mass(a: Tensor, b: Tensor, *, rtol: float = 1e-6) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` carry the same total mass."""
    ma, mb = float(a.detach().sum()), float(b.detach().sum())
    tol = rtol * max(ma, mb) + (1e-5 if a.dtype == torch.float32 else 1e-12)
    if abs(ma - mb) > tol:
        raise ValueError(
            f"`a`, `b` have mass {ma:.6g} and {mb:.6g}; balanced OT needs equal mass "
            f"(normalise both, e.g. a / a.sum() and b / b.sum())."
        )


def check_same_dtype_device(*named: tuple[str, Tensor]) -> None:
    """Raise ``TypeError`` if the tensors do not share one dtype and one device."""
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"`{name}` has dtype {t.dtype} but `{first_name}` has {first.dtype}; "
                f"cast both to one dtype (e.g. .double())."
            )
        if t.device != first.device:
            raise TypeError(
                f"`{name}` is on {t.device} but `{first_name}` is on {first.device}; "
                f"move both to one device with .to(device)."
            )


def check_same_dim(x: Tensor, y: Tensor, names: Sequence[str] = ("x", "y")) -> None:
    """Raise ``ValueError`` if two clouds live in different dimensions."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same dimension d, got "
            f"{x.shape[1]} and {y.shape[1]}; project or pad them to one dimension."
        )


def check_positive(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"`{name}` must be a positive number, got {_describe(value)}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a finite number > 0, got {value!r}; pass a positive value."
        )
    return float(value)


def check_positive_or_none(name: str, value: object) -> float | None:
    """``None`` passes through; anything else must be a finite number > 0."""
    return None if value is None else check_positive(name, value)


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {_describe(value)}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(c) for c in choices)}, got {value!r}."
        )
    return value
