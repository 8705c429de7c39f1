r"""Dynamic optimal transport by least action (Benamou--Brenier with particles).

Benamou--Brenier: among velocity fields :math:`u(x, t)` whose flow carries :math:`p_0` to
:math:`p_1` (continuity equation :math:`\partial_t p + \nabla\cdot(p\,u) = 0`), the optimal
one minimises the action

.. math::
    S[u] = \int_0^1\!\!\int \tfrac12 |u(x, t)|^2 p(x, t)\, dx\, dt
         = \mathbb E_{x_0 \sim p_0}\Big[\int_0^1 \tfrac12 |u(x_t, t)|^2 dt\Big],
    \qquad \min S = \tfrac12 W_2^2(p_0, p_1).

Following the seed note (000), the right-hand form is computed with particles: draw
:math:`x_0 \sim p_0`, move them with a fixed-step Runge--Kutta solve of
:math:`\dot x = u_\theta(x, t)` (:func:`otgen.ode.integrate`, unrolled, so differentiable),
accumulate the action along the paths, and descend

.. math::
    L(\theta) = S[u_\theta] + \lambda\, D(p_1^\theta, p_1),

with :math:`D` the debiased Sinkhorn divergence (default) or the exact :math:`W_2^2` (small
clouds). The velocity is either free, :math:`u_\theta(x, t)` (an MLP), or a gradient,
:math:`u = \nabla_x\varphi_\theta(x, t)`, as the first-order condition says it must be; the
optimal potential solves :math:`\partial_t\varphi + \tfrac12|\nabla\varphi|^2 = 0`.

The terminal constraint is a penalty, so for finite :math:`\lambda` the flow stops short of
:math:`p_1`: along the geodesic, with :math:`D = W_2^2` the optimum sits at fraction
:math:`s = 2\lambda/(1 + 2\lambda)` and the action at :math:`s^2 W_2^2/2` (a relative
deficit of about :math:`2/(1+2\lambda)`); :math:`\lambda` is ramped up during training and
the final mismatch is reported.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x0 = torch.randn(64, 2, dtype=torch.float64, generator=g)
    >>> res = least_action(x0, x0 + 1.0, iterations=50, generator=g)  # doctest: +SKIP
    >>> res.action  # ~ |(1, 1)|^2 / 2 = 1                                # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from otgen._validate import as_points, check_choice, check_int, check_positive, check_tensor
from otgen.ot._dynamic_nets import GradientField, PotentialNet, VelocityNet, _init_
from otgen.ot.divergence import sinkhorn_divergence
from otgen.ot.dynamic_diag import (
    curl_rms,
    hj_residual,
    hj_terms,
    integrate_action,
    straightness,
)
from otgen.ot.result import ConvergenceWarning

__all__ = [
    "DynamicProblem", "GradientField", "LeastAction", "LeastActionResult", "PotentialNet",
    "VelocityNet", "least_action",
]

Sampler = Callable[[int, torch.Generator | None], Tensor]
_PARAMS = ("free", "gradient")
_DIVERGENCES = ("sinkhorn", "exact")


# --------------------------------------------------------------------------- problem


@dataclass(frozen=True, init=False)
class DynamicProblem:
    r"""Source and target of a dynamic OT problem on :math:`\mathbb R^d`.

    Each side is a point cloud (a tensor ``(n, d)``: the empirical measure) or a sampler
    ``sampler(n, generator) -> (n, d)`` (e.g. :func:`otgen.data.get_sampler`). A cloud no
    larger than the number of particles is used whole; a larger one is subsampled without
    replacement.

    Args:
        source: :math:`p_0`, cloud or sampler.
        target: :math:`p_1`, cloud or sampler.
    Raises:
        TypeError, ValueError: non-floating clouds, bad shapes, mismatched dimensions or
            dtypes, a sampler returning something else than ``(n, d)``.
    """

    source: Tensor | Sampler
    target: Tensor | Sampler
    dim: int
    dtype: torch.dtype
    device: torch.device

    def __init__(self, source: Tensor | Sampler, target: Tensor | Sampler) -> None:
        probes = []
        for name, side in (("source", source), ("target", target)):
            if isinstance(side, Tensor):
                probes.append(as_points(name, side))
            elif callable(side):
                probes.append(_draw_sampler(name, side, 2, torch.Generator()))
            else:
                raise TypeError(f"`{name}` must be a (n, d) tensor or a sampler "
                                f"(n, generator) -> (n, d), got {type(side).__name__}.")
        s, t = probes
        if s.shape[1] != t.shape[1] or s.dtype != t.dtype or s.device != t.device:
            raise ValueError(
                f"`source` and `target` must share dimension, dtype and device, got "
                f"(d={s.shape[1]}, {s.dtype}, {s.device}) and (d={t.shape[1]}, {t.dtype}, "
                f"{t.device}); cast one side (e.g. .double()) or fix the sampler.")
        for name, value in (("source", source), ("target", target), ("dim", s.shape[1]),
                            ("dtype", s.dtype), ("device", s.device)):
            object.__setattr__(self, name, value)

    def draw(self, side: str, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` points of ``"source"`` or ``"target"`` (the whole cloud if it is smaller)."""
        spec = self.source if side == "source" else self.target
        if isinstance(spec, Tensor):
            if spec.shape[0] <= n:
                return spec
            idx = torch.randperm(spec.shape[0], generator=generator)[:n]
            return spec[idx.to(spec.device)]
        return _draw_sampler(side, spec, n, generator)


