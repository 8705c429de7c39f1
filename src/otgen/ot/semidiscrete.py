r"""Semi-discrete OT: a continuous source given by a sampler onto a weighted point cloud.

The source :math:`\mu` is known only through samples; the target is
:math:`\nu = \sum_{j=1}^m b_j \delta_{y_j}`. Kantorovich duality reduces the problem to the
*semi-dual*, a concave maximisation over one weight per atom,

.. math::
    W_c(\mu, \nu) = \max_{g \in \mathbb{R}^m} F(g), \qquad
    F(g) = \mathbb{E}_{x \sim \mu}\Big[\min_j \big(c(x, y_j) - g_j\big)\Big]
           + \sum_j b_j g_j ,

whose (super)gradient is :math:`\partial F / \partial g_j = b_j - \mu(L_j(g))`, the target mass
minus the :math:`\mu`-mass of the *Laguerre cell*
:math:`L_j(g) = \{x : j = \arg\min_k c(x, y_k) - g_k\}`. At the optimum every cell carries
exactly its target mass and the map :math:`T(x) = y_{\arg\min_j c(x, y_j) - g_j}` is the
optimal transport map; its cost :math:`\mathbb{E}[c(x, T(x))]` equals :math:`F(g^\star)`
[Genevay, Cuturi, Peyré & Bach 2016, "Stochastic optimization for large-scale OT"].

:class:`SemiDiscrete` maximises :math:`F` by stochastic (super)gradient ascent on minibatches
from the sampler: averaged SGD (step :math:`\eta/\sqrt{k}` with Polyak--Ruppert averaging of
``g``) or Adam. Costs are evaluated on row blocks so memory stays ``O(block * m)``.

Example:
    >>> y = torch.tensor([[0.25], [0.75]], dtype=torch.float64)
    >>> b = torch.tensor([0.3, 0.7], dtype=torch.float64)
    >>> def uniform(n, generator):
    ...     return torch.rand(n, 1, generator=generator, dtype=torch.float64)
    >>> res = SemiDiscrete(progress=False)(SemiDiscreteProblem(uniform, y, b))
    >>> round(float(res.cost), 2), res.converged
    (0.04, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from otgen._validate import (
    as_points,
    as_weights,
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_positive_or_none,
    check_tensor,
)
from otgen.ot.costs import AbstractCost, get_cost
from otgen.ot.laguerre import (
    _assigned_cost,
    _check_dual,
    _masses,
    _mean_gap,
    _needs_grad,
    _reduce,
    cell_masses,
    laguerre_assign,
    semidual_value,
)
from otgen.ot.result import OTResult, warn_not_converged

__all__ = [
    "SemiDiscreteProblem",
    "SemiDiscrete",
    "SemiDiscreteMap",
    "laguerre_assign",
    "cell_masses",
    "semidual_value",
]

Sampler = Callable[[int, torch.Generator], Tensor]
CostLike = AbstractCost | str | Callable[[Tensor, Tensor], Tensor]

#: Exponent of the polynomial-decay iterate averaging (weights grow like k**_AVG_ETA).
_AVG_ETA = 3.0


def _check_samples(x: object, n: int, y: Tensor, finite: bool) -> Tensor:
    """Validate a sampler draw and bring it to ``y``'s dtype and device."""
    name = "sampler(n, generator)"
    x = check_tensor(name, x)
    d = y.shape[1]
    if x.shape != (n, d):
        raise ValueError(
            f"`sampler` must return a tensor of shape (n, d) = ({n}, {d}) (d from `y`), got "
            f"{tuple(x.shape)} for n={n}; make it draw n points of dimension {d}."
        )
    x = x.to(dtype=y.dtype, device=y.device)
    return check_finite(name, x) if finite else x


