r"""Two-dimensional toy distributions, sampled in torch through an explicit generator.

Every sampler has the signature
``sample_<name>(n, *, generator=None, dtype=torch.float32, device=None, **params)`` and
returns a tensor of shape ``(n, 2)``. All randomness is drawn with ``torch`` from
``generator`` (the global torch RNG when it is ``None``), so a seeded generator reproduces
a sample exactly; nothing calls NumPy's RNG. Random numbers are drawn on the generator's
device (CPU by default) and the result is moved to ``device`` (default: torch's default
device). Rows are returned in random order (shuffled with the same generator) so that any
prefix ``x[:k]`` is itself a fair sample.

Conventions follow TorchCFM (``torchcfm.utils``) where it has the same name, FFJORD's
``lib/toy_data.py`` otherwise, and scikit-learn's ``make_*`` generators for the shapes:

=============  ===========================================================  ================
name           default law                                                  range (approx.)
=============  ===========================================================  ================
moons          TorchCFM: ``generate_moons(n, noise=0.2) * 3 - 1``           [-4, 6] x [-3, 3]
8gaussians     TorchCFM: 8 modes at radius 5, per-coordinate std 0.1**0.25  [-7, 7]^2
checkerboard   FFJORD: 8 uniform 2x2 squares of a 4x4 board                 [-4, 4]^2
circles        FFJORD: ``make_circles(factor=.5, noise=.08) * 3``           [-4, 4]^2
swissroll      FFJORD: ``make_swiss_roll(noise=1)[:, [0, 2]] / 5``          [-3, 3]^2
scurve         ``make_s_curve(noise=.1)[:, [0, 2]] * 2``                    [-2, 2] x [-4, 4]
spirals        FFJORD ``2spirals``: two 1.5-turn arms, / 3, noise 0.1       [-4, 4]^2
pinwheel       FFJORD ``pinwheel``: 5 curved arms                           [-4, 4]^2
=============  ===========================================================  ================

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> sample_moons(256, generator=g).shape
    torch.Size([256, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from otgen._validate import check_choice, check_int, check_positive

__all__ = [
    "TORCHCFM_8GAUSSIANS_STD",
    "sample_moons",
    "sample_8gaussians",
    "sample_checkerboard",
    "sample_circles",
    "sample_swissroll",
    "sample_scurve",
    "sample_spirals",
    "sample_pinwheel",
]

#: Per-coordinate std of TorchCFM's ``sample_8gaussians``: ``var=0.1`` is passed as
#: ``sqrt(var) * I`` to the *covariance* of ``MultivariateNormal``, so std = 0.1 ** 0.25.
TORCHCFM_8GAUSSIANS_STD: float = 0.1**0.25

NoiseKind = Literal["uniform-diagonal", "gaussian"]
_NOISE_KINDS = ("uniform-diagonal", "gaussian")


class _Rng:
    """Validated sampling context: draws on the generator's device, returns on ``device``."""

    def __init__(self, n: object, generator: object, dtype: object, device: object) -> None:
        self.n = check_int("n", n, minimum=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"`generator` must be a torch.Generator or None, got "
                f"{type(generator).__name__}; pass torch.Generator().manual_seed(seed)."
            )
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(
                f"`dtype` must be a floating torch dtype, got {dtype!r}; "
                f"use e.g. torch.float32 or torch.float64."
            )
        if device is not None and not isinstance(device, str | torch.device):
            raise TypeError(
                f"`device` must be a str, torch.device or None, got {type(device).__name__}."
            )
        self.generator = generator
        self.dtype = dtype
        self.out_device = torch.empty(0).device if device is None else torch.device(device)
        self.dev = generator.device if generator is not None else self.out_device  # draws

    def rand(self, *shape: int) -> Tensor:  # U[0, 1)
        return torch.rand(shape, generator=self.generator, dtype=self.dtype, device=self.dev)

    def randn(self, *shape: int) -> Tensor:  # N(0, 1)
        return torch.randn(shape, generator=self.generator, dtype=self.dtype, device=self.dev)

    def randint(self, high: int, *shape: int) -> Tensor:  # U{0, ..., high - 1}
        return torch.randint(high, shape, generator=self.generator, device=self.dev)

    def linspace(self, start: float, end: float, steps: int) -> Tensor:
        return torch.linspace(start, end, steps, dtype=self.dtype, device=self.dev)

    def finish(self, x: Tensor) -> Tensor:
        """Shuffle the rows with the generator and move to the output device."""
        perm = torch.randperm(x.shape[0], generator=self.generator, device=self.dev)
        return x[perm].to(self.out_device)


