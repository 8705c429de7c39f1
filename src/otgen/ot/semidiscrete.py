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
    check_same_dim,
    check_same_dtype_device,
    check_tensor,
)
from otgen.ot.costs import AbstractCost, CallableCost, get_cost
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

#: Largest number of cost-matrix entries materialised at once (rows are blocked to fit).
_BLOCK_ELEMS = 1 << 22
#: Exponent of the polynomial-decay iterate averaging (weights grow like k**_AVG_ETA).
_AVG_ETA = 3.0


# ---------------------------------------------------------------------------------------------
# Kernels (inputs trusted)
# ---------------------------------------------------------------------------------------------


def _row_blocks(n: int, m: int) -> range:
    rows = max(1, _BLOCK_ELEMS // max(m, 1))
    return range(0, n, rows)


def _reduce(x: Tensor, y: Tensor, g: Tensor, cost: AbstractCost) -> tuple[Tensor, Tensor]:
    r"""Blocked c-transform: :math:`\min_j c(x_i, y_j) - g_j` and its argmin, both ``(n,)``."""
    n, m = x.shape[0], y.shape[0]
    starts = _row_blocks(n, m)
    if len(starts) <= 1:
        return (cost(x, y) - g).min(dim=1)  # (n,), (n,)
    vals = x.new_empty(n)
    idx = torch.empty(n, dtype=torch.long, device=x.device)
    step = starts.step
    for s in starts:
        v, i = (cost(x[s : s + step], y) - g).min(dim=1)  # (rows,)
        vals[s : s + step] = v
        idx[s : s + step] = i
    return vals, idx


def _mean_gap(x: Tensor, y: Tensor, g: Tensor, cost: AbstractCost) -> float:
    """Mean gap between the smallest and second-smallest ``c(x, y_j) - g_j`` over ``x``."""
    starts = _row_blocks(x.shape[0], y.shape[0])
    total = x.new_zeros(())
    for s in starts:
        two = torch.topk(cost(x[s : s + starts.step], y) - g, 2, dim=1, largest=False).values
        total += (two[:, 1] - two[:, 0]).sum()
    return float(total) / x.shape[0]


def _masses(idx: Tensor, m: int, like: Tensor) -> Tensor:
    """Fraction of the ``n`` indices that fall in each of ``m`` cells, shape ``(m,)``."""
    return torch.bincount(idx, minlength=m).to(like.dtype) / max(idx.shape[0], 1)


def _assigned_cost(x: Tensor, y: Tensor, idx: Tensor, cost: AbstractCost) -> Tensor:
    """Differentiable ``c(x_i, y_{idx_i})``, shape ``(n,)``."""
    fast = type(cost)._pairwise is not AbstractCost._pairwise and not isinstance(cost, CallableCost)
    if fast:
        return cost.pairwise(x, y[idx])
    starts = _row_blocks(x.shape[0], y.shape[0])
    return torch.cat(
        [
            cost(x[s : s + starts.step], y).gather(1, idx[s : s + starts.step, None])[:, 0]
            for s in starts
        ]
    )


def _needs_grad(*ts: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


# ---------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------


def _check_dual(g: object, y: Tensor, name: str = "g") -> Tensor:
    g = check_tensor(name, g)
    m = y.shape[0]
    if g.shape != (m,):
        raise ValueError(
            f"`{name}` must have shape (m,) = ({m},), one dual weight per atom of `y`, got "
            f"{tuple(g.shape)}."
        )
    check_same_dtype_device(("y", y), (name, g))
    return check_finite(name, g)


def _check_xyg(x: object, y: object, g: object) -> tuple[Tensor, Tensor, Tensor]:
    x = as_points("x", x)
    y = as_points("y", y)
    check_same_dtype_device(("x", x), ("y", y))
    check_same_dim(x, y)
    return x, y, _check_dual(g, y)


def laguerre_assign(x: Tensor, y: Tensor, g: Tensor, cost: CostLike = "sqeuclidean") -> Tensor:
    r"""Index of the Laguerre cell of each point: :math:`\arg\min_j c(x_i, y_j) - g_j`.

    With the optimal ``g`` of :class:`SemiDiscrete`, ``y[laguerre_assign(x, y, g)]`` is the
    optimal transport map :math:`T(x)`. With ``g = 0`` it is the nearest-atom assignment.
    Ties go to the smallest index. Costs are evaluated on row blocks.

    Args:
        x: Query points, shape ``(n, d)``.
        y: Atoms, shape ``(m, d)``, same dtype and device as ``x``.
        g: Dual weights, shape ``(m,)``.
        cost: Cost name, :class:`~otgen.ot.costs.AbstractCost` or callable.
    Returns:
        ``torch.long`` tensor of shape ``(n,)`` with values in ``[0, m)``, on ``x.device``.
    Example:
        >>> y = torch.tensor([[0.0], [1.0]])
        >>> laguerre_assign(torch.tensor([[0.4], [0.6]]), y, torch.tensor([0.0, 0.3]))
        tensor([1, 1])
    """
    x, y, g = _check_xyg(x, y, g)
    with torch.no_grad():
        return _reduce(x.detach(), y.detach(), g.detach(), get_cost(cost))[1]


def cell_masses(x: Tensor, y: Tensor, g: Tensor, cost: CostLike = "sqeuclidean") -> Tensor:
    r"""Empirical mass of each Laguerre cell, :math:`\hat\mu(L_j(g)) = \#\{i : T(x_i) = y_j\}/n`.

    ``b - cell_masses(x, y, g)`` is the stochastic gradient of the semi-dual in ``g``.

    Args:
        x: Samples of the source, shape ``(n, d)``.
        y: Atoms, shape ``(m, d)``.
        g: Dual weights, shape ``(m,)``.
        cost: Cost name, cost object or callable.
    Returns:
        Tensor of shape ``(m,)`` summing to 1, dtype and device of ``x`` (not differentiable).
    Example:
        >>> x = torch.tensor([[0.1], [0.2], [0.9]])
        >>> cell_masses(x, torch.tensor([[0.0], [1.0]]), torch.zeros(2))
        tensor([0.6667, 0.3333])
    """
    x, y, g = _check_xyg(x, y, g)
    with torch.no_grad():
        idx = _reduce(x.detach(), y.detach(), g.detach(), get_cost(cost))[1]
    return _masses(idx, y.shape[0], x)


def semidual_value(
    x: Tensor, y: Tensor, g: Tensor, b: Tensor | None = None, cost: CostLike = "sqeuclidean"
) -> Tensor:
    r"""Monte-Carlo estimate of the semi-dual :math:`F(g) = \frac1n\sum_i \min_j (c(x_i, y_j)
    - g_j) + \sum_j b_j g_j`.

    :math:`F(g) \le W_c(\mu, \nu)` for every ``g`` (weak duality), with equality at the optimum.
    Differentiable in ``x``, ``y``, ``b`` and ``g`` (the argmin is held fixed, which gives the
    exact gradient almost everywhere): with ``g`` from :class:`SemiDiscrete` detached, this is
    the loss to train a generator ``x = G_θ(z)`` towards ``ν`` (semi-discrete WGAN).

    Args:
        x: Source samples, shape ``(n, d)``.
        y: Atoms, shape ``(m, d)``.
        g: Dual weights, shape ``(m,)``.
        b: Atom weights, shape ``(m,)``; default uniform ``1/m``.
        cost: Cost name, cost object or callable.
    Returns:
        Scalar tensor, dtype and device of ``x``.
    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> semidual_value(x, torch.tensor([[0.0], [1.0]]), torch.zeros(2))
        tensor(0.)
    """
    x, y, g = _check_xyg(x, y, g)
    b = as_weights("b", b, y.shape[0], y)
    c = get_cost(cost)
    with torch.no_grad():
        vals, idx = _reduce(x.detach(), y.detach(), g.detach(), c)
    if _needs_grad(x, y, g):
        vals = _assigned_cost(x, y, idx, c) - g[idx]
    return vals.mean() + b @ g


# ---------------------------------------------------------------------------------------------
# Problem, map, solver
# ---------------------------------------------------------------------------------------------


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
