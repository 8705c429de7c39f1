r"""Data sources by name: the strings accepted by ``--data`` / ``--source`` on the CLI.

A *spec* is one of

- a toy name from :data:`TOYS` (``"moons"``, ``"8gaussians"``, ``"checkerboard"``,
  ``"circles"``, ``"swissroll"``, ``"scurve"``, ``"spirals"``, ``"pinwheel"``), 2-D;
- ``"gaussian"`` (standard normal N(0, I₂)) or ``"gaussian:D"`` (N(0, I_D), D >= 1);
- a path ending in ``.npy`` or ``.csv``: a point cloud read once with
  :func:`otgen.data.io.load_cloud`. Sampling draws rows i.i.d. *with replacement*:
  uniformly, or with probability proportional to the file's weights when it carries
  weights (a ``weight`` column or a ``<stem>.weights.npy`` sibling). The empirical measure
  is therefore sampled exactly; no noise is added.

:func:`get_sampler` turns a spec into ``sampler(n, generator=None) -> Tensor (n, d)``; all
randomness comes from the generator.

Example:
    >>> sampler = get_sampler("8gaussians")
    >>> sampler(64, torch.Generator().manual_seed(0)).shape
    torch.Size([64, 2])
    >>> dataset_dim("gaussian:5")
    5
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from otgen._validate import check_int
from otgen.data.io import SUFFIXES, load_cloud
from otgen.data.toys import (
    sample_8gaussians,
    sample_checkerboard,
    sample_circles,
    sample_moons,
    sample_pinwheel,
    sample_scurve,
    sample_spirals,
    sample_swissroll,
)

__all__ = ["TOYS", "Sampler", "get_sampler", "dataset_dim", "valid_specs"]


class Sampler(Protocol):
    """``sampler(n, generator=None) -> Tensor`` of shape ``(n, d)``."""

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...


#: Toy name → sampler ``fn(n, *, generator=None, dtype=..., device=..., **params)``.
TOYS: dict[str, Callable[..., Tensor]] = {
    "moons": sample_moons,
    "8gaussians": sample_8gaussians,
    "checkerboard": sample_checkerboard,
    "circles": sample_circles,
    "swissroll": sample_swissroll,
    "scurve": sample_scurve,
    "spirals": sample_spirals,
    "pinwheel": sample_pinwheel,
}

_GAUSSIAN = "gaussian"


def valid_specs() -> list[str]:
    """The spec forms :func:`get_sampler` accepts, for messages and ``--help``."""
    return [*TOYS, _GAUSSIAN, f"{_GAUSSIAN}:D", *(f"FILE{s}" for s in SUFFIXES)]


def _check_spec(spec: object) -> str:
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(
            f"`spec` must be a str (a toy name, 'gaussian[:D]' or a .npy/.csv path), got "
            f"{type(spec).__name__}."
        )
    return spec


def _is_file_spec(spec: str) -> bool:
    return Path(spec).suffix.lower() in SUFFIXES


def _gaussian_dim(spec: str) -> int | None:
    """``None`` if ``spec`` is not a Gaussian spec, else its dimension."""
    if spec == _GAUSSIAN:
        return 2
    if not spec.startswith(_GAUSSIAN + ":"):
        return None
    tail = spec[len(_GAUSSIAN) + 1 :]
    if not tail.isdigit() or int(tail) < 1:
        raise ValueError(
            f"`spec` {spec!r}: the dimension after 'gaussian:' must be an integer >= 1, got "
            f"{tail!r}; write e.g. 'gaussian:2'."
        )
    return int(tail)


def _unknown(spec: str) -> ValueError:
    close = difflib.get_close_matches(spec, [*TOYS, _GAUSSIAN], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(
        f"`spec` must be one of {', '.join(repr(s) for s in valid_specs())}, got {spec!r}; "
        f"{hint}(file paths must end in {' or '.join(SUFFIXES)})."
    )


def _check_dtype_device(dtype: object, device: object) -> torch.device:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch dtype, got {dtype!r}.")
    if device is not None and not isinstance(device, str | torch.device):
        raise TypeError(f"`device` must be a str, torch.device or None, got {device!r}.")
    return torch.empty(0).device if device is None else torch.device(device)


def _check_call(n: object, generator: object) -> int:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}; "
            f"pass torch.Generator().manual_seed(seed)."
        )
    return check_int("n", n, minimum=1)


def _check_toy_params(spec: str, fn: Callable[..., Tensor], params: dict[str, Any]) -> None:
    """Unknown keyword parameters of a toy, named with the valid ones."""
    import inspect

    valid = [p for p in inspect.signature(fn).parameters
             if p not in ("n", "generator", "dtype", "device")]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(f"toy {spec!r} has no parameter(s) {', '.join(unknown)}; its "
                        f"parameters are {', '.join(valid) or '(none)'}.")


def _check_magnitude(spec: str, points: Tensor) -> None:
    """Coordinates whose squared distances overflow the dtype make every OT cost and loss
    infinite: refuse them with the fix instead of training on inf/NaN."""
    if points.numel() == 0:
        return
    top = float(points.abs().max())
    limit = math.sqrt(torch.finfo(points.dtype).max) / 16.0  # |x - y|^2 * d stays finite
    if top > limit:
        raise ValueError(f"{spec}: coordinates up to {top:.3g} overflow squared distances in "
                         f"{points.dtype} (limit about {limit:.2g}); rescale the data (e.g. "
                         "standardise each column) or use float64.")


def get_sampler(
    spec: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    **params: Any,
) -> Sampler:
    r"""Resolve a data spec into a sampler ``(n, generator=None) -> Tensor (n, d)``.

    Args:
        spec: A toy name (see :data:`TOYS`), ``"gaussian"`` / ``"gaussian:D"``, or a path
            ending in ``.npy`` / ``.csv`` (see the module docstring for how rows are drawn).
        dtype: Floating dtype of the samples.
        device: Device of the samples (default: torch's default device).
        **params: Keyword parameters for a toy sampler (e.g. ``noise=0.05`` for moons);
            checked once here. Not accepted for Gaussian or file specs.
    Returns:
        A callable ``sampler(n, generator=None)`` returning a ``(n, d)`` tensor of ``dtype``
        on ``device``; ``d = dataset_dim(spec)``.
    Raises:
        ValueError: unknown name (the message lists the valid ones), bad ``gaussian:D``,
            unreadable file (see :func:`~otgen.data.io.load_cloud`), or bad toy parameters.
        TypeError: ``spec`` is not a string, unknown toy parameter, or ``params`` given to a
            Gaussian or file spec.
    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> get_sampler("moons", noise=0.05, noise_kind="gaussian")(8, g).shape
        torch.Size([8, 2])
    """
    spec = _check_spec(spec)
    out_device = _check_dtype_device(dtype, device)
    if spec in TOYS:
        fn = TOYS[spec]
        # Validate the parameters once, on a throw-away generator (global RNG untouched).
        _check_toy_params(spec, fn, params)
        fn(1, generator=torch.Generator(), dtype=dtype, device="cpu", **params)

        def toy(n: int, generator: torch.Generator | None = None) -> Tensor:
            return fn(n, generator=generator, dtype=dtype, device=out_device, **params)

        return toy
    if params:
        raise TypeError(
            f"`spec` {spec!r} takes no parameters, got {', '.join(sorted(params))}; "
            f"parameters apply only to the toys {', '.join(TOYS)}."
        )
    d = _gaussian_dim(spec)
    if d is not None:

        def gaussian(n: int, generator: torch.Generator | None = None) -> Tensor:
            n = _check_call(n, generator)
            draw = generator.device if generator is not None else out_device
            z = torch.randn(n, d, generator=generator, dtype=dtype, device=draw)
            return z.to(out_device)

        return gaussian
    if _is_file_spec(spec):
        points, weights = load_cloud(spec, dtype=dtype)  # (N, d), (N,) or None
        _check_magnitude(spec, points)

        def cloud(n: int, generator: torch.Generator | None = None) -> Tensor:
            n = _check_call(n, generator)
            draw = generator.device if generator is not None else torch.device("cpu")
            if weights is None:
                idx = torch.randint(points.shape[0], (n,), generator=generator, device=draw)
            else:
                w = weights.to(device=draw, dtype=torch.float64)
                idx = torch.multinomial(w, n, replacement=True, generator=generator)
            return points[idx.to(points.device)].to(out_device)

        return cloud
    raise _unknown(spec)


def dataset_dim(spec: str | os.PathLike[str]) -> int:
    """Dimension ``d`` of the samples of ``spec``: 2 for toys, ``D`` for ``gaussian:D``,
    the number of coordinate columns for a file (which is read to find out).

    Raises:
        ValueError: as :func:`get_sampler`.
    Example:
        >>> dataset_dim("moons"), dataset_dim("gaussian")
        (2, 2)
    """
    spec = _check_spec(spec)
    if spec in TOYS:
        return 2
    d = _gaussian_dim(spec)
    if d is not None:
        return d
    if _is_file_spec(spec):
        return int(load_cloud(spec)[0].shape[1])
    raise _unknown(spec)