def _nonneg(name: str, value: object) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"`{name}` must be a number >= 0, got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}; pass e.g. 0.1.")
    return float(value)


def _pair(name: str, value: object) -> tuple[float, float]:
    """A number (used for both coordinates) or a pair of finite numbers."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, Tensor):
        value = value.detach().reshape(-1).tolist()
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)
    ):
        raise ValueError(
            f"`{name}` must be a finite number or a pair (dx, dy) of finite numbers, got "
            f"{value!r}; pass e.g. (-1.0, 0.0)."
        )
    return float(value[0]), float(value[1])


def _angles(rng: _Rng, m: int, end: float, grid: bool, endpoint: bool) -> Tensor:
    """``m`` angles in [0, end]: evenly spaced (scikit-learn's grid) or i.i.d. uniform."""
    if not grid:
        return rng.rand(m) * end
    if endpoint:
        return rng.linspace(0.0, end, m)
    return rng.linspace(0.0, end, m + 1)[:m]


# --------------------------------------------------------------------------- samplers


def sample_moons(
    n: int,
    *,
    noise: float = 0.2,
    noise_kind: NoiseKind = "uniform-diagonal",
    scale: float = 3.0,
    shift: float | Sequence[float] = -1.0,
    grid: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Two interleaving half circles ("two moons").

    The unit moons of scikit-learn's ``make_moons`` (and torchdyn's ``generate_moons``):
    ``n_out = n // 2`` points on the upper arc and ``n_in = n - n_out`` on the lower one,

        outer: (cos θ, sin θ),   inner: (1 - cos θ, 1/2 - sin θ),   θ ∈ [0, π],

    with θ evenly spaced (``np.linspace(0, π, m)``) when ``grid`` (the libraries' choice)
    or i.i.d. uniform otherwise. Then noise ε is added and the result is mapped affinely:

        x = scale · (m(θ) + ε) + shift.

    ``noise_kind`` selects ε:

    - ``"uniform-diagonal"`` (TorchCFM / torchdyn quirk): ε = noise · u · (1, 1) with one
      u ~ U[0, 1) per point, i.e. every point slides along the diagonal by the same amount
      in both coordinates (a uniform, not Gaussian, jitter with non-zero mean noise/2).
    - ``"gaussian"`` (scikit-learn): ε ~ N(0, noise² I), independent coordinates.

    The defaults reproduce TorchCFM's ``sample_moons(n) = generate_moons(n, noise=0.2)[0] * 3
    - 1`` as a set of points (TorchCFM returns the outer moon first; we shuffle the rows).
    The flow-matching benchmark's "``make_moons(noise=0.05) * 2``, then ``x[:, 0] -= 1``" is
    ``sample_moons(n, noise=0.05, noise_kind="gaussian", scale=2.0, shift=(-1.0, 0.0))``.

    Args:
        n: Number of points, >= 1.
        noise: Noise magnitude (>= 0) in unit-moon coordinates, before ``scale``.
        noise_kind: ``"uniform-diagonal"`` or ``"gaussian"``, see above.
        scale: Positive factor applied after the noise.
        shift: Offset added last, a number (both coordinates) or a pair ``(dx, dy)``.
        grid: Evenly spaced arc positions (True) or i.i.d. uniform angles (False).
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)``. Defaults: x ∈ [-4, 5.6], y ∈ [-2.5, 2.6].
    Raises:
        ValueError: bad ``n``, negative ``noise``, non-positive ``scale``, bad ``shift``
            or unknown ``noise_kind``.
    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = sample_moons(500, noise=0.05, noise_kind="gaussian", scale=2.0,
        ...                  shift=(-1.0, 0.0), generator=g)
        >>> x.shape, x.dtype
        (torch.Size([500, 2]), torch.float32)
    """
    rng = _Rng(n, generator, dtype, device)
    noise = _nonneg("noise", noise)
    check_choice("noise_kind", noise_kind, _NOISE_KINDS)
    s = check_positive("scale", scale)
    dx, dy = _pair("shift", shift)
    n_out = rng.n // 2
    n_in = rng.n - n_out
    a_out = _angles(rng, n_out, math.pi, grid, endpoint=True)
    a_in = _angles(rng, n_in, math.pi, grid, endpoint=True)
    x = torch.cat([torch.cos(a_out), 1.0 - torch.cos(a_in)])  # (n,)
    y = torch.cat([torch.sin(a_out), 0.5 - torch.sin(a_in)])  # (n,)
    pts = torch.stack([x, y], dim=1)  # (n, 2)
    if noise_kind == "uniform-diagonal":
        pts = pts + noise * rng.rand(rng.n, 1)  # same jitter on both coordinates
    else:
        pts = pts + noise * rng.randn(rng.n, 2)
    shift_t = torch.tensor([dx, dy], dtype=rng.dtype, device=rng.dev)
    return rng.finish(s * pts + shift_t)


def sample_8gaussians(
    n: int,
    *,
    radius: float = 5.0,
    std: float = TORCHCFM_8GAUSSIANS_STD,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Equal mixture of 8 isotropic Gaussians on a circle.

        x = radius · (cos(kπ/4), sin(kπ/4)) + std · z,   k ~ U{0..7},  z ~ N(0, I₂).

    The defaults reproduce TorchCFM's ``sample_8gaussians(n) = eight_normal_sample(n, 2,
    scale=5, var=0.1)``. Note the quirk there: ``var`` is passed as ``sqrt(var) * I`` to the
    *covariance* of ``MultivariateNormal``, so its per-coordinate std is ``var ** 0.25 =
    0.1 ** 0.25 ≈ 0.562`` (:data:`TORCHCFM_8GAUSSIANS_STD`), not ``sqrt(0.1) ≈ 0.316``.
    Our flow-matching benchmark's "radius 5, std √0.1" is
    ``sample_8gaussians(n, radius=5.0, std=0.1 ** 0.5)``; FFJORD's ``8gaussians`` is
    ``radius=4 / 1.414, std=0.5 / 1.414``.

    Args:
        n: Number of points, >= 1.
        radius: Distance of the mode centres from the origin, > 0.
        std: Per-coordinate standard deviation of each mode, >= 0.
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)``; with the defaults ≈ [-7, 7]².
    Raises:
        ValueError: bad ``n``, ``radius`` or ``std``.
    Example:
        >>> x = sample_8gaussians(1000, std=0.0)
        >>> torch.allclose(x.norm(dim=1), torch.full((1000,), 5.0))
        True
    """
    rng = _Rng(n, generator, dtype, device)
    r = check_positive("radius", radius)
    sd = _nonneg("std", std)
    k = rng.randint(8, rng.n)  # (n,)
    theta = k.to(rng.dtype) * (math.pi / 4)
    centres = r * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)  # (n, 2)
    return rng.finish(centres + sd * rng.randn(rng.n, 2))