def _draw_sampler(name: str, sampler: Sampler, n: int,
                  generator: torch.Generator | None) -> Tensor:
    x = sampler(n, generator)
    x = check_tensor(f"{name}(n)", x)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"`{name}` sampler must return shape ({n}, d) for n={n}, got "
                         f"{tuple(x.shape)}.")
    return as_points(f"{name}(n)", x)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class LeastActionResult:
    r"""Outcome of :class:`LeastAction`.

    Attributes:
        field: Trained velocity module ``u(t, x)``: ``t`` 0-d, ``x`` ``(n, d)`` -> ``(n, d)``.
        potential: :math:`\varphi(t, x)` module for the gradient parametrisation, else None.
        action: :math:`S[u]` on the training particles, shape ``()`` (detached); compare
            with :math:`W_2^2/2`.
        mismatch: Final :math:`D(p_1^\theta, p_1)`, shape ``()`` (detached).
        hj_residual: Relative HJ residual of :math:`\varphi` (gradient parametrisation,
            see :func:`~otgen.ot.dynamic_diag.hj_residual`), else None.
        curl: RMS of the curl of :math:`u` along the paths (free parametrisation; exactly
            0 for a gradient), else None; ``curl_rel`` relative to :math:`\|\nabla u\|`.
        straightness: :math:`2S - \mathbb E|x_1 - x_0|^2` (0 for straight paths).
        x0, x1: Training particles at t = 0 and t = 1, ``(n, d)``; ``paths``
            ``(steps + 1, n, d)`` at ``ts`` ``(steps + 1,)``.
        losses, actions, mismatches: Per-iteration histories, ``(iterations,)``.
        converged: ``mismatch <= mismatch_tol * 2 * action`` (terminal law reached).
        n_iter: Iterations run.
        steps, method: The time discretisation used (for :meth:`transport`).
    """

    field: nn.Module
    potential: nn.Module | None
    action: Tensor
    mismatch: Tensor
    hj_residual: float | None
    curl: float | None
    curl_rel: float | None
    straightness: float
    x0: Tensor
    x1: Tensor
    paths: Tensor
    ts: Tensor
    losses: Tensor
    actions: Tensor
    mismatches: Tensor
    converged: bool
    n_iter: int
    steps: int
    method: str

    def transport(self, x0: Tensor, *, steps: int | None = None,
                  record: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Push new points ``x0`` ``(k, d)`` through the learned flow (no graph kept).

        Returns:
            ``(x1 (k, d), action per particle (k,), path (steps + 1, k, d) or None)``; see
            :func:`~otgen.ot.dynamic_diag.integrate_action`.
        """
        with torch.no_grad():
            return integrate_action(self.field, x0, steps=steps or self.steps,
                                    method=self.method, record=record)


# --------------------------------------------------------------------------- solver


@dataclass(frozen=True)
class LeastAction:
    r"""Least-action solver: train :math:`u_\theta` to minimise action + λ · mismatch.

    Attributes:
        parametrisation: ``"free"`` (:class:`VelocityNet`) or ``"gradient"``
            (:class:`GradientField` of a :class:`PotentialNet`).
        penalty: Final :math:`\lambda` (dimensionless: both terms scale as length²).
        divergence: ``"sinkhorn"`` (debiased, ``eps_rel`` of the mean cost) or ``"exact"``
            (:math:`W_2^2` by optimal assignment; equal-size clouds).
        eps_rel: Relative ε of the Sinkhorn divergence.
        n_particles: Particles per draw (and target points per draw).
        steps, method: Fixed-step time discretisation of the paths.
        iterations, lr: Adam steps and learning rate (cosine decay to ``lr / 20``).
        warmup: Fraction of the iterations over which λ ramps geometrically from
            ``penalty / 100`` to ``penalty``.
        average: Fraction of final iterations whose parameters are averaged (Polyak--
            Ruppert) into the returned field; 0 keeps the last iterate.
        resample: Draw fresh particles and targets each iteration (stochastic) instead of
            one fixed draw (deterministic; the flow then interpolates between particles).
        hidden, depth, activation: The network.
        hj_weight: Weight of the Hamilton--Jacobi penalty (gradient parametrisation only):
            :math:`w\,\mathbb E_{t,x}[r^2] / \mathbb E[\tfrac12|u|^2]` with
            :math:`r = \partial_t\varphi + \tfrac12|\nabla\varphi|^2` at the path points
            (the loss sees only :math:`\nabla\varphi`, so without it :math:`\partial_t
            \varphi` is unconstrained; the optimum has :math:`r = c(t)`, so the penalty
            does not bias the transport). OT-Flow (Onken et al. 2021) uses the same term.
        eval_factor: With ``resample``, the final diagnostics use a fresh draw of
            ``eval_factor * n_particles`` points.
        mismatch_tol: ``converged`` iff the final mismatch is at most this fraction of
            :math:`2S`; otherwise a :class:`ConvergenceWarning` (or error if ``strict``).
        progress: tqdm bar on stderr.
        threads: torch CPU threads while solving (restored afterwards); the networks are
            tiny, and one thread is fastest and deterministic. ``None`` keeps the setting.
    """

    parametrisation: str = "gradient"
    penalty: float = 200.0
    divergence: str = "exact"
    eps_rel: float = 0.01
    n_particles: int = 256
    steps: int = 4
    method: str = "heun"
    iterations: int = 600
    lr: float = 1e-2
    warmup: float = 0.3
    average: float = 0.25
    resample: bool = True
    hidden: int = 64
    depth: int = 2
    activation: str = "silu"
    hj_weight: float = 0.0
    eval_factor: int = 4
    mismatch_tol: float = 0.05
    strict: bool = False
    progress: bool = False
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1)
        check_choice("parametrisation", self.parametrisation, _PARAMS)
        check_choice("divergence", self.divergence, _DIVERGENCES)
        for name in ("penalty", "eps_rel", "lr", "mismatch_tol"):
            check_positive(name, getattr(self, name))
        if not float(self.hj_weight) >= 0.0:
            raise ValueError(f"`hj_weight` must be >= 0, got {self.hj_weight!r}.")
        for name in ("n_particles", "steps", "iterations", "hidden", "depth", "eval_factor"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup", "average"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1], got {getattr(self, name)!r}.")

    def build_field(self, dim: int, dtype: torch.dtype, device: torch.device,
                    generator: torch.Generator | None = None) -> tuple[nn.Module, nn.Module | None]:
        """The untrained ``(field, potential)`` pair (potential None if free)."""
        cls = PotentialNet if self.parametrisation == "gradient" else VelocityNet
        net = cls(dim, self.hidden, self.depth, self.activation)
        _init_(net, generator)
        net = net.to(dtype=dtype, device=device)
        if self.parametrisation == "gradient":
            return GradientField(net), net
        return net, None

    def mismatch(self, x1: Tensor, y: Tensor) -> Tensor:
        """:math:`D(x_1, y)`, shape ``()``, differentiable in ``x1``."""
        if self.divergence == "exact":
            if x1.shape[0] != y.shape[0]:
                raise ValueError(
                    f"divergence='exact' matches equal-size clouds, got {x1.shape[0]} "
                    f"particles and {y.shape[0]} targets; use divergence='sinkhorn'.")
            if x1.shape[1] == 1:  # 1-D: the monotone matching
                ys = y.sort(0).values[x1.detach().argsort(0).argsort(0)[:, 0]]
            else:
                ys = y[_assign(x1.detach(), y.detach())]
            return ((x1 - ys) ** 2).sum(1).mean()  # envelope gradient of W2^2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return sinkhorn_divergence(x1, y, eps_rel=self.eps_rel)

    def __call__(self, problem: DynamicProblem, *, field: nn.Module | None = None,
                 generator: torch.Generator | None = None) -> LeastActionResult:
        """Train and diagnose.

        Args:
            problem: The :class:`DynamicProblem`.
            field: Optional own velocity module ``u(t, x)`` (trained in place); the
                parametrisation is then ignored except for the diagnostics, which treat a
                :class:`GradientField` as a gradient.
            generator: Randomness of the initialisation and the draws.
        """
        if not isinstance(problem, DynamicProblem):
            raise TypeError(f"`problem` must be a DynamicProblem, got "
                            f"{type(problem).__name__}; wrap it: DynamicProblem(x0, x1).")
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return self._solve(problem, field, generator)
        finally:
            torch.set_num_threads(before)

    def _solve(self, problem: DynamicProblem, field: nn.Module | None,
               generator: torch.Generator | None) -> LeastActionResult:
        if field is None:
            field, potential = self.build_field(problem.dim, problem.dtype, problem.device,
                                                generator)
        else:
            potential = field.potential if isinstance(field, GradientField) else None
        params = [p for p in field.parameters() if p.requires_grad]
        if not params:
            raise ValueError("`field` has no trainable parameters.")
        opt = torch.optim.Adam(params, lr=self.lr)
        n = self.n_particles
        x0 = problem.draw("source", n, generator)
        y = problem.draw("target", n, generator)
        hist = torch.zeros(3, self.iterations, dtype=torch.float64)
        bar = _bar(self.progress, self.iterations)
        ramp = max(1, int(self.warmup * self.iterations))
        avg_from = self.iterations - int(self.average * self.iterations)
        avg: list[Tensor] = []
        for k in range(self.iterations):
            if self.resample and k > 0:
                x0 = problem.draw("source", n, generator)
                y = problem.draw("target", n, generator)
            lam = self.penalty * (0.01 ** max(0.0, 1.0 - k / ramp))
            for group in opt.param_groups:
                group["lr"] = self.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(
                    math.pi * k / self.iterations)))
            hj_on = potential is not None and self.hj_weight > 0
            x1, a, xs = integrate_action(field, x0, steps=self.steps, method=self.method,
                                         record=hj_on)
            S, D = a.mean(), self.mismatch(x1, y)
            loss = S + lam * D
            if hj_on and xs is not None and potential is not None:
                loss = loss + self.hj_weight * _hj_penalty(potential, xs) / S.detach().clamp_min(
                    1e-12)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"least-action loss became {float(loss)} at iteration {k}; lower `lr` "
                    f"or `penalty`, or raise `steps`.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if k >= avg_from:
                with torch.no_grad():
                    if not avg:
                        avg = [p.detach().clone() for p in params]
                    else:
                        for p_avg, p in zip(avg, params, strict=True):
                            p_avg.add_(p.detach() - p_avg, alpha=1.0 / (k - avg_from + 1))
            hist[:, k] = torch.stack([loss, S, D]).detach().to(hist)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(action=f"{float(S):.4g}", mismatch=f"{float(D):.3g}",
                                refresh=False)
        if bar is not None:
            bar.close()
        with torch.no_grad():
            for p_avg, p in zip(avg, params, strict=False):
                p.copy_(p_avg)
        if self.resample:
            x0 = problem.draw("source", self.eval_factor * n, generator)
            y = problem.draw("target", self.eval_factor * n, generator)
        return self._finish(field, potential, x0, y, hist)

    def _finish(self, field: nn.Module, potential: nn.Module | None, x0: Tensor, y: Tensor,
                hist: Tensor) -> LeastActionResult:
        with torch.no_grad():
            x1, a, xs = integrate_action(field, x0, steps=self.steps, method=self.method,
                                         record=True)
            D = self.mismatch(x1, y).detach()
        if xs is None:  # pragma: no cover - record=True always returns the path
            raise RuntimeError("integrate_action returned no path")
        ts = torch.linspace(0.0, 1.0, xs.shape[0], dtype=x0.dtype, device=x0.device)
        S = a.mean().detach()
        hj = hj_residual(potential, xs, ts) if potential is not None else None
        curl = curl_rel = None
        if potential is None:
            curl, curl_rel = curl_rms(field, xs, ts)
        converged = float(D) <= self.mismatch_tol * max(2.0 * float(S), 1e-300)
        if not converged:
            msg = (f"least action did not reach the target law: mismatch {float(D):.3g} > "
                   f"mismatch_tol {self.mismatch_tol:g} x 2 x action ({float(S):.4g}) after "
                   f"{self.iterations} iterations; raise `iterations` or `penalty`.")
            if self.strict:
                raise RuntimeError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return LeastActionResult(
            field=field, potential=potential, action=S, mismatch=D, hj_residual=hj,
            curl=curl, curl_rel=curl_rel, straightness=straightness(x0, x1, a),
            x0=x0.detach(), x1=x1.detach(), paths=xs.detach(), ts=ts, losses=hist[0],
            actions=hist[1], mismatches=hist[2], converged=converged,
            n_iter=self.iterations, steps=self.steps, method=self.method)


def _hj_penalty(potential: nn.Module, xs: Tensor) -> Tensor:
    """Mean squared HJ residual at the path points ``xs`` ``(T, n, d)`` (positions
    detached), differentiable in the potential's parameters; shape ``()``."""
    T = xs.shape[0]
    total = xs.new_zeros(())
    for k in range(T):
        r, _ = hj_terms(potential, xs[k], k / (T - 1), create_graph=True)
        total = total + (r * r).mean()
    return total / T


def _assign(x: Tensor, y: Tensor) -> Tensor:
    """Optimal assignment ``sigma`` ``(n,)`` for the squared cost (scipy's LSA)."""
    import scipy.optimize

    C = torch.cdist(x, y).square_().cpu().double().numpy()  # (n, n)
    _, cols = scipy.optimize.linear_sum_assignment(C)
    return torch.as_tensor(cols, device=x.device)


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="least action", unit="it", leave=False)


def least_action(
    source: Tensor | Sampler, target: Tensor | Sampler, *, field: nn.Module | None = None,
    generator: torch.Generator | None = None, **options: Any,
) -> LeastActionResult:
    r"""One-line least-action dynamic OT: ``LeastAction(**options)(DynamicProblem(source,
    target), field=field, generator=generator)``; see :class:`LeastAction` for options.

    Returns:
        :class:`LeastActionResult`; ``action`` approximates :math:`W_2^2(p_0, p_1)/2`.
    """
    return LeastAction(**options)(DynamicProblem(source, target), field=field,
                                  generator=generator)
