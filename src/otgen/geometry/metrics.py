r"""Riemannian metrics on a latent space: pullback, expected (stochastic decoder), explicit.

A decoder :math:`f: \mathcal Z \subset \mathbb R^d \to \mathbb R^D` induces the **pullback
metric** :math:`M(z) = J_f(z)^\top J_f(z)`, so the length of a latent curve is the length
of the decoded curve, :math:`\int_0^1 \|J_f(\gamma_t) \dot\gamma_t\| dt =
\int_0^1 \sqrt{\dot\gamma_t^\top M(\gamma_t) \dot\gamma_t}\, dt`. A **stochastic** decoder
:math:`f(z) = \mu(z) + \sigma(z) \odot \varepsilon`, :math:`\varepsilon \sim N(0, I_D)`,
has the **expected metric** (Arvanitidis, Hansen & Hauberg, 2018)

.. math::
    \bar M(z) = \mathbb E_\varepsilon[J_f^\top J_f] = J_\mu^\top J_\mu + J_\sigma^\top J_\sigma,

which is the pullback metric of the deterministic map :math:`z \mapsto [\mu(z); \sigma(z)]`
(that is how :class:`ExpectedMetric` computes it).

Jacobians use forward-mode AD (:func:`torch.func.jvp`): ``d`` directional derivatives,
each over the whole batch at once (``vmap`` over the ``d`` directions), so any torch
decoder works — no special Jacobian layers. The decoder must act on rows independently
(no batch statistics: call ``.eval()`` first). Everything is differentiable with ordinary
autograd, and the metric derivative :math:`\partial M / \partial z_k` (for the Christoffel
symbols of the geodesic ODE) is one more ``jvp`` of the metric.

Shapes: ``z`` is ``(n, d)``; metrics are ``(n, d, d)``; tangent vectors ``(n, d)``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from torch.func import jvp, vmap

from otgen._validate import as_points, check_choice, check_int

__all__ = [
    "AbstractMetric", "PullbackMetric", "ExpectedMetric", "FunctionMetric",
    "decoder_jacobian", "monte_carlo_metric",
]

Decoder = Callable[[Tensor], Tensor]


def _flat(f: Decoder) -> Decoder:
    """``z (n, d) -> f(z).reshape(n, -1)``."""
    return lambda z: f(z).reshape(z.shape[0], -1)


Strategy = Literal["batch", "vmap", "loop"]
STRATEGIES = ("batch", "vmap", "loop")


def _batched_jvp(f: Decoder, z: Tensor, strategy: str) -> tuple[Tensor, Tensor]:
    r"""``f(z)`` and the directional derivatives :math:`f'(z) e_k` of a row-wise map.

    ``"batch"`` stacks the ``d`` directions into the batch (one ``jvp`` on ``d n`` rows,
    the cheapest in eager mode), ``"vmap"`` maps ``jvp`` over them, ``"loop"`` loops.
    Returns ``(f(z) (n, *out), derivatives (d, n, *out))``.
    """
    n, d = z.shape
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    if strategy == "batch":
        zz = z.repeat(d, 1)  # (d n, d): block k is z
        tt = eye.repeat_interleave(n, dim=0)  # (d n, d): block k is e_k
        out, tan = jvp(f, (zz,), (tt,))[:2]
        return out[:n], tan.reshape(d, n, *tan.shape[1:])
    dirs = eye[:, None, :].expand(d, n, d)
    if strategy == "vmap":
        tan = vmap(lambda v: jvp(f, (z,), (v,))[1])(dirs)
        return f(z), tan
    pairs = [jvp(f, (z,), (v,)) for v in dirs]
    return pairs[0][0], torch.stack([p[1] for p in pairs])


def decoder_jacobian(decoder: Decoder, z: Tensor, *, strategy: Strategy = "batch") -> Tensor:
    r"""Jacobian :math:`J_f(z_i) = \partial f(z_i) / \partial z` of a row-wise decoder.

    Args:
        decoder: Callable ``(n, d) -> (n, *D)`` acting on each row independently.
        z: Latent points ``(n, d)``.
        strategy: ``"batch"`` (default: the ``d`` directions stacked into one batch of
            ``d n`` rows, one ``jvp``), ``"vmap"`` (``vmap`` over the directions) or
            ``"loop"`` (for decoders neither can trace).
    Returns:
        ``(n, D, d)`` with ``D`` the flattened output size; same dtype/device as ``z``,
        differentiable.
    Example:
        >>> A = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]])
        >>> decoder_jacobian(lambda z: z @ A.T, torch.zeros(4, 2)).shape
        torch.Size([4, 3, 2])
    """
    z = as_points("z", z)
    check_choice("strategy", strategy, STRATEGIES)
    cols = _batched_jvp(_flat(decoder), z, strategy)[1]  # (d, n, D)
    return cols.permute(1, 2, 0)


class AbstractMetric(abc.ABC):
    r"""A Riemannian metric :math:`M(z)` on :math:`\mathbb R^d` (symmetric positive definite).

    Subclasses implement :meth:`metric`; everything else (norms, discrete lengths, metric
    derivatives, Christoffel symbols, the geodesic ODE's acceleration, magnification
    factor) follows from it and may be overridden by cheaper formulas.
    """

    strategy: str = "batch"

    def metric(self, z: Tensor) -> Tensor:
        """Metric tensors ``(n, d, d)`` at the points ``z`` ``(n, d)``."""
        return self._metric(as_points("z", z))

    @abc.abstractmethod
    def _metric(self, z: Tensor) -> Tensor:
        """:meth:`metric` without input checks (inner kernels call this)."""

    def sq_norm(self, z: Tensor, v: Tensor) -> Tensor:
        r""":math:`v_i^\top M(z_i) v_i` for ``z``, ``v`` of shape ``(n, d)``; returns ``(n,)``."""
        return torch.einsum("ni,nij,nj->n", v, self._metric(z), v)

    def segment_sq_lengths(self, a: Tensor, b: Tensor) -> Tensor:
        r"""Squared length of the short segments ``a[i] -> b[i]`` (``(n, d)`` each), second
        order accurate: :math:`\Delta^\top M(\tfrac{a + b}{2}) \Delta`. Returns ``(n,)``."""
        return self.sq_norm(0.5 * (a + b), b - a)

    def magnification(self, z: Tensor) -> Tensor:
        r"""Magnification factor :math:`\sqrt{\det M(z)}`, ``(n,)`` (the volume element)."""
        return torch.exp(self.log_magnification(z))

    def log_magnification(self, z: Tensor) -> Tensor:
        r""":math:`\tfrac12 \log\det M(z)`, ``(n,)`` (``-inf`` where ``M`` is singular)."""
        sign, logdet = torch.linalg.slogdet(self._metric(as_points("z", z)))
        return torch.where(sign > 0, 0.5 * logdet, torch.full_like(logdet, -torch.inf))

    def metric_derivative(self, z: Tensor) -> Tensor:
        r""":math:`\partial_k M_{ij}(z)` as ``(n, d, d, d)`` with ``k`` last (forward AD)."""
        return self._metric_and_derivative(z)[1]

    def _metric_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``M (n, d, d)`` and ``dM (n, d, d, d)`` (``[n, i, j, k] = d_k M_ij``), one pass."""
        m, dm = _batched_jvp(self._metric, z, self.strategy)  # dm (d, n, d, d), k first
        return m, dm.permute(1, 2, 3, 0)

    def christoffel(self, z: Tensor) -> Tensor:
        r"""Christoffel symbols of the second kind, ``(n, d, d, d)`` indexed ``[n, k, i, j]``:

        .. math::
            \Gamma^k_{ij} = \tfrac12 M^{kl} (\partial_i M_{lj} + \partial_j M_{li}
            - \partial_l M_{ij}).
        """
        m, dm = self._metric_and_derivative(as_points("z", z))  # dm[n, l, j, i] = d_i M_lj
        # first[n, l, i, j] = 1/2 (d_i M_lj + d_j M_li - d_l M_ij)
        first = 0.5 * (dm.permute(0, 1, 3, 2) + dm - dm.permute(0, 3, 1, 2))
        return torch.linalg.solve(m, first.reshape(*first.shape[:2], -1)
                                  ).reshape(first.shape)

    def geodesic_acceleration(self, z: Tensor, v: Tensor) -> Tensor:
        r"""Right-hand side of the geodesic ODE :math:`\ddot\gamma = a(\gamma, \dot\gamma)`:

        .. math::
            a = -\tfrac12 M^{-1} \big[2 (\partial_v M) v - \nabla_z (v^\top M(z) v)\big]
            = -\Gamma^k_{ij} v^i v^j,

        the Euler--Lagrange equation of the curve energy
        :math:`\int \langle\dot\gamma, M(\gamma)\dot\gamma\rangle dt` (seed note 003).

        Args:
            z: Points ``(n, d)``. v: Velocities ``(n, d)``.
        Returns:
            Accelerations ``(n, d)``, differentiable in ``z`` and ``v``; NaN rows where
            :math:`M(z)` is numerically singular.
        """
        return self._acceleration(as_points("z", z), as_points("v", v))

    def _acceleration(self, z: Tensor, v: Tensor) -> Tensor:
        m, dm = self._metric_and_derivative(z)  # (n, i, j, k) = d_k M_ij
        dm_v = torch.einsum("nijk,nk->nij", dm, v)  # directional derivative of M along v
        grad_q = torch.einsum("nijk,ni,nj->nk", dm, v, v)  # nabla_z (v^T M v)
        rhs = 2.0 * torch.einsum("nij,nj->ni", dm_v, v) - grad_q
        a, info = torch.linalg.solve_ex(m, -0.5 * rhs.unsqueeze(-1))
        # a singular metric (a decoder with a rank-deficient Jacobian) has no geodesic
        # equation there: NaN marks it, and the solvers treat such shots as failed
        return torch.where((info == 0)[:, None], a.squeeze(-1), torch.nan)