def sample_checkerboard(
    n: int,
    *,
    scale: float = 2.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Uniform law on the 8 dark squares of a 4 x 4 checkerboard (FFJORD's formula).

        x₁ ~ U[-2, 2),  x₂ = u - 2b + (⌊x₁⌋ mod 2),  u ~ U[0, 1),  b ~ U{0, 1},
        x = scale · (x₁, x₂).

    With ``scale=2`` (FFJORD / TorchCFM tutorials) the support is 8 squares of side 2
    tiling [-4, 4]² in a checker pattern; the density is 1/32 on them.

    Args:
        n: Number of points, >= 1.
        scale: Positive factor; the support is [-2 scale, 2 scale]².
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)`` in [-2 scale, 2 scale]².
    """
    rng = _Rng(n, generator, dtype, device)
    s = check_positive("scale", scale)
    x1 = rng.rand(rng.n) * 4.0 - 2.0
    x2 = rng.rand(rng.n) - 2.0 * rng.randint(2, rng.n).to(rng.dtype)
    x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
    return rng.finish(s * torch.stack([x1, x2], dim=1))


def sample_circles(
    n: int,
    *,
    factor: float = 0.5,
    noise: float = 0.08,
    scale: float = 3.0,
    grid: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Two concentric circles (scikit-learn's ``make_circles``, FFJORD's scaling).

    ``n // 2`` points on the unit circle and ``n - n // 2`` on the circle of radius
    ``factor``, at angles evenly spaced over [0, 2π) (``grid``) or i.i.d. uniform; then

        x = scale · (c(θ) + noise · z),   z ~ N(0, I₂).

    The defaults are FFJORD's ``make_circles(factor=.5, noise=.08) * 3``: radii 3 and 1.5
    with per-coordinate noise std 0.24, range ≈ [-4, 4]².

    Args:
        n: Number of points, >= 1.
        factor: Inner radius relative to the outer one, in (0, 1).
        noise: Gaussian noise std (>= 0) before ``scale``.
        scale: Positive outer radius.
        grid: Evenly spaced angles (True) or i.i.d. uniform (False).
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)``.
    """
    rng = _Rng(n, generator, dtype, device)
    f = check_positive("factor", factor)
    if f >= 1.0:
        raise ValueError(f"`factor` must lie in (0, 1), got {f!r}; pass e.g. 0.5.")
    noise = _nonneg("noise", noise)
    s = check_positive("scale", scale)
    n_out = rng.n // 2
    n_in = rng.n - n_out
    theta = torch.cat(
        [
            _angles(rng, n_out, 2 * math.pi, grid, endpoint=False),
            _angles(rng, n_in, 2 * math.pi, grid, endpoint=False),
        ]
    )
    r = torch.cat([theta.new_ones(n_out), theta.new_full((n_in,), f)])
    pts = r[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)  # (n, 2)
    return rng.finish(s * (pts + noise * rng.randn(rng.n, 2)))


def sample_swissroll(
    n: int,
    *,
    noise: float = 1.0,
    scale: float = 0.2,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Two-dimensional Swiss roll (scikit-learn's ``make_swiss_roll`` coordinates 0 and 2).

        t = (3π/2)(1 + 2u),  u ~ U[0, 1),   x = scale · ((t cos t, t sin t) + noise · z).

    The defaults are FFJORD's ``make_swiss_roll(noise=1.0)[0][:, [0, 2]] / 5``: a spiral
    of radius 0.94 to 2.83 with noise std 0.2, range ≈ [-3, 3]².

    Args:
        n: Number of points, >= 1.
        noise: Gaussian noise std (>= 0) before ``scale``.
        scale: Positive factor.
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)``.
    """
    rng = _Rng(n, generator, dtype, device)
    noise = _nonneg("noise", noise)
    s = check_positive("scale", scale)
    t = 1.5 * math.pi * (1.0 + 2.0 * rng.rand(rng.n))
    pts = t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)  # (n, 2)
    return rng.finish(s * (pts + noise * rng.randn(rng.n, 2)))


def sample_scurve(
    n: int,
    *,
    noise: float = 0.1,
    scale: float = 2.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Two-dimensional "S" (scikit-learn's ``make_s_curve`` coordinates 0 and 2).

        t = 3π(u - 1/2),  u ~ U[0, 1),
        x = scale · ((sin t, sign(t)(cos t - 1)) + noise · z),   z ~ N(0, I₂).

    The noise-free curve lies in [-1, 1] x [-2, 2]; the defaults give ≈ [-2.5, 2.5] x
    [-4.5, 4.5].

    Args:
        n: Number of points, >= 1.
        noise: Gaussian noise std (>= 0) before ``scale``.
        scale: Positive factor.
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)``.
    """
    rng = _Rng(n, generator, dtype, device)
    noise = _nonneg("noise", noise)
    s = check_positive("scale", scale)
    t = 3.0 * math.pi * (rng.rand(rng.n) - 0.5)
    pts = torch.stack([torch.sin(t), torch.sign(t) * (torch.cos(t) - 1.0)], dim=1)
    return rng.finish(s * (pts + noise * rng.randn(rng.n, 2)))


def sample_spirals(
    n: int,
    *,
    turns: float = 1.5,
    jitter: float = 0.5,
    noise: float = 0.1,
    scale: float = 1.0 / 3.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Two interleaved Archimedean spirals (FFJORD's ``2spirals``).

    ``n - n // 2`` points on one arm and ``n // 2`` on its mirror image (x ↦ -x):

        r = 2π · turns · √u,   a = (-r cos r + jitter · u₁,  r sin r + jitter · u₂),
        x = ± scale · a + noise · z,

    with u, u₁, u₂ ~ U[0, 1) and z ~ N(0, I₂); note ``noise`` is added *after* scaling,
    as in FFJORD. The defaults (540°, jitter 0.5, / 3, noise 0.1) give ≈ [-4, 4]².

    Args:
        n: Number of points, >= 1.
        turns: Number of turns of each arm, > 0.
        jitter: Uniform jitter (>= 0) before scaling.
        noise: Gaussian noise std (>= 0) after scaling.
        scale: Positive factor.
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)``.
    """
    rng = _Rng(n, generator, dtype, device)
    tu = check_positive("turns", turns)
    jit = _nonneg("jitter", jitter)
    noise = _nonneg("noise", noise)
    s = check_positive("scale", scale)
    r = torch.sqrt(rng.rand(rng.n)) * (2.0 * math.pi * tu)
    arm = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], dim=1) + jit * rng.rand(rng.n, 2)
    sign = torch.ones(rng.n, 1, dtype=rng.dtype, device=rng.dev)
    sign[rng.n - rng.n // 2 :] = -1.0
    return rng.finish(s * sign * arm + noise * rng.randn(rng.n, 2))


def sample_pinwheel(
    n: int,
    *,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
    scale: float = 2.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Pinwheel: ``arms`` curved Gaussian arms (FFJORD's ``pinwheel``).

    Point i belongs to arm k = i mod ``arms``. With f = (1 + radial_std · z₁,
    tangential_std · z₂), z ~ N(0, I₂), and angle φ = 2πk/arms + rate · exp(f₁):

        x = scale · (f₁ cos φ + f₂ sin φ,  -f₁ sin φ + f₂ cos φ),

    i.e. f rotated by -φ (FFJORD's ``einsum("ti,tij->tj", f, R(φ))``). Defaults ≈ [-4, 4]².

    Args:
        n: Number of points, >= 1.
        arms: Number of arms, >= 1.
        radial_std, tangential_std: Stds (>= 0) of the two feature coordinates.
        rate: Curvature of the arms (>= 0).
        scale: Positive factor.
        generator, dtype, device: See the module docstring.
    Returns:
        Tensor of shape ``(n, 2)``.
    """
    rng = _Rng(n, generator, dtype, device)
    k = check_int("arms", arms, minimum=1)
    rs = _nonneg("radial_std", radial_std)
    ts = _nonneg("tangential_std", tangential_std)
    rt = _nonneg("rate", rate)
    s = check_positive("scale", scale)
    z = rng.randn(rng.n, 2)
    f1 = 1.0 + rs * z[:, 0]
    f2 = ts * z[:, 1]
    label = torch.arange(rng.n, device=rng.dev) % k
    phi = label.to(rng.dtype) * (2.0 * math.pi / k) + rt * torch.exp(f1)
    c, sn = torch.cos(phi), torch.sin(phi)
    return rng.finish(s * torch.stack([f1 * c + f2 * sn, -f1 * sn + f2 * c], dim=1))
