r"""Optimal transport on the real line through quantile functions.

For probability measures :math:`\mu, \nu` on :math:`\mathbb{R}` with cumulative
distribution functions :math:`F, G`, the optimal plan is the monotone rearrangement and

.. math::

    W_p^p(\mu, \nu) = \int_0^1 |F^{-1}(t) - G^{-1}(t)|^p \, dt,
    \qquad F^{-1}(t) = \min\{x_i : F(x_i) \ge t\}.

For weighted empirical measures :math:`\mu = \sum_i a_i \delta_{u_i}`,
:math:`\nu = \sum_j b_j \delta_{v_j}` both quantile functions are piecewise constant, with
jumps at the cumulative weights. On the merged, sorted grid
:math:`0 = q_0 \le q_1 \le \dots \le q_{n+m}` of all cumulative weights of :math:`a` and
:math:`b` the integral is the exact finite sum

.. math::

    W_p^p = \sum_{k=1}^{n+m} (q_k - q_{k-1})\, |F^{-1}(q_k) - G^{-1}(q_k)|^p,

computed in :math:`O((n+m)\log(n+m))` by sorting and ``torch.searchsorted``.

The monotone (quantile) coupling is optimal for every convex cost, so for :math:`p \ge 1`
this is the OT cost with ground cost :math:`|x - y|^p`. For :math:`0 < p < 1` the functions
still return the quantile formula above (the cost of the monotone coupling), which is then
only an upper bound on the OT cost with the concave cost :math:`|x - y|^p`.

Gradient strategy: the sum is differentiated as written. Gradients reach the support
points ``u``, ``v`` through the sort (a permutation) and the weights through the grid
spacings :math:`q_k - q_{k-1}` (the optimal plan, fixed by the piecewise-constant
``searchsorted`` indices, is held fixed, as the envelope theorem allows).

Example:
    >>> u, v = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([5.0, 6.0])
    >>> wasserstein_1d(u, v, p=1.0)
    tensor(4.1667)
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from otgen._validate import as_weights, check_finite, check_positive, check_tensor
from otgen.ot.costs import _safe_root

__all__ = [
    "monotone_map",
    "quantile_function",
    "wasserstein_1d",
    "wasserstein_1d_cost",
]


# --------------------------------------------------------------------------- validation


def _as_line(name: str, u: object) -> Tensor:
    """Validate 1-D samples of shape ``(n,)`` or ``(n, 1)``; return them as ``(n,)``."""
    u = check_tensor(name, u)
    if u.ndim == 2 and u.shape[1] == 1:
        u = u[:, 0]
    if u.ndim != 1:
        raise ValueError(
            f"`{name}` must hold points on the real line, shape (n,) or (n, 1), got shape "
            f"{tuple(u.shape)}; for d > 1 use sliced_wasserstein or the exact solver."
        )
    if u.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one point, got shape (0,).")
    return check_finite(name, u)


def _as_prob(name: str, w: object, like: Tensor) -> Tensor:
    """Validate (or make uniform) weights for ``like`` and normalise them to mass 1."""
    # Validate a detached view (the checks read values only), then keep the caller's graph.
    checked = as_weights(name, w.detach() if isinstance(w, Tensor) else w, like.shape[0], like)
    w = checked if w is None else cast(Tensor, w)
    return w / w.sum()


def _check_p(p: object) -> float:
    return cast(float, check_positive("p", p))


# --------------------------------------------------------------------------- kernels


def _abs_pow(d: Tensor, p: float) -> Tensor:
    """``|d|^p`` with a zero (not NaN) gradient at ``d = 0`` for every ``p > 0``."""
    a = d.abs()
    if p == 1.0:
        return a
    if p > 1.0:
        return a**p
    pos = a > 0
    return torch.where(pos, torch.where(pos, a, torch.ones_like(a)) ** p, torch.zeros_like(a))


def quantile_function(qs: Tensor, cws: Tensor, xs: Tensor) -> Tensor:
    r"""Evaluate the quantile function of a discrete measure, batched.

    :math:`F^{-1}(q) = x_{i(q)}` with :math:`i(q) = \min\{i : c_i \ge q\}` (the left-continuous
    generalised inverse of the CDF), clamped to the last point when :math:`q` exceeds
    :math:`c_{n-1}` by round-off.

    Args:
        qs: Levels in :math:`[0, 1]`, shape ``(*, k)``.
        cws: Cumulative weights :math:`c_i = \sum_{j \le i} w_j` (non-decreasing), shape
            ``(*, n)`` with the same leading dimensions as ``qs``.
        xs: Support points sorted in increasing order, shape ``(*, n)``.
    Returns:
        :math:`F^{-1}(q)`, shape ``(*, k)``, differentiable in ``xs`` (gathered entries).
    Raises:
        ValueError: if the shapes disagree.
    Example:
        >>> quantile_function(torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.5, 1.0]),
        ...                   torch.tensor([-1.0, 2.0]))
        tensor([-1., -1.,  2.])
    """
    if cws.shape != xs.shape or qs.shape[:-1] != cws.shape[:-1] or cws.shape[-1] == 0:
        raise ValueError(
            f"`cws` and `xs` must have one shape (*, n) with n >= 1 and `qs` the same leading "
            f"dimensions (*, k), got `qs` {tuple(qs.shape)}, `cws` {tuple(cws.shape)}, `xs` "
            f"{tuple(xs.shape)}; pass cumulative weights of the sorted points."
        )
    idx = torch.searchsorted(cws.detach().contiguous(), qs.detach().contiguous(), right=False)
    idx = idx.clamp_max(xs.shape[-1] - 1)  # (*, k)
    return torch.gather(xs, -1, idx)


def _wasserstein_pow_sorted(u: Tensor, v: Tensor, uw: Tensor, vw: Tensor, p: float) -> Tensor:
    r"""W_p^p between sorted weighted samples, batched over leading dims.

    Args:
        u: Sorted points ``(*, n)``; ``uw`` their normalised weights ``(*, n)``.
        v: Sorted points ``(*, m)``; ``vw`` their normalised weights ``(*, m)``.
    Returns:
        ``(*,)`` tensor of :math:`W_p^p`.
    """
    cu, cv = uw.cumsum(-1), vw.cumsum(-1)  # (*, n), (*, m)
    qs, _ = torch.sort(torch.cat([cu, cv], dim=-1), dim=-1)  # (*, n + m), merged grid
    dq = torch.diff(qs, dim=-1, prepend=torch.zeros_like(qs[..., :1])).clamp_min(0.0)
    gap = quantile_function(qs, cu, u) - quantile_function(qs, cv, v)  # (*, n + m)
    return (dq * _abs_pow(gap, p)).sum(-1)


def _wasserstein_pow_uniform(u: Tensor, v: Tensor, p: float) -> Tensor:
    """W_p^p between sorted uniform samples of equal size ``(*, n)``: the sorted matching."""
    return _abs_pow(u - v, p).mean(-1)


def _wasserstein_pow(
    u: Tensor, v: Tensor, uw: Tensor | None, vw: Tensor | None, p: float
) -> Tensor:
    """W_p^p for unsorted samples ``(*, n)``, ``(*, m)``; weights ``None`` mean uniform.

    Weights may be ``(n,)`` (shared) or ``(*, n)``; they must be normalised.
    """
    if uw is None and vw is None and u.shape[-1] == v.shape[-1]:
        return _wasserstein_pow_uniform(torch.sort(u, -1)[0], torch.sort(v, -1)[0], p)
    us, iu = torch.sort(u, dim=-1)
    vs, iv = torch.sort(v, dim=-1)
    uw_s = _gather_weights(uw, iu, u)
    vw_s = _gather_weights(vw, iv, v)
    return _wasserstein_pow_sorted(us, vs, uw_s, vw_s, p)


def _gather_weights(w: Tensor | None, perm: Tensor, like: Tensor) -> Tensor:
    """Weights reordered by the sorting permutation ``perm`` ``(*, n)`` (uniform if None)."""
    if w is None:
        return torch.full(perm.shape, 1.0 / perm.shape[-1], dtype=like.dtype, device=like.device)
    if w.ndim == 1:
        return w[perm]
    return torch.gather(w, -1, perm)


# --------------------------------------------------------------------------- public API


def _prepare(
    u: object, v: object, u_weights: object, v_weights: object, p: object
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, float]:
    u, v = _as_line("u", u), _as_line("v", v)
    if u.dtype != v.dtype or u.device != v.device:
        raise TypeError(
            f"`v` is a {v.dtype} tensor on {v.device} but `u` is {u.dtype} on {u.device}; "
            f"cast both to one dtype and device (e.g. v.to(u))."
        )
    uw = None if u_weights is None else _as_prob("u_weights", u_weights, u)
    vw = None if v_weights is None else _as_prob("v_weights", v_weights, v)
    if (uw is None) != (vw is None) or (uw is None and u.shape[0] != v.shape[0]):
        uw = uw if uw is not None else _as_prob("u_weights", None, u)
        vw = vw if vw is not None else _as_prob("v_weights", None, v)
    return u, v, uw, vw, _check_p(p)


def wasserstein_1d_cost(
    u: Tensor,
    v: Tensor,
    u_weights: Tensor | None = None,
    v_weights: Tensor | None = None,
    *,
    p: float = 1.0,
) -> Tensor:
    r"""Transport cost :math:`W_p^p` between weighted empirical measures on the line.

    :math:`W_p^p = \int_0^1 |F^{-1}(t) - G^{-1}(t)|^p\,dt`, computed exactly on the merged
    grid of cumulative weights (see the module docstring). Weights are normalised to mass
    1 each; for uniform weights and ``n == m`` this is the sorted matching
    :math:`\frac1n \sum_i |u_{(i)} - v_{(i)}|^p`.

    Args:
        u: Support of :math:`\mu`, shape ``(n,)`` or ``(n, 1)``.
        v: Support of :math:`\nu`, shape ``(m,)`` or ``(m, 1)``, same dtype/device as ``u``.
        u_weights: Non-negative weights ``(n,)`` with positive mass, or ``None`` (uniform).
        v_weights: Non-negative weights ``(m,)`` with positive mass, or ``None`` (uniform).
        p: Exponent :math:`p > 0` of the ground cost :math:`|x - y|^p` (for ``p < 1``, the
            cost of the monotone coupling; see the module docstring).
    Returns:
        :math:`W_p^p`, shape ``()``, same dtype/device as ``u``; differentiable in ``u``,
        ``v`` and the weights.
    Raises:
        TypeError: non-floating inputs or mixed dtypes/devices.
        ValueError: wrong shapes, NaN/inf, negative weights, zero mass, or ``p <= 0``.
    Example:
        >>> wasserstein_1d_cost(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0]), p=2.0)
        tensor(2.5000)
    """
    u, v, uw, vw, p = _prepare(u, v, u_weights, v_weights, p)
    return _wasserstein_pow(u, v, uw, vw, p)


def wasserstein_1d(
    u: Tensor,
    v: Tensor,
    u_weights: Tensor | None = None,
    v_weights: Tensor | None = None,
    *,
    p: float = 1.0,
) -> Tensor:
    r"""Wasserstein distance :math:`W_p` (not :math:`W_p^p`) between measures on the line.

    :math:`W_p = \big(\int_0^1 |F^{-1}(t) - G^{-1}(t)|^p\,dt\big)^{1/p}`, see
    :func:`wasserstein_1d_cost`. The root has gradient 0 (not NaN) where the distance is 0.

    Args:
        u: Support of :math:`\mu`, shape ``(n,)`` or ``(n, 1)``.
        v: Support of :math:`\nu`, shape ``(m,)`` or ``(m, 1)``, same dtype/device as ``u``.
        u_weights: Non-negative weights ``(n,)`` with positive mass, or ``None`` (uniform).
        v_weights: Non-negative weights ``(m,)`` with positive mass, or ``None`` (uniform).
        p: Exponent :math:`p > 0` (the OT distance for :math:`p \ge 1`; for ``p < 1`` the
            quantile formula, see the module docstring).
    Returns:
        :math:`W_p`, shape ``()``, same dtype/device as ``u``; differentiable.
    Raises:
        TypeError: non-floating inputs or mixed dtypes/devices.
        ValueError: wrong shapes, NaN/inf, negative weights, zero mass, or ``p <= 0``.
    Example:
        >>> wasserstein_1d(torch.tensor([0.0, 1.0]), torch.tensor([3.0, 4.0]), p=2.0)
        tensor(3.)
    """
    u, v, uw, vw, p = _prepare(u, v, u_weights, v_weights, p)
    return _safe_root(_wasserstein_pow(u, v, uw, vw, p), 1.0 / p)


def monotone_map(x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> Tensor:
    r"""The 1-D optimal (monotone) map from :math:`\mu = \sum a_i \delta_{x_i}` to
    :math:`\nu = \sum b_j \delta_{y_j}`, evaluated at the points ``x``.

    :math:`T(x_i) = G^{-1}(\bar F_i)` with the mid-point CDF
    :math:`\bar F_i = \sum_{k < i} a_{(k)} + \tfrac12 a_{(i)}` in sorted order (tied points
    get consecutive mid-points, i.e. the sorted matching). For uniform weights and
    ``n == m`` this is the sorted matching :math:`T(x_{(i)}) = y_{(i)}`; in general it is a
    non-decreasing function of ``x``. When a source atom is split by the optimal plan,
    :math:`T` returns the target point receiving its mid-point mass.

    Args:
        x: Source points, shape ``(n,)`` or ``(n, 1)``.
        y: Target points, shape ``(m,)`` or ``(m, 1)``, same dtype/device as ``x``.
        a: Source weights ``(n,)`` (non-negative, positive mass) or ``None`` (uniform).
        b: Target weights ``(m,)`` (non-negative, positive mass) or ``None`` (uniform).
    Returns:
        :math:`T(x)`, same shape as ``x``; differentiable in ``y`` (entries of ``y`` are
        selected), piecewise constant (zero gradient) in ``x``, ``a`` and ``b``.
    Raises:
        TypeError: non-floating inputs or mixed dtypes/devices.
        ValueError: wrong shapes, NaN/inf, negative weights or zero mass.
    Example:
        >>> monotone_map(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([30.0, 10.0, 20.0]))
        tensor([30., 10., 20.])
    """
    shape = x.shape if isinstance(x, Tensor) else None
    xl, yl = _as_line("x", x), _as_line("y", y)
    if xl.dtype != yl.dtype or xl.device != yl.device:
        raise TypeError(
            f"`y` is a {yl.dtype} tensor on {yl.device} but `x` is {xl.dtype} on "
            f"{xl.device}; cast both to one dtype and device (e.g. y.to(x))."
        )
    aw, bw = _as_prob("a", a, xl), _as_prob("b", b, yl)
    xs_, ix = torch.sort(xl.detach(), stable=True)
    ys, iy = torch.sort(yl, stable=True)
    a_s, b_s = aw.detach()[ix], bw.detach()[iy]
    mid = a_s.cumsum(0) - 0.5 * a_s  # (n,), mid-point CDF of the sorted source
    t_sorted = quantile_function(mid, b_s.cumsum(0), ys)  # (n,)
    out = torch.empty_like(t_sorted).scatter(0, ix, t_sorted)
    return out.reshape(shape) if shape is not None else out