class FunctionMetric(AbstractMetric):
    r"""A metric given explicitly as a callable ``z (n, d) -> M(z) (n, d, d)``.

    Example:
        >>> m = FunctionMetric(lambda z: torch.eye(2).expand(z.shape[0], 2, 2))
        >>> m.magnification(torch.zeros(3, 2))
        tensor([1., 1., 1.])
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], *, strategy: Strategy = "batch"
                 ) -> None:
        if not callable(fn):
            raise TypeError(f"`fn` must be callable z -> M(z), got {type(fn).__name__}.")
        self.fn, self.strategy = fn, check_choice("strategy", strategy, STRATEGIES)

    def _metric(self, z: Tensor) -> Tensor:
        m = self.fn(z)
        d = z.shape[1]
        if not isinstance(m, Tensor) or tuple(m.shape) != (z.shape[0], d, d):
            got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise ValueError(f"`fn` must return metrics of shape (n, d, d) = "
                             f"({z.shape[0]}, {d}, {d}), got {got}.")
        return m


class PullbackMetric(AbstractMetric):
    r"""Pullback metric :math:`M(z) = J_f(z)^\top J_f(z)` of a decoder ``f``.

    Lengths of short segments use the decoder itself,
    :math:`\|f(b) - f(a)\|^2`, which needs no Jacobian and equals
    :math:`\Delta^\top M \Delta` to second order; norms :math:`\|J_f v\|^2` use one ``jvp``.

    Args:
        decoder: Callable ``(n, d) -> (n, *D)`` acting on rows independently (a module in
            ``eval()`` mode, a function); any output shape (flattened).
        strategy: How Jacobian directions are batched (see :func:`decoder_jacobian`).
    Example:
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> PullbackMetric(lambda z: z @ A.T).metric(torch.zeros(1, 2))
        tensor([[[4., 0.],
                 [0., 1.]]])
    """

    def __init__(self, decoder: Decoder, *, strategy: Strategy = "batch") -> None:
        if not callable(decoder):
            raise TypeError(f"`decoder` must be callable z -> x, got "
                            f"{type(decoder).__name__}.")
        self.decoder = decoder
        self.strategy = check_choice("strategy", strategy, STRATEGIES)

    def embed(self, z: Tensor) -> Tensor:
        """The flattened decoded points ``(n, D)`` whose geometry is pulled back."""
        return _flat(self.decoder)(z)

    def jacobian(self, z: Tensor) -> Tensor:
        """``(n, D, d)`` Jacobian of :meth:`embed`."""
        return decoder_jacobian(self.embed, z, strategy=self.strategy)  # type: ignore[arg-type]

    def _metric(self, z: Tensor) -> Tensor:
        j = _batched_jvp(self.embed, z, self.strategy)[1].permute(1, 2, 0)  # (n, D, d)
        return j.transpose(1, 2) @ j

    def sq_norm(self, z: Tensor, v: Tensor) -> Tensor:
        return jvp(self.embed, (z,), (v,))[1].square().sum(-1)

    def segment_sq_lengths(self, a: Tensor, b: Tensor) -> Tensor:
        return (self.embed(b) - self.embed(a)).square().sum(-1)


class ExpectedMetric(PullbackMetric):
    r"""Expected metric of a stochastic decoder :math:`\mu(z) + \sigma(z) \odot \varepsilon`:
    :math:`\bar M = J_\mu^\top J_\mu + J_\sigma^\top J_\sigma`, the pullback metric of
    :math:`z \mapsto [\mu(z); \sigma(z)]`.

    Segment lengths :math:`\|\Delta\mu\|^2 + \|\Delta\sigma\|^2` are the expected squared
    decoded distance :math:`\mathbb E_\varepsilon \|f_\varepsilon(b) - f_\varepsilon(a)\|^2`
    with one :math:`\varepsilon` shared along the curve.

    Args:
        mean: Callable ``(n, d) -> (n, *D)``, the decoder mean :math:`\mu`.
        std: Callable ``(n, d) -> (n, *D)``, the decoder standard deviation :math:`\sigma`.
        strategy: see :class:`PullbackMetric`.
    """

    def __init__(self, mean: Decoder, std: Decoder, *, strategy: Strategy = "batch") -> None:
        for name, fn in (("mean", mean), ("std", std)):
            if not callable(fn):
                raise TypeError(f"`{name}` must be callable z -> x, got {type(fn).__name__}.")
        self.mean, self.std = mean, std
        super().__init__(self._stacked, strategy=strategy)

    def _stacked(self, z: Tensor) -> Tensor:
        n = z.shape[0]
        return torch.cat([self.mean(z).reshape(n, -1), self.std(z).reshape(n, -1)], dim=-1)


def monte_carlo_metric(mean: Decoder, std: Decoder, z: Tensor, n_samples: int, *,
                       generator: torch.Generator | None = None) -> Tensor:
    r"""Monte-Carlo estimate :math:`\frac1S \sum_s J_{f_s}^\top J_{f_s}` of the expected
    metric, with :math:`f_s(z) = \mu(z) + \sigma(z) \odot \varepsilon_s` for fixed draws
    :math:`\varepsilon_s \sim N(0, I_D)`: the literal definition, used to check
    :class:`ExpectedMetric`.

    Args:
        mean, std: Decoder mean and standard deviation, ``(n, d) -> (n, *D)``.
        z: Points ``(n, d)``.
        n_samples: Number of noise draws ``S``.
        generator: Random stream of the draws (CPU generator; noise is moved to ``z``'s
            device).
    Returns:
        ``(n, d, d)`` estimate (standard error :math:`O(S^{-1/2})`).
    """
    z = as_points("z", z)
    s = check_int("n_samples", n_samples, minimum=1)
    n = z.shape[0]
    d_out = mean(z[:1]).reshape(1, -1).shape[1]
    eps = torch.randn(s * n, d_out, generator=generator, dtype=z.dtype).to(z.device)
    zz = z.repeat(s, 1)  # (S n, d), row r has noise eps[r]

    def f(x: Tensor) -> Tensor:
        return mean(x).reshape(x.shape[0], -1) + std(x).reshape(x.shape[0], -1) * eps

    j = decoder_jacobian(f, zz, strategy="loop")  # (S n, D, d); f is not row-generic
    d = z.shape[1]
    return (j.transpose(1, 2) @ j).reshape(s, n, d, d).mean(0)