@dataclass(frozen=True)
class SemiDiscreteProblem:
    r"""Semi-discrete OT from a sampled source :math:`\mu` to :math:`\nu = \sum_j b_j
    \delta_{y_j}`; validated once, here.

    Args:
        sampler: Callable ``sampler(n, generator) -> Tensor (n, d)`` drawing ``n`` i.i.d.
            points of :math:`\mu`. ``generator`` is a :class:`torch.Generator` on ``y.device``;
            draw with it (e.g. ``torch.rand(n, d, generator=generator,
            device=generator.device)``) so runs are reproducible. Draws are cast to ``y``'s
            dtype and device.
        y: Atoms, shape ``(m, d)``, floating dtype.
        b: Atom weights, shape ``(m,)``, non-negative, summing to 1 (``µ`` is a probability
            measure); default uniform ``1/m``.
        cost: Cost name (``"sqeuclidean"``, ``"euclidean"``, ``"pnorm:P"``), an
            :class:`~otgen.ot.costs.AbstractCost`, or a callable ``(x, y) -> (n, m)``.
    Raises:
        TypeError: non-callable sampler, non-tensor or integer inputs.
        ValueError: wrong shapes, NaN/inf, negative weights, ``b`` not summing to 1, or a
            sampler whose (pilot) draw has the wrong shape or non-finite entries.
    Example:
        >>> prob = SemiDiscreteProblem(lambda n, g: torch.rand(n, 2, generator=g),
        ...                            torch.rand(4, 2))
        >>> prob.b
        tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """

    sampler: Sampler
    y: Tensor
    b: Tensor = None  # type: ignore[assignment]
    cost: CostLike = field(default="sqeuclidean")

    def __post_init__(self) -> None:
        if not callable(self.sampler):
            raise TypeError(
                f"`sampler` must be a callable sampler(n, generator) -> Tensor (n, d), got "
                f"{type(self.sampler).__name__}."
            )
        y = as_points("y", self.y)
        b = as_weights("b", self.b, y.shape[0], y)
        mass = float(b.detach().sum())
        if abs(mass - 1.0) > (1e-5 if b.dtype == torch.float32 else 1e-9):
            raise ValueError(
                f"`b` has mass {mass:.6g}, but the sampled source is a probability measure, so "
                f"balanced semi-discrete OT needs sum(b) = 1; normalise it with b / b.sum()."
            )
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "cost", get_cost(self.cost))
        pilot = torch.Generator(device=y.device).manual_seed(0)
        with torch.no_grad():
            _check_samples(self.sampler(2, pilot), 2, y, finite=True)

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, d)``: number of atoms and dimension."""
        return self.y.shape[0], self.y.shape[1]

    def sample(self, n: int, generator: torch.Generator, *, check_finite: bool = True) -> Tensor:
        """Draw ``n`` validated source points, shape ``(n, d)``, dtype/device of ``y``."""
        return _check_samples(self.sampler(n, generator), n, self.y, check_finite)


@dataclass(frozen=True)
class SemiDiscreteMap:
    r"""The transport map :math:`T(x) = y_{j(x)}`, :math:`j(x) = \arg\min_j c(x, y_j) - g_j`.

    Args:
        y: Atoms, shape ``(m, d)``.
        g: Dual weights, shape ``(m,)`` (e.g. ``OTResult.g`` from :class:`SemiDiscrete`).
        cost: Cost name, cost object or callable.
    Example:
        >>> T = SemiDiscreteMap(torch.tensor([[0.0], [1.0]]), torch.zeros(2))
        >>> T(torch.tensor([[0.2], [0.7]]))
        tensor([[0.],
                [1.]])
    """

    y: Tensor
    g: Tensor
    cost: CostLike = field(default="sqeuclidean")

    def __post_init__(self) -> None:
        y = as_points("y", self.y)
        _check_dual(self.g, y)
        object.__setattr__(self, "cost", get_cost(self.cost))

    @classmethod
    def from_result(cls, problem: SemiDiscreteProblem, result: OTResult) -> SemiDiscreteMap:
        """The map of a solved problem (``result.g`` must not be ``None``)."""
        if result.g is None:
            raise ValueError("`result.g` is None; pass the result of SemiDiscrete()(problem).")
        return cls(problem.y, result.g, problem.cost)

    def assign(self, x: Tensor) -> Tensor:
        """Cell index of each point, ``torch.long`` of shape ``(n,)``."""
        return laguerre_assign(x, self.y, self.g, self.cost)

    def __call__(self, x: Tensor) -> Tensor:
        """Image ``T(x)``, shape ``(n, d)`` (differentiable in ``y``, piecewise constant in x)."""
        return self.y[self.assign(x)]


@dataclass(frozen=True)
class SemiDiscrete:
    r"""Stochastic semi-dual ascent for semi-discrete OT.

    Each step draws ``batch_size`` points :math:`x_i \sim \mu`, assigns them to Laguerre
    cells and ascends :math:`F` along the unbiased supergradient
    :math:`\hat\nabla_j = b_j - \#\{i : x_i \in L_j(g)\} / B`:

    - ``"asgd"``: :math:`g \leftarrow g + \eta k^{-1/2} \hat\nabla`,
    - ``"adam"``: Adam (β = 0.9, 0.999) with constant step :math:`\eta`.

    ``g`` is kept centred (``F`` is invariant to adding a constant) and the returned ``g`` is
    the Polyak--Ruppert average :math:`\bar g_k = (1 - w_k) \bar g_{k-1} + w_k g_k` with
    polynomial-decay weights :math:`w_k = 4/(k+3)` (recent iterates count more, early
    transients are forgotten). Every ``check_every`` steps the target-mass error
    :math:`\|\hat\mu(L(\bar g)) - b\|_1` is estimated on ``n_eval`` fresh samples; the run
    stops as soon as it is ``<= tol``. That last evaluation batch also gives the returned
    cost and objective, so they are independent of the training samples.

    The mass error of a Monte-Carlo estimate has a noise floor of about
    :math:`\sqrt{2/\pi}\sum_j \sqrt{b_j(1-b_j)/n_\text{eval}}`; keep ``tol`` above it (raise
    ``n_eval`` for many atoms or tight tolerances).

    Args:
        batch_size: Samples per stochastic step.
        n_iter: Maximum number of steps (0 evaluates ``g_init``).
        lr: Step size :math:`\eta` (in cost units). ``None`` picks one from a pilot batch:
            with :math:`\bar\Delta` the mean gap between the two cheapest atoms of a sample,
            :math:`\eta = 2 m \bar\Delta` for ASGD (about the inverse curvature of ``F``) and
            :math:`\eta = 0.3 \bar\Delta` for Adam (tuned on uniform and Gaussian sources,
            d = 1, 2, 10, m = 2 ... 500).
        optimizer: ``"asgd"`` or ``"adam"``.
        tol: Target for the mass error :math:`\|\hat\mu(L(g)) - b\|_1`.
        n_eval: Fresh samples per evaluation (checks and final estimate).
        check_every: Steps between evaluations.
        seed: Seed of the generator created on ``y.device`` when ``generator`` is ``None``
            (``None``: non-deterministic).
        generator: Explicit generator passed to the sampler (its state advances).
        strict: Raise ``RuntimeError`` instead of warning when not converged.
        progress: Show a tqdm bar (it appears only if the run lasts more than ~1 s).

    Returns (from ``__call__``):
        :class:`~otgen.ot.result.OTResult` with ``g`` the averaged dual weights ``(m,)``
        (detached), ``f = None``, ``plan = None``, ``cost`` the Monte-Carlo estimate of
        :math:`\mathbb{E}[c(x, T(x))]` on the final evaluation batch, ``objective`` the
        semi-dual estimate :math:`F(\bar g)` on the same batch (both ``()``, equal at the
        optimum up to Monte-Carlo error), ``errors`` the mass errors at each evaluation
        ``(k,)``, ``converged = errors[-1] <= tol``, ``n_iter`` the steps taken and
        ``method = "semidiscrete-asgd"`` / ``"semidiscrete-adam"``.

    Gradients:
        Samples are drawn without gradient. ``cost`` and ``objective`` are differentiable in
        ``y`` (assignments held fixed: :math:`\partial/\partial y_j = \mathbb{E}[\partial_y
        c(x, y_j) 1_{L_j}]`) and in ``b`` (envelope theorem: :math:`\partial/\partial b = g`).
        To differentiate through the samples (generator training) use
        :func:`semidual_value` on your own samples with the returned ``g``.
    Example:
        >>> prob = SemiDiscreteProblem(lambda n, g: torch.rand(n, 2, generator=g),
        ...                            torch.rand(8, 2))
        >>> res = SemiDiscrete(n_iter=500, progress=False)(prob)
        >>> res.g.shape
        torch.Size([8])
    """

    batch_size: int = 1024
    n_iter: int = 2000
    lr: float | None = None
    optimizer: Literal["asgd", "adam"] = "asgd"
    tol: float = 1e-2
    n_eval: int = 100_000
    check_every: int = 200
    seed: int | None = 0
    generator: torch.Generator | None = None
    strict: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size)
        check_int("n_iter", self.n_iter, minimum=0)
        check_positive_or_none("lr", self.lr)
        check_choice("optimizer", self.optimizer, ("asgd", "adam"))
        check_positive("tol", self.tol)
        check_int("n_eval", self.n_eval)
        check_int("check_every", self.check_every)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(
                f"`generator` must be a torch.Generator or None, got "
                f"{type(self.generator).__name__}."
            )

    def _make_generator(self, device: torch.device) -> torch.Generator:
        if self.generator is not None:
            return self.generator
        gen = torch.Generator(device=device)
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return gen

    def _auto_lr(self, problem: SemiDiscreteProblem, g: Tensor, gen: torch.Generator) -> float:
        y, cost = problem.y.detach(), problem.cost
        m = y.shape[0]
        if m < 2:
            return 1.0
        x = problem.sample(self.batch_size, gen)
        gap = _mean_gap(x, y, g, cost)  # type: ignore[arg-type]
        if not gap > 0:  # all atoms tie (duplicates): fall back to the mean cost
            gap = float(_reduce(x, y, g, cost)[0].mean())  # type: ignore[arg-type]
        if not (gap > 0 and math.isfinite(gap)):
            gap = 1.0
        return 2.0 * m * gap if self.optimizer == "asgd" else 0.3 * gap

    def _evaluate(
        self, problem: SemiDiscreteProblem, g: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, float]:
        x = problem.sample(self.n_eval, gen)
        vals, idx = _reduce(x, problem.y.detach(), g, problem.cost)  # type: ignore[arg-type]
        err = float((_masses(idx, g.shape[0], x) - problem.b.detach()).abs().sum())
        return x, vals, idx, err

    def __call__(self, problem: SemiDiscreteProblem, g_init: Tensor | None = None) -> OTResult:
        """Solve ``problem``; ``g_init`` ``(m,)`` warm-starts the dual weights."""
        if not isinstance(problem, SemiDiscreteProblem):
            raise TypeError(
                f"`problem` must be a SemiDiscreteProblem, got {type(problem).__name__}."
            )
        y, b, cost = problem.y, problem.b, problem.cost
        m = y.shape[0]
        gen = self._make_generator(y.device)
        method = f"semidiscrete-{self.optimizer}"
        with torch.no_grad():
            yd, bd = y.detach(), b.detach()
            if g_init is None:
                g = y.new_zeros(m)
            else:
                g = _check_dual(g_init, y, "g_init").detach().clone()
            g -= g.mean()
            lr = self.lr if self.lr is not None else self._auto_lr(problem, g, gen)
            gbar = g.clone()
            if self.optimizer == "adam":
                m1, v = torch.zeros_like(g), torch.zeros_like(g)
                beta1, beta2 = 0.9, 0.999
            errors: list[float] = []
            last = None
            k = 0
            bar = tqdm(
                total=self.n_iter, desc=method, delay=1.0, leave=False, disable=not self.progress
            )
            try:
                for k in range(1, self.n_iter + 1):
                    x = problem.sample(self.batch_size, gen, check_finite=False)
                    _, idx = _reduce(x, yd, g, cost)  # type: ignore[arg-type]
                    grad = bd - _masses(idx, m, x)  # (m,) supergradient of F
                    if self.optimizer == "asgd":
                        g.add_(grad, alpha=lr / math.sqrt(k))
                    else:
                        m1.lerp_(grad, 1 - beta1)
                        v.lerp_(grad * grad, 1 - beta2)
                        mhat = m1 / (1 - beta1**k)
                        vhat = v / (1 - beta2**k)
                        g.add_(mhat / (vhat.sqrt() + 1e-12), alpha=lr)
                    g -= g.mean()
                    gbar.lerp_(g, (_AVG_ETA + 1) / (k + _AVG_ETA))
                    bar.update(1)
                    if k % self.check_every == 0 or k == self.n_iter:
                        last = self._evaluate(problem, gbar, gen)
                        errors.append(last[3])
                        bar.set_postfix(mass_error=f"{last[3]:.3g}")
                        if last[3] <= self.tol:
                            break
            finally:
                bar.close()
            if last is None:  # n_iter == 0
                last = self._evaluate(problem, gbar, gen)
                errors.append(last[3])
        x, vals, idx, err = last
        if _needs_grad(y, b):
            c_x = _assigned_cost(x, y, idx, cost)  # type: ignore[arg-type]  # (n_eval,)
            cost_val = c_x.mean() + (b - bd) @ gbar
            objective = (c_x - gbar[idx]).mean() + b @ gbar
        else:
            cost_val = (vals + gbar[idx]).mean()
            objective = vals.mean() + bd @ gbar
        converged = err <= self.tol
        if not converged:
            floor = math.sqrt(2 / math.pi) * float((bd * (1 - bd) / self.n_eval).sqrt().sum())
            hint = (
                f"raise n_iter or batch_size, or tune lr (used {lr:.3g}); the Monte-Carlo "
                f"noise floor of the error is about {floor:.2g} at n_eval={self.n_eval}."
            )
            if self.strict:
                raise RuntimeError(
                    f"SemiDiscrete did not converge: marginal error {err:.3g} > tol "
                    f"{self.tol:.3g} after {k} iterations; {hint}"
                )
            warn_not_converged("SemiDiscrete", k, err, self.tol, hint)
        return OTResult(
            cost=cost_val,
            plan=None,
            f=None,
            g=gbar,
            converged=converged,
            n_iter=k,
            errors=torch.tensor(errors, dtype=y.dtype, device=y.device),
            objective=objective,
            eps=None,
            method=method,
        )
