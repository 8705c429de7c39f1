r"""Primal side of :math:`\min_\theta W_c(g_\theta\#\zeta, \nu)`: minimum-Kantorovich and
minimum-Sinkhorn generators, and the Wasserstein auto-encoder (WAE).

**Minimum-Kantorovich generator** (Genevay, Peyré & Cuturi 2018). On a minibatch of
generated points :math:`x_i = g_\theta(z_i)` and data :math:`y_j` minimise either the exact
minibatch cost :math:`W_2^2(\hat\mu_\theta, \hat\nu)` (network simplex) or the debiased
Sinkhorn divergence

.. math::
    S_\varepsilon(\hat\mu_\theta, \hat\nu) = \mathrm{OT}_\varepsilon(\hat\mu_\theta,\hat\nu)
        - \tfrac12\mathrm{OT}_\varepsilon(\hat\mu_\theta,\hat\mu_\theta)
        - \tfrac12\mathrm{OT}_\varepsilon(\hat\nu,\hat\nu).

Both are differentiated by the envelope theorem (plan held fixed): the seed note's
:math:`\nabla E(\theta) = \int [\partial_\theta g_\theta(z)]^\top \nabla_1 c(g_\theta(z), y)
\,d\pi^\star(z, y)`.

**WAE** (Tolstikhin et al. 2018; seed note 003, primal formulation). Restrict the coupling to
:math:`\pi_\xi = \frac1n\sum_j \delta_{(f_\xi(y_j), y_j)}` through an encoder :math:`f_\xi`
and relax :math:`P_1\#\pi = \zeta` into a penalty:

.. math::
    E_\lambda(\theta, \xi) = \frac1n\sum_j c\big(g_\theta(f_\xi(y_j)), y_j\big)
        + \lambda\, D\big(f_\xi\#\hat\nu \,\big|\, \zeta\big),

with :math:`D` an MMD (inverse multiquadric kernels) or the Sinkhorn divergence between the
encoded batch and a batch of prior draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from otgen._validate import as_points, check_choice, check_positive, check_same_dim
from otgen.ot import sinkhorn_divergence, solve

__all__ = ["kantorovich_loss", "mmd_penalty", "wae_loss", "KANTOROVICH_LOSSES", "PENALTIES"]

#: Losses of the minimum-Kantorovich generator.
KANTOROVICH_LOSSES = ("sinkhorn", "exact")
#: Latent penalties of the WAE.
PENALTIES = ("mmd", "sinkhorn")


def kantorovich_loss(x: Tensor, y: Tensor, *, loss: str = "sinkhorn", eps: float | None = None,
                     eps_rel: float | None = None, tol: float | None = None) -> Tensor:
    r"""Minibatch OT loss between generated ``x`` ``(n, d)`` and data ``y`` ``(m, d)``.

    Args:
        loss: ``"exact"``: :math:`W_2^2` of the empirical measures (exact plan);
            ``"sinkhorn"``: :math:`S_\varepsilon` with the squared Euclidean cost.
        eps, eps_rel: ε of the Sinkhorn divergence, absolute or relative to the mean cost
            (default ``eps_rel=0.05``); not for ``"exact"``.
        tol: Sinkhorn tolerance (default: the solver's).
    Returns:
        Scalar, differentiable in ``x`` (and ``y``) by the envelope theorem.
    Example:
        >>> x = torch.zeros(3, 2, dtype=torch.float64)
        >>> float(kantorovich_loss(x, x + 1.0, loss="exact"))
        2.0
    """
    check_choice("loss", loss, KANTOROVICH_LOSSES)
    x, y = as_points("x", x), as_points("y", y)
    check_same_dim(x, y)
    if loss == "exact":
        if eps is not None or eps_rel is not None:
            raise ValueError("`eps` / `eps_rel` apply to loss='sinkhorn' only; drop them.")
        return solve(x, y, method="exact").cost
    if eps is None and eps_rel is None:
        eps_rel = 0.05
    return sinkhorn_divergence(x, y, eps=eps, eps_rel=eps_rel, tol=tol)


def mmd_penalty(z: Tensor, w: Tensor, *, scales: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0,
                                                                    5.0, 10.0)) -> Tensor:
    r"""Unbiased :math:`\mathrm{MMD}^2` between ``z`` ``(n, k)`` and ``w`` ``(m, k)`` with the
    inverse multiquadric kernels of WAE-MMD, summed over scales:

    .. math::
        \kappa(u, v) = \sum_s \frac{C_s}{C_s + |u - v|^2},\qquad C_s = 2 k s
        \quad(\text{prior } N(0, I_k)).

    Differentiable in ``z`` and ``w``; needs ``n, m >= 2``. Returns ``()``.

    Example:
        >>> z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        >>> abs(float(mmd_penalty(z, z))) < 1e-6
        True
    """
    z, w = as_points("z", z, min_points=2), as_points("w", w, min_points=2)
    check_same_dim(z, w, ("z", "w"))
    k = z.shape[1]
    n, m = z.shape[0], w.shape[0]
    zz = torch.cdist(z, z).square()  # (n, n)
    ww = torch.cdist(w, w).square()  # (m, m)
    zw = torch.cdist(z, w).square()  # (n, m)
    total = z.new_zeros(())
    off_n = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    off_m = 1.0 - torch.eye(m, dtype=z.dtype, device=z.device)
    for s in scales:
        c = 2.0 * k * check_positive("scales", s)
        total = total + ((c / (c + zz)) * off_n).sum() / (n * (n - 1))
        total = total + ((c / (c + ww)) * off_m).sum() / (m * (m - 1))
        total = total - 2.0 * (c / (c + zw)).mean()
    return total


def wae_loss(x: Tensor, x_rec: Tensor, z: Tensor, z_prior: Tensor, *, lam: float = 10.0,
             penalty: str = "mmd", eps_rel: float = 0.05) -> tuple[Tensor, Tensor, Tensor]:
    r"""WAE objective :math:`\frac1n\sum_i |x_i - g(f(x_i))|^2 + \lambda D(f\#\hat\nu |
    \zeta)`.

    Args:
        x: Data batch ``(n, d)``; x_rec: its reconstruction :math:`g(f(x))` ``(n, d)``.
        z: Codes :math:`f(x)` ``(n, k)``; z_prior: prior draws ``(m, k)``.
        lam: λ > 0. penalty: ``"mmd"`` (:func:`mmd_penalty`) or ``"sinkhorn"``
            (:math:`S_\varepsilon`, ``eps_rel`` × mean cost).
    Returns:
        ``(loss, reconstruction, penalty)``, each ``()``.
    """
    check_choice("penalty", penalty, PENALTIES)
    lam = check_positive("lam", lam)
    rec = (x - x_rec).square().sum(dim=1).mean()
    if penalty == "mmd":
        pen = mmd_penalty(z, z_prior)
    else:
        pen = sinkhorn_divergence(z, z_prior, eps_rel=eps_rel)
    return rec + lam * pen, rec, pen
