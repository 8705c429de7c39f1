r"""Closed-form optimal transport between Gaussians (Bures--Wasserstein geometry).

For :math:`\mu_0 = N(m_0, S_0)` and :math:`\mu_1 = N(m_1, S_1)` on :math:`\mathbb{R}^d`,

.. math::

    W_2^2(\mu_0, \mu_1) = |m_0 - m_1|^2 + \operatorname{tr} S_0 + \operatorname{tr} S_1
        - 2 \operatorname{tr} (S_0^{1/2} S_1 S_0^{1/2})^{1/2},

the Brenier map is affine, :math:`T(x) = m_1 + A (x - m_0)` with the symmetric PSD matrix
:math:`A = S_0^{-1/2} (S_0^{1/2} S_1 S_0^{1/2})^{1/2} S_0^{-1/2}` (so :math:`A S_0 A = S_1`),
and the McCann geodesic :math:`\mu_t = ((1-t)\,\mathrm{id} + t T)_\# \mu_0` stays Gaussian.

Every function is batched over leading dimensions: means have shape ``(*, d)`` and
covariances ``(*, d, d)``, where the batch shapes broadcast against each other. Results keep
the caller's dtype and device and are differentiable.

Gradient strategy: matrix square roots are taken with ``torch.linalg.eigh`` of the
symmetrised matrix (eigenvalues clamped at 0) and differentiated with the Daleckii--Krein
formula :math:`dS^{1/2} = V (F \circ V^\top dS\, V) V^\top`,
:math:`F_{ij} = 1 / (\sqrt{\lambda_i} + \sqrt{\lambda_j})`, which, unlike the generic
``eigh`` backward, stays finite for repeated eigenvalues (e.g. :math:`S = I`). Second
derivatives through these roots are not supported (``once_differentiable``).

Example:
    >>> m0, m1 = torch.zeros(2), torch.ones(2)
    >>> gaussian_w2(m0, torch.eye(2), m1, 4 * torch.eye(2))  # sqrt(|1|^2 * 2 + 2 * (2-1)^2)
    tensor(2.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from otgen._validate import check_finite, check_same_dtype_device, check_tensor
from otgen.ot.costs import _safe_root

__all__ = [
    "GaussianMap",
    "bures_map",
    "gaussian_mccann",
    "gaussian_w2",
    "gaussian_w2_squared",
    "inv_sqrtm_psd",
    "sqrtm_psd",
]


# --------------------------------------------------------------------------- validation


def _tol(dtype: torch.dtype) -> float:
    """Relative tolerance for symmetry / PSD checks: sqrt of the machine epsilon."""
    return float(torch.finfo(dtype).eps) ** 0.5


def _check_cov(name: str, S: object) -> Tensor:
    """Validate a batch of covariances ``(*, d, d)``: square, finite, symmetric, PSD-ish."""
    S = check_tensor(name, S)
    if S.ndim < 2 or S.shape[-1] != S.shape[-2] or S.shape[-1] == 0:
        raise ValueError(
            f"`{name}` must be a batch of square matrices of shape (*, d, d) with d >= 1, got "
            f"shape {tuple(S.shape)}; pass a covariance such as torch.cov(x.T) "
            f"(use {name}.reshape(1, 1) for a 1-D variance)."
        )
    check_finite(name, S)
    Sd = S.detach()
    scale = Sd.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(S.dtype).tiny)  # (*,)
    asym = (Sd - Sd.mT).abs().amax(dim=(-2, -1))  # (*,)
    worst = float((asym / scale).max())
    if worst > _tol(S.dtype):
        raise ValueError(
            f"`{name}` must be symmetric, got max |{name} - {name}^T| / max |{name}| = "
            f"{worst:.3g} (tolerance {_tol(S.dtype):.1g}); symmetrise it with "
            f"({name} + {name}.mT) / 2."
        )
    return S


def _check_mean(name: str, m: object) -> Tensor:
    m = check_tensor(name, m)
    if m.ndim < 1 or m.shape[-1] == 0:
        raise ValueError(
            f"`{name}` must be a batch of means of shape (*, d) with d >= 1, got shape "
            f"{tuple(m.shape)}; use {name}.reshape(1) for a 1-D mean."
        )
    return check_finite(name, m)


def _check_gaussians(m0: object, S0: object, m1: object, S1: object) -> tuple[Tensor, ...]:
    """Validate two batches of Gaussians; return them and the broadcast batch shape."""
    m0, m1 = _check_mean("m0", m0), _check_mean("m1", m1)
    S0, S1 = _check_cov("S0", S0), _check_cov("S1", S1)
    check_same_dtype_device(("m0", m0), ("S0", S0), ("m1", m1), ("S1", S1))
    d = m0.shape[-1]
    for name, size in (("S0", S0.shape[-1]), ("m1", m1.shape[-1]), ("S1", S1.shape[-1])):
        if size != d:
            raise ValueError(
                f"`{name}` must have dimension d = {d} to match `m0` of shape "
                f"{tuple(m0.shape)}, got d = {size}; pass means (*, d) and covariances "
                f"(*, d, d) of one dimension."
            )
    try:
        torch.broadcast_shapes(m0.shape[:-1], S0.shape[:-2], m1.shape[:-1], S1.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch shapes of `m0` {tuple(m0.shape[:-1])}, `S0` {tuple(S0.shape[:-2])}, "
            f"`m1` {tuple(m1.shape[:-1])}, `S1` {tuple(S1.shape[:-2])} do not broadcast; "
            f"give them matching leading dimensions (or none)."
        ) from None
    return m0, S0, m1, S1


def _eigh_psd(name: str, S: Tensor) -> tuple[Tensor, Tensor]:
    """Detached eigendecomposition of symmetric ``S``; raise if clearly not PSD."""
    lam, V = torch.linalg.eigh(S.detach())  # (*, d), (*, d, d)
    scale = lam.abs().amax(-1).clamp_min(torch.finfo(S.dtype).tiny)  # (*,)
    worst = float((-lam.amin(-1) / scale).max())
    if worst > _tol(S.dtype) * S.shape[-1]:
        raise ValueError(
            f"`{name}` must be positive semi-definite, got an eigenvalue of "
            f"{-worst:.3g} x its largest |eigenvalue|; pass a covariance, e.g. "
            f"B @ B.mT, or add a small ridge eps * I."
        )
    return lam, V


# --------------------------------------------------------------------------- square roots


class _SpectralFunction(torch.autograd.Function):
    """``V diag(f(lam)) V^T`` with the Daleckii--Krein backward ``V (F o V^T G V) V^T``.

    ``lam``, ``V`` (detached eigenpairs of the symmetric input), ``f`` ``(*, d)`` and the
    divided-difference matrix ``F`` ``(*, d, d)`` are computed by the caller; the function
    only wires them into autograd so the gradient reaches ``S``.
    """

    @staticmethod
    def forward(ctx, S: Tensor, V: Tensor, f: Tensor, F: Tensor) -> Tensor:
        ctx.save_for_backward(V, F)
        return (V * f[..., None, :]) @ V.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, G: Tensor) -> tuple[Tensor, None, None, None]:
        V, F = ctx.saved_tensors
        return V @ (F * (V.mT @ G @ V)) @ V.mT, None, None, None


def _sqrt_pieces(lam: Tensor) -> tuple[Tensor, Tensor]:
    """``f = sqrt(max(lam, 0))`` and ``F_ij = 1 / (f_i + f_j)`` (0 where both vanish)."""
    f = lam.clamp_min(0.0).sqrt()  # (*, d)
    den = f[..., :, None] + f[..., None, :]  # (*, d, d)
    pos = den > 0
    F = torch.where(pos, 1.0 / torch.where(pos, den, torch.ones_like(den)), torch.zeros_like(den))
    return f, F


def _inv_sqrt_pieces(lam: Tensor, floor: Tensor) -> tuple[Tensor, Tensor]:
    """``f = max(lam, floor)^{-1/2}`` and its divided differences ``F_ij``."""
    c = floor[..., None]  # (*, 1)
    s = lam.clamp_min(c).sqrt()  # (*, d)
    f = 1.0 / s
    free = lam > c  # eigenvalues not touched by the clamp
    si, sj = s[..., :, None], s[..., None, :]
    both = -1.0 / (si * sj * (si + sj))  # exact (f_i - f_j) / (lam_i - lam_j) when unclamped
    dlam = lam[..., :, None] - lam[..., None, :]
    nz = dlam != 0
    quot = (f[..., :, None] - f[..., None, :]) / torch.where(nz, dlam, torch.ones_like(dlam))
    fi, fj = free[..., :, None], free[..., None, :]
    F = torch.where(fi & fj, both, torch.where((fi | fj) & nz, quot, torch.zeros_like(quot)))
    return f, F


def _sqrtm(S: Tensor, lam: Tensor, V: Tensor) -> Tensor:
    f, F = _sqrt_pieces(lam)
    return _SpectralFunction.apply(S, V, f, F)


def _symmetrise(S: Tensor) -> Tensor:
    return 0.5 * (S + S.mT)


def sqrtm_psd(S: Tensor) -> Tensor:
    r"""Symmetric PSD square root :math:`S^{1/2}`, batched.

    :math:`S^{1/2} = V \operatorname{diag}(\sqrt{\max(\lambda, 0)}) V^\top` for the
    eigendecomposition :math:`\tfrac12 (S + S^\top) = V \operatorname{diag}(\lambda) V^\top`.
    Slightly negative eigenvalues from round-off are clamped to 0; the backward pass uses
    the Daleckii--Krein formula (finite for repeated eigenvalues; the infinite derivative
    in directions where both eigenvalues vanish is set to 0).

    Args:
        S: Symmetric PSD matrices, shape ``(*, d, d)``.
    Returns:
        :math:`S^{1/2}`, shape ``(*, d, d)``, symmetric PSD, same dtype/device as ``S``.
    Raises:
        TypeError: ``S`` is not a floating tensor.
        ValueError: ``S`` is not square, finite, symmetric or PSD.
    Example:
        >>> sqrtm_psd(torch.diag(torch.tensor([4.0, 9.0])))
        tensor([[2., 0.],
                [0., 3.]])
    """
    S = _symmetrise(_check_cov("S", S))
    lam, V = _eigh_psd("S", S)
    return _sqrtm(S, lam, V)


def inv_sqrtm_psd(S: Tensor, *, eps: float | None = None) -> Tensor:
    r"""Inverse square root :math:`S^{-1/2}` of symmetric PSD matrices, regularised.

    :math:`S^{-1/2} = V \operatorname{diag}(\max(\lambda, c)^{-1/2}) V^\top` where the floor
    :math:`c` is ``eps`` if given, else :math:`c = d \cdot \epsilon_{\mathrm{mach}} \cdot
    \lambda_{\max}(S)` per matrix (the ``pinv`` convention), and at least the smallest
    positive normal number. Eigenvalues below the floor (including singular directions) are
    raised to it, so the result is finite but of order :math:`c^{-1/2}` there.

    Args:
        S: Symmetric PSD matrices, shape ``(*, d, d)``.
        eps: Absolute eigenvalue floor :math:`c > 0`, or ``None`` for the relative default.
    Returns:
        :math:`S^{-1/2}`, shape ``(*, d, d)``, symmetric positive definite.
    Raises:
        TypeError: ``S`` is not a floating tensor.
        ValueError: ``S`` is not square, finite, symmetric or PSD, or ``eps <= 0``.
    Example:
        >>> inv_sqrtm_psd(torch.diag(torch.tensor([4.0, 0.25])))
        tensor([[0.5000, 0.0000],
                [0.0000, 2.0000]])
    """
    S = _symmetrise(_check_cov("S", S))
    if eps is not None and (isinstance(eps, bool) or not eps > 0):
        raise ValueError(f"`eps` must be a number > 0 or None, got {eps!r}; try eps=1e-12.")
    lam, V = _eigh_psd("S", S)
    return _inv_sqrtm(S, lam, V, eps)


def _inv_sqrtm(S: Tensor, lam: Tensor, V: Tensor, eps: float | None) -> Tensor:
    tiny = torch.finfo(S.dtype).tiny
    if eps is None:
        floor = (S.shape[-1] * torch.finfo(S.dtype).eps * lam.amax(-1)).clamp_min(tiny)
    else:
        floor = torch.full_like(lam[..., 0], max(float(eps), tiny))
    f, F = _inv_sqrt_pieces(lam, floor)
    return _SpectralFunction.apply(S, V, f, F)


# --------------------------------------------------------------------------- distances


def gaussian_w2_squared(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> Tensor:
    r"""Squared 2-Wasserstein distance between Gaussians :math:`N(m_0,S_0)`, :math:`N(m_1,S_1)`.

    .. math::

        W_2^2 = |m_0 - m_1|^2 + \operatorname{tr} S_0 + \operatorname{tr} S_1
            - 2 \operatorname{tr} (S_0^{1/2} S_1 S_0^{1/2})^{1/2}.

    The last trace is :math:`\sum_i \sqrt{\lambda_i(M)}` for the symmetric PSD matrix
    :math:`M = S_0^{1/2} S_1 S_0^{1/2}`. Since :math:`M = X^\top X` with
    :math:`X = S_1^{1/2} S_0^{1/2}`, the :math:`\sqrt{\lambda_i(M)}` are computed as the
    singular values of :math:`X` (the nuclear norm :math:`\|X\|_*`): this is the same
    quantity without forming :math:`M`, so small eigenvalues keep full accuracy
    (:math:`\sqrt{\lambda_i(M)}` from ``eigvalsh(M)`` carries an error of order
    :math:`\sqrt{\epsilon \|M\|}`) and the gradient of the trace stays bounded for
    near-singular covariances and is exactly 0 for identical Gaussians. No square root of a
    non-symmetric matrix is ever taken. The result is clamped at 0.

    Args:
        m0, m1: Means, shape ``(*, d)``.
        S0, S1: Symmetric PSD covariances, shape ``(*, d, d)``; all batch shapes broadcast.
    Returns:
        :math:`W_2^2`, shape ``(*,)`` (the broadcast batch shape), same dtype/device as
        ``m0``; differentiable in all four inputs.
    Raises:
        TypeError: non-floating inputs, or mixed dtypes/devices.
        ValueError: shapes disagree, or a covariance is not finite, symmetric and PSD.
    Example:
        >>> gaussian_w2_squared(torch.zeros(2), torch.eye(2), torch.ones(2), torch.eye(2))
        tensor(2.)
    """
    m0, S0, m1, S1 = _check_gaussians(m0, S0, m1, S1)
    S0, S1 = _symmetrise(S0), _symmetrise(S1)
    r0 = _sqrtm(S0, *_eigh_psd("S0", S0))  # (*, d, d)
    r1 = _sqrtm(S1, *_eigh_psd("S1", S1))  # (*, d, d)
    cross = torch.linalg.svdvals(r1 @ r0).sum(-1)  # tr (S0^½ S1 S0^½)^½, (*,)
    traces = S0.diagonal(dim1=-2, dim2=-1).sum(-1) + S1.diagonal(dim1=-2, dim2=-1).sum(-1)
    means = ((m0 - m1) ** 2).sum(-1)  # (*,)
    return (means + traces - 2.0 * cross).clamp_min(0.0)


def gaussian_w2(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> Tensor:
    r"""2-Wasserstein distance :math:`W_2` (not squared) between Gaussians.

    :math:`W_2 = \sqrt{W_2^2}` with :math:`W_2^2` from :func:`gaussian_w2_squared`; the
    square root has gradient 0 (not NaN) where :math:`W_2 = 0`.

    Args:
        m0, m1: Means, shape ``(*, d)``.
        S0, S1: Symmetric PSD covariances, shape ``(*, d, d)``; all batch shapes broadcast.
    Returns:
        :math:`W_2`, shape ``(*,)``, same dtype/device as ``m0``.
    Raises:
        TypeError: non-floating inputs, or mixed dtypes/devices.
        ValueError: shapes disagree, or a covariance is not finite, symmetric and PSD.
    Example:
        >>> gaussian_w2(torch.zeros(2), torch.eye(2), torch.ones(2), torch.eye(2))
        tensor(1.4142)
    """
    return _safe_root(gaussian_w2_squared(m0, S0, m1, S1), 0.5)


# --------------------------------------------------------------------------- maps, geodesics


@dataclass(frozen=True, eq=False)
class GaussianMap:
    r"""Affine Brenier map :math:`T(x) = m_1 + A (x - m_0)` between two Gaussians.

    Attributes:
        A: Symmetric PSD matrix, shape ``(*, d, d)``.
        m0: Source mean, shape ``(*, d)``.
        m1: Target mean, shape ``(*, d)``.
    """

    A: Tensor
    m0: Tensor
    m1: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        r"""Apply the map to points.

        Args:
            x: Points, shape ``(n, d)`` (or ``(*, n, d)`` broadcasting with the map's batch).
        Returns:
            :math:`T(x)`, same shape as ``x`` (after broadcasting).
        Raises:
            ValueError: ``x`` does not end in dimension ``d``.
        """
        x = check_tensor("x", x)
        d = self.A.shape[-1]
        if x.ndim < 2 or x.shape[-1] != d:
            raise ValueError(
                f"`x` must have shape (n, {d}) to match the map's dimension, got "
                f"{tuple(x.shape)}; pass one point per row."
            )
        check_same_dtype_device(("x", x), ("A", self.A))
        # (*, n, d): rows are points, so x A^T = x A for symmetric A.
        return self.m1[..., None, :] + (x - self.m0[..., None, :]) @ self.A.mT


def _bures_matrix(S0: Tensor, S1: Tensor) -> Tensor:
    """A = S0^{-½} (S0^½ S1 S0^½)^½ S0^{-½} for validated, symmetrised S0, S1."""
    lam0, V0 = _eigh_psd("S0", S0)
    _eigh_psd("S1", S1)
    r0 = _sqrtm(S0, lam0, V0)
    ir0 = _inv_sqrtm(S0, lam0, V0, None)
    M = _symmetrise(r0 @ S1 @ r0)  # (*, d, d), symmetric PSD
    lamM, VM = torch.linalg.eigh(M.detach())
    return _symmetrise(ir0 @ _sqrtm(M, lamM, VM) @ ir0)


def bures_map(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> GaussianMap:
    r"""Brenier (optimal) map from :math:`N(m_0, S_0)` to :math:`N(m_1, S_1)`.

    :math:`T(x) = m_1 + A (x - m_0)` with
    :math:`A = S_0^{-1/2} (S_0^{1/2} S_1 S_0^{1/2})^{1/2} S_0^{-1/2}`, the unique symmetric
    PSD matrix with :math:`A S_0 A = S_1` when :math:`S_0` is invertible. For singular
    :math:`S_0`, :math:`S_0^{-1/2}` is regularised as in :func:`inv_sqrtm_psd` (default
    floor), so :math:`A` is finite but only meaningful on the support of :math:`S_0`.

    Args:
        m0, m1: Means, shape ``(*, d)``.
        S0, S1: Symmetric PSD covariances, shape ``(*, d, d)``; all batch shapes broadcast.
    Returns:
        :class:`GaussianMap` with ``A`` ``(*, d, d)`` and the means, same dtype/device;
        ``A`` is differentiable in ``S0`` and ``S1``.
    Raises:
        TypeError: non-floating inputs, or mixed dtypes/devices.
        ValueError: shapes disagree, or a covariance is not finite, symmetric and PSD.
    Example:
        >>> T = bures_map(torch.zeros(1), torch.eye(1), torch.ones(1), 4 * torch.eye(1))
        >>> T.A, T(torch.tensor([[1.0]]))
        (tensor([[2.]]), tensor([[3.]]))
    """
    m0, S0, m1, S1 = _check_gaussians(m0, S0, m1, S1)
    A = _bures_matrix(_symmetrise(S0), _symmetrise(S1))
    batch = A.shape[:-2]
    d = A.shape[-1]
    m0b = m0.expand(*torch.broadcast_shapes(batch, m0.shape[:-1]), d)
    m1b = m1.expand(*torch.broadcast_shapes(batch, m1.shape[:-1]), d)
    return GaussianMap(A=A, m0=m0b, m1=m1b)


def gaussian_mccann(
    m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor, t: float | Tensor
) -> tuple[Tensor, Tensor]:
    r"""McCann (displacement) interpolation between two Gaussians at time ``t``.

    :math:`\mu_t = ((1-t)\,\mathrm{id} + t T)_\# \mu_0 = N(m_t, S_t)` with

    .. math::

        m_t = (1-t) m_0 + t m_1, \qquad S_t = ((1-t) I + t A)\, S_0\, ((1-t) I + t A),

    where :math:`A` is the Bures matrix of :func:`bures_map`. This is the constant-speed
    geodesic: :math:`W_2(\mu_s, \mu_t) = |t - s|\, W_2(\mu_0, \mu_1)`.

    Args:
        m0, m1: Means, shape ``(*, d)``.
        S0, S1: Symmetric PSD covariances, shape ``(*, d, d)``; all batch shapes broadcast.
        t: Time in ``[0, 1]``: a float, or a tensor of shape ``()`` or broadcasting with the
            batch shape ``(*,)``.
    Returns:
        ``(m_t, S_t)`` with shapes ``(*, d)`` and ``(*, d, d)``, same dtype/device as ``m0``;
        ``S_t`` is symmetric.
    Raises:
        TypeError: non-floating inputs, or mixed dtypes/devices.
        ValueError: shapes disagree, a covariance is invalid, or ``t`` is outside [0, 1].
    Example:
        >>> mt, St = gaussian_mccann(torch.zeros(1), torch.eye(1), torch.ones(1),
        ...                          9 * torch.eye(1), 0.5)
        >>> mt, St
        (tensor([0.5000]), tensor([[4.]]))
    """
    m0, S0, m1, S1 = _check_gaussians(m0, S0, m1, S1)
    if isinstance(t, Tensor):
        t = check_finite("t", check_tensor("t", t)).to(dtype=m0.dtype, device=m0.device)
    elif isinstance(t, bool) or not isinstance(t, int | float):
        raise TypeError(f"`t` must be a float or a tensor, got {type(t).__name__}.")
    else:
        t = torch.tensor(float(t), dtype=m0.dtype, device=m0.device)
    if t.numel() and bool(((t < 0) | (t > 1)).any()):
        raise ValueError(
            f"`t` must lie in [0, 1], got values in [{float(t.min()):.3g}, "
            f"{float(t.max()):.3g}]; time 0 is the source and time 1 the target."
        )
    S0, S1 = _symmetrise(S0), _symmetrise(S1)
    A = _bures_matrix(S0, S1)  # (*, d, d)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    tt = t[..., None, None]
    B = (1.0 - tt) * eye + tt * A  # (*, d, d), symmetric
    St = _symmetrise(B @ S0 @ B)
    mt = (1.0 - t[..., None]) * m0 + t[..., None] * m1  # (*, d)
    mt = mt.expand(*torch.broadcast_shapes(mt.shape[:-1], St.shape[:-2]), mt.shape[-1])
    return mt, St
