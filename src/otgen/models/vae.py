r"""A variational auto-encoder with a Gaussian decoder whose variance grows away from data.

Generative model (seed note 003): :math:`z \sim N(0, I_d)`,
:math:`x = \mu_\theta(z) + \sigma_\theta(z) \odot \varepsilon`, :math:`\varepsilon \sim
N(0, I_D)`; amortised posterior :math:`q_\phi(z \mid x) = N(m_\phi(x),
\mathrm{diag}\, s^2_\phi(x))`; trained by maximising the ELBO

.. math::
    \mathcal L(x) = \mathbb E_{q_\phi(z \mid x)}[\log N(x; \mu_\theta(z),
    \mathrm{diag}\,\sigma^2_\theta(z))] - \mathrm{KL}(q_\phi(z \mid x) \,\|\, N(0, I)).

The standard deviation has two phases (Arvanitidis, Hansen & Hauberg, *Latent space
oddity*, 2018): first a learned per-feature constant (so the mean network learns the data
without the variance absorbing errors), then an **RBF network** on latent centres,
:math:`\sigma(z)^2 = \sigma_{\min}^2 + 1 / \beta(z)`, with precision

.. math::
    \beta(z) = W \varphi(z) + \zeta, \qquad
    \varphi_k(z) = \exp(-\lambda_k \|z - c_k\|^2), \quad W \ge 0,

centres :math:`c_k` from k-means on the encoded training data and bandwidths
:math:`\lambda_k = \tfrac12 (a\, r_k)^{-2}` from each cluster's mean radius :math:`r_k`.
Far from every centre :math:`\varphi \to 0`, so :math:`\sigma^2 \to \sigma_{\min}^2 +
1/\zeta`: the decoder is uncertain where there was no data, and the expected metric
:math:`J_\mu^\top J_\mu + J_\sigma^\top J_\sigma` makes such regions long to cross.

The networks are smooth (default ``tanh``) so that the metric is differentiable enough
for the Christoffel symbols of the geodesic ODE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from otgen._validate import as_points, check_int, check_positive
from otgen.models.mlp import MLP

__all__ = ["VAE", "RBFVariance", "kmeans", "gaussian_log_likelihood"]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    r""":math:`\log N(x; \mu, \mathrm{diag}\,\sigma^2)` summed over features: ``(n, D) -> (n,)``."""
    return -0.5 * (((x - mean) / std).square() + 2 * std.log() + _LOG_2PI).sum(-1)


def kmeans(x: Tensor, k: int, *, generator: torch.Generator | None = None,
           n_iter: int = 100) -> tuple[Tensor, Tensor]:
    r"""Lloyd's k-means with k-means++ seeding.

    Args:
        x: Points ``(n, d)``, ``n >= k``.
        k: Number of centres.
        generator: Random stream of the seeding (CPU).
        n_iter: Most Lloyd iterations (stops early when assignments no longer change).
    Returns:
        ``(centres (k, d), labels (n,))``; an emptied cluster keeps its previous centre.
    """
    x = as_points("x", x.detach())
    k = check_int("k", k, minimum=1)
    if x.shape[0] < k:
        raise ValueError(f"`x` must hold at least k={k} points, got {x.shape[0]}; lower k.")
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    d2 = (x - x[first]).square().sum(-1)
    for _ in range(1, k):
        probs = (d2 / d2.sum()).cpu() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n)
        i = int(torch.multinomial(probs.double(), 1, generator=generator))
        centres.append(x[i])
        d2 = torch.minimum(d2, (x - x[i]).square().sum(-1))
    c = torch.stack(centres)
    labels = torch.cdist(x, c).argmin(-1)
    for _ in range(n_iter):
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        new = torch.cdist(x, c).argmin(-1)
        if bool((new == labels).all()):
            break
        labels = new
    return c, labels


class RBFVariance(nn.Module):
    r"""Standard deviation :math:`\sigma(z) = (\sigma_{\min}^2 + 1/\beta(z))^{1/2}` with
    :math:`\beta(z) = W \varphi(z) + \zeta`, :math:`W = \exp(\text{log\_weight}) \ge 0`
    (see the module docstring; the log parametrisation lets Adam move the precisions by
    orders of magnitude).

    Args:
        latent_dim: ``d``. out_dim: ``D``. n_centres: ``K``.
        zeta: Precision floor :math:`\zeta > 0` (far-away variance :math:`1/\zeta`).
        min_std: :math:`\sigma_{\min} \ge 0`.
    Shapes:
        ``(n, d) -> (n, D)``.
    """

    centres: Tensor
    bandwidth: Tensor

    def __init__(self, latent_dim: int, out_dim: int, n_centres: int, *, zeta: float = 1e-2,
                 min_std: float = 1e-2) -> None:
        super().__init__()
        d, out, k = (check_int(n, v) for n, v in (("latent_dim", latent_dim),
                                                  ("out_dim", out_dim),
                                                  ("n_centres", n_centres)))
        self.zeta, self.min_std = check_positive("zeta", zeta), float(min_std)
        self.register_buffer("centres", torch.zeros(k, d))
        self.register_buffer("bandwidth", torch.ones(k))
        self.log_weight = nn.Parameter(torch.zeros(out, k))

    @torch.no_grad()
    def fit_centres(self, z: Tensor, *, scale: float = 1.0,
                    generator: torch.Generator | None = None,
                    init_std: Tensor | None = None) -> None:
        r"""Place the centres by k-means on ``z`` ``(n, d)`` and set
        :math:`\lambda_k = \tfrac12 (a\, r_k)^{-2}`, :math:`r_k` the mean distance of
        cluster ``k``'s points to its centre (``a`` = ``scale``). With ``init_std``
        ``(D,)``, the weights start so that the mean precision over ``z`` is
        :math:`1 / \text{init\_std}^2` (a warm start from the phase-1 constant)."""
        a = check_positive("scale", scale)
        c, labels = kmeans(z.to(self.centres.dtype), self.centres.shape[0],
                           generator=generator)
        dist = (z.to(c.dtype) - c[labels]).norm(dim=-1)
        k = c.shape[0]
        counts = torch.bincount(labels, minlength=k).to(c.dtype)
        r = torch.zeros(k, dtype=c.dtype, device=c.device).index_add_(0, labels, dist)
        r = torch.where(counts > 0, r / counts.clamp_min(1), r.new_tensor(float("nan")))
        r = torch.where(torch.isfinite(r) & (r > 0), r, r[torch.isfinite(r) & (r > 0)].mean())
        self.centres.copy_(c)
        self.bandwidth.copy_(0.5 / (a * r).square())
        if init_std is not None:
            phi_sum = torch.exp(-self.bandwidth * torch.cdist(z.to(c.dtype), c).square()
                                ).sum(-1).mean()  # mean over z of sum_k phi_k
            w = (1.0 / init_std.to(c.dtype).square() - self.zeta).clamp_min(1e-6) / phi_sum
            self.log_weight.copy_(w.log()[:, None].expand_as(self.log_weight))

    def precision(self, z: Tensor) -> Tensor:
        r""":math:`\beta(z)`, ``(n, D)``."""
        sq = (z[:, None, :] - self.centres[None]).square().sum(-1)  # (n, K); cdist has no
        phi = torch.exp(-self.bandwidth * sq)  # forward-mode AD, which the metric needs
        return phi @ torch.exp(self.log_weight).T + self.zeta

    def forward(self, z: Tensor) -> Tensor:
        return torch.sqrt(self.min_std**2 + 1.0 / self.precision(z))


class VAE(nn.Module):
    r"""Gaussian VAE with an MLP encoder, an MLP mean decoder and a two-phase std.

    Args:
        data_dim: ``D`` (64 for 8×8 digits).
        latent_dim: ``d``.
        hidden, depth, activation: The MLPs (default ``tanh``: smooth metric).
        n_centres: RBF centres ``K`` of the phase-2 variance network.
        zeta, min_std: See :class:`RBFVariance` (``min_std`` also floors the phase-1 std).
    Shapes:
        ``encode``: ``(n, D) -> ((n, d), (n, d))``; ``mean``, ``std``: ``(n, d) -> (n, D)``.
    Example:
        >>> vae = VAE(64, 2, hidden=16, depth=1)
        >>> vae.mean(torch.zeros(3, 2)).shape, vae.std(torch.zeros(3, 2)).shape
        (torch.Size([3, 64]), torch.Size([3, 64]))
    """

    phase: Tensor

    def __init__(self, data_dim: int = 64, latent_dim: int = 2, *, hidden: int = 128,
                 depth: int = 2, activation: str = "tanh", n_centres: int = 32,
                 zeta: float = 1e-2, min_std: float = 1e-2) -> None:
        super().__init__()
        self.data_dim = check_int("data_dim", data_dim)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.min_std = float(min_std)
        self.encoder = MLP(data_dim, 2 * latent_dim, hidden=hidden, depth=depth,
                           activation=activation)
        self.decoder = MLP(latent_dim, data_dim, hidden=hidden, depth=depth,
                           activation=activation)
        self.log_std = nn.Parameter(torch.full((data_dim,), math.log(0.2)))
        self.rbf = RBFVariance(latent_dim, data_dim, n_centres, zeta=zeta, min_std=min_std)
        self.register_buffer("phase", torch.zeros((), dtype=torch.int64))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance, ``(n, d)`` each."""
        h = self.encoder(x)
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def mean(self, z: Tensor) -> Tensor:
        r""":math:`\mu_\theta(z)`, ``(n, D)``."""
        return self.decoder(z)

    def std(self, z: Tensor) -> Tensor:
        r""":math:`\sigma_\theta(z)`, ``(n, D)``: the constant of phase 1, the RBF network
        after :meth:`start_variance_phase`."""
        if int(self.phase) == 0:
            s = torch.sqrt(self.min_std**2 + torch.exp(2 * self.log_std))
            return s.expand(z.shape[0], -1) + 0.0 * z[:, :1]  # keep z in the graph
        return self.rbf(z)

    @torch.no_grad()
    def start_variance_phase(self, x: Tensor, *, scale: float = 1.0,
                             generator: torch.Generator | None = None) -> None:
        """Fit the RBF centres on the encoded means of ``x`` ``(n, D)`` and switch
        :meth:`std` to the RBF network (phase 2)."""
        m, _ = self.encode(x)
        s = torch.sqrt(self.min_std**2 + torch.exp(2 * self.log_std))
        self.rbf.fit_centres(m, scale=scale, generator=generator, init_std=s)
        self.phase.fill_(1)

    def elbo(self, x: Tensor, *, generator: torch.Generator | None = None,
             beta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        r"""One-sample ELBO per point (reparametrised), with ``beta`` weighting the KL.

        Returns:
            ``(elbo, log_likelihood, kl)``, each ``(n,)`` (nats).
        """
        m, logvar = self.encode(x)
        eps = torch.randn(m.shape, generator=generator, dtype=m.dtype).to(m.device)
        z = m + torch.exp(0.5 * logvar) * eps
        ll = gaussian_log_likelihood(x, self.mean(z), self.std(z))
        kl = 0.5 * (m.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        return ll - beta * kl, ll, kl

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None,
               noise: bool = False) -> Tensor:
        """``n`` samples ``(n, D)``: decoder means of prior draws (plus noise if asked)."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype).to(p.device)
        x = self.mean(z)
        if noise:
            e = torch.randn(x.shape, generator=generator, dtype=p.dtype).to(p.device)
            x = x + self.std(z) * e
        return x
