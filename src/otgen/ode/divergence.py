r"""Divergence estimators and the augmented CNF dynamics for exact likelihoods.

For the ODE :math:`\dot x = v(t, x)` the density of :math:`x_t` obeys the instantaneous
change of variables (Chen et al. 2018, FFJORD):

.. math::
    \frac{d}{dt} \log p_t(x_t) = -\nabla\!\cdot v(t, x_t)
        = -\operatorname{tr} \frac{\partial v}{\partial x}(t, x_t).

So integrating the pair :math:`(x, \ell)` with :math:`\dot\ell = -\nabla\cdot v` from
data :math:`x_1` at ``t=1`` *back* to ``t=0`` with :math:`\ell(1) = 0` gives
:math:`x_0` and :math:`\ell(0) = \int_0^1 \nabla\cdot v\,dt`, hence

.. math::
    \log p_1(x_1) = \log p_0(x_0) - \ell(0).

The exact divergence costs ``d`` backward passes; Hutchinson's estimator
:math:`\mathbb E_\varepsilon[\varepsilon^\top (\partial v/\partial x)\,\varepsilon]`
(with :math:`\mathbb E[\varepsilon\varepsilon^\top] = I`) costs one per probe.

Both estimators treat samples as independent: ``v[b]`` may depend on ``x[b]`` only (no
batch norm or attention across the batch), because the Jacobian of the summed output is
taken with respect to the whole batch at once.

Gradients: with ``create_graph=True`` the divergence is differentiable (needed to train
with a likelihood loss); the default ``None`` means "whenever autograd is recording",
i.e. ``torch.is_grad_enabled()`` at call time. Under ``torch.no_grad()`` the outputs are
detached, so likelihood evaluation holds no graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

import torch
from torch import Tensor

from otgen._validate import check_choice, check_int, check_tensor
from otgen.ode._checks import check_field_output

__all__ = [
    "divergence_exact", "divergence_hutchinson", "sample_probes", "augmented_dynamics",
    "AugmentedDynamics",
]

Probe = Literal["rademacher", "gaussian"]


def _as_batch(name: str, x: object) -> Tensor:
    x = check_tensor(name, x)
    if x.ndim < 2:
        raise ValueError(
            f"`{name}` must have shape (B, *D) with at least one feature dimension, got "
            f"{tuple(x.shape)}; use {name}[:, None] for scalar states."
        )
    return x


def _start(field: Any, t: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate ``v = field(t, x_)`` with ``x_`` tracked by autograd; returns ``(x_, v)``."""
    x_ = x if x.requires_grad else x.detach().requires_grad_(True)
    v = field(t, x_)
    check_field_output(v, x)
    return x_, v


def _vjp(v: Tensor, x_: Tensor, w: Tensor, create_graph: bool) -> Tensor:
    r""":math:`w^\top \partial v / \partial x` per sample, shape of ``x_`` (zeros if unused)."""
    if not v.requires_grad:
        return torch.zeros_like(x_)
    (g,) = torch.autograd.grad(v, x_, grad_outputs=w, create_graph=create_graph,
                               retain_graph=True, allow_unused=True)
    return torch.zeros_like(x_) if g is None else g


def divergence_exact(
    field: Any, t: Any, x: Tensor, *, create_graph: bool | None = None
) -> tuple[Tensor, Tensor]:
    r"""Velocity and exact divergence :math:`\operatorname{tr}\,\partial v/\partial x` per sample.

    Uses ``n = prod(D)`` vector-Jacobian products with the basis vectors ``e_i``
    (summed over the batch, valid because samples are independent):
    :math:`\nabla\cdot v(x_b) = \sum_i [e_i^\top \partial v/\partial x]_{b,i}`.

    Args:
        field: Vector field ``v(t, x)`` returning the shape of ``x``.
        t: Time passed to ``field`` unchanged (0-d tensor or ``(B,)``).
        x: Points, shape ``(B, *D)`` (usually ``(B, d)``).
        create_graph: Keep the graph of the divergence for higher-order gradients;
            ``None`` = ``torch.is_grad_enabled()``.
    Returns:
        ``(v, div)``: ``v`` of shape ``(B, *D)`` and ``div`` of shape ``(B,)``, dtype and
        device of ``x``.
    Example:
        >>> A = torch.tensor([[1.0, 2.0], [0.0, -3.0]], dtype=torch.float64)
        >>> x = torch.randn(4, 2, dtype=torch.float64)
        >>> divergence_exact(lambda t, x: x @ A.T, 0.0, x)[1]  # trace(A) = -2
        tensor([-2., -2., -2., -2.], dtype=torch.float64)
    """
    x = _as_batch("x", x)
    grad_on = torch.is_grad_enabled()
    cg = grad_on if create_graph is None else bool(create_graph)
    with torch.enable_grad():
        x_, v = _start(field, t, x)
        batch, n = x.shape[0], x[0].numel()
        div = x.new_zeros(batch)
        for i in range(n):
            e_i = v.new_zeros(batch, n)  # fresh each time: autograd may keep it
            e_i[:, i] = 1.0
            g = _vjp(v, x_, e_i.reshape(v.shape), cg)  # (B, *D)
            div = div + g.reshape(batch, n)[:, i]
    if not grad_on:
        v, div = v.detach(), div.detach()
    return v, div


def sample_probes(
    like: Tensor,
    n_probes: int = 1,
    probe: Probe = "rademacher",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Hutchinson probes with :math:`\mathbb E[\varepsilon\varepsilon^\top] = I`.

    Args:
        like: Tensor ``(B, *D)`` whose shape, dtype and device the probes take.
        n_probes: Number ``K`` of probes per sample.
        probe: ``"rademacher"`` (entries ±1, lowest variance for most fields) or
            ``"gaussian"`` (standard normal).
        generator: Source of randomness (drawn on the generator's device, then moved).
    Returns:
        Tensor of shape ``(K, B, *D)``.
    """
    n_probes = check_int("n_probes", n_probes, minimum=1)
    check_choice("probe", probe, ("rademacher", "gaussian"))
    shape = (n_probes, *like.shape)
    dev = generator.device if generator is not None else like.device
    if probe == "gaussian":
        eps = torch.randn(shape, generator=generator, device=dev, dtype=like.dtype)
    else:
        bits = torch.randint(0, 2, shape, generator=generator, device=dev)
        eps = (2 * bits - 1).to(like.dtype)
    return eps.to(like.device)


def divergence_hutchinson(
    field: Any,
    t: Any,
    x: Tensor,
    *,
    n_probes: int = 1,
    probe: Probe = "rademacher",
    generator: torch.Generator | None = None,
    probes: Tensor | None = None,
    create_graph: bool | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Velocity and Hutchinson's unbiased divergence estimate per sample.

    .. math::
        \widehat{\nabla\cdot v}(x_b) = \frac1K \sum_{k=1}^K
            \varepsilon_{k,b}^\top \frac{\partial v}{\partial x}(x_b)\, \varepsilon_{k,b}

    Variance: for Gaussian probes :math:`2\|J_{sym}\|_F^2 / K`; for Rademacher probes
    :math:`2(\|J_{sym}\|_F^2 - \sum_i J_{ii}^2) / K` (:math:`J_{sym} = (J + J^\top)/2`).

    Args:
        field: Vector field ``v(t, x)``.
        t: Time passed to ``field`` unchanged.
        x: Points, shape ``(B, *D)``.
        n_probes: Number ``K`` of probes (ignored when ``probes`` is given).
        probe: ``"rademacher"`` or ``"gaussian"``.
        generator: Randomness for the probes.
        probes: Fixed probes, shape ``(K, B, *D)`` or ``(B, *D)``; e.g. drawn once per
            solve with :func:`sample_probes`.
        create_graph: Keep the graph of the estimate; ``None`` = ``torch.is_grad_enabled()``.
    Returns:
        ``(v, div)`` with shapes ``(B, *D)`` and ``(B,)``.
    """
    x = _as_batch("x", x)
    if probes is None:
        eps = sample_probes(x, n_probes, probe, generator)
    else:
        eps = check_tensor("probes", probes)
        if eps.shape == x.shape:
            eps = eps[None]
        if eps.shape[1:] != x.shape:
            raise ValueError(
                f"`probes` must have shape (K, *x.shape) = (K, {', '.join(map(str, x.shape))})"
                f", got {tuple(eps.shape)}; draw them with sample_probes(x, K)."
            )
        eps = eps.to(dtype=x.dtype, device=x.device)
    grad_on = torch.is_grad_enabled()
    cg = grad_on if create_graph is None else bool(create_graph)
    with torch.enable_grad():
        x_, v = _start(field, t, x)
        est = x.new_zeros(x.shape[0])
        for e in eps:  # e: (B, *D)
            g = _vjp(v, x_, e, cg)
            est = est + (g * e).reshape(x.shape[0], -1).sum(1)
        div = est / eps.shape[0]
    if not grad_on:
        v, div = v.detach(), div.detach()
    return v, div


@dataclass(frozen=True)
class AugmentedDynamics:
    r"""CNF dynamics on the tuple state ``(x, logp)``: returns :math:`(v, -\nabla\cdot v)`.

    Use with :func:`otgen.ode.integrate`; build it with :func:`augmented_dynamics`.
    With ``fixed_probes=True`` (FFJORD) the Hutchinson probes are drawn at the first
    evaluation of each solve and reused by every stage of it, so the integrand is one
    smooth ODE; ``integrate`` calls :meth:`on_integrate_start` to redraw them per solve.

    Attributes:
        field: Vector field ``v(t, x)`` with ``x`` of shape ``(B, *D)``.
        divergence: ``"exact"`` or ``"hutchinson"``.
        n_probes: Probes per evaluation (Hutchinson).
        probe: ``"rademacher"`` or ``"gaussian"``.
        generator: Randomness for the probes.
        fixed_probes: Draw probes once per solve (``True``) or at every evaluation.
        create_graph: See :func:`divergence_exact`.
    """

    field: Any
    divergence: Literal["exact", "hutchinson"] = "exact"
    n_probes: int = 1
    probe: Probe = "rademacher"
    generator: torch.Generator | None = None
    fixed_probes: bool = True
    create_graph: bool | None = None
    _cache: dict[str, Tensor] = dc_field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not callable(self.field):
            raise TypeError(
                f"`field` must be callable as field(t, x), got {type(self.field).__name__}."
            )
        check_choice("divergence", self.divergence, ("exact", "hutchinson"))
        check_int("n_probes", self.n_probes, minimum=1)
        check_choice("probe", self.probe, ("rademacher", "gaussian"))

    def resample(self) -> None:
        """Forget the cached probes; the next evaluation draws new ones."""
        self._cache.clear()

    def on_integrate_start(self) -> None:
        """Hook called by :func:`otgen.ode.integrate`: new probes for each solve."""
        self.resample()

    def __call__(self, t: Any, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        r"""``(dx/dt, dlogp/dt) = (v(t, x), -div v(t, x))`` with ``logp`` of shape ``(B,)``."""
        if not isinstance(state, tuple | list) or len(state) != 2:
            raise TypeError(
                "augmented dynamics need the state (x, logp) as a 2-tuple, got "
                f"{type(state).__name__}; call integrate(aug, (x, torch.zeros(B)))."
            )
        x, logp = state
        if self.divergence == "exact":
            v, div = divergence_exact(self.field, t, x, create_graph=self.create_graph)
        else:
            probes = None
            if self.fixed_probes:
                probes = self._cache.get("probes")
                if probes is None or probes.shape[1:] != x.shape:
                    probes = sample_probes(x, self.n_probes, self.probe, self.generator)
                    self._cache["probes"] = probes
            v, div = divergence_hutchinson(
                self.field, t, x, n_probes=self.n_probes, probe=self.probe,
                generator=self.generator, probes=probes, create_graph=self.create_graph,
            )
        return v, (-div).reshape(logp.shape).to(logp.dtype)


def augmented_dynamics(
    field: Any,
    divergence: Literal["exact", "hutchinson"] = "exact",
    *,
    n_probes: int = 1,
    probe: Probe = "rademacher",
    generator: torch.Generator | None = None,
    fixed_probes: bool = True,
    create_graph: bool | None = None,
) -> AugmentedDynamics:
    r"""Dynamics of ``(x, logp)`` for CNF likelihoods: :math:`\dot\ell = -\nabla\cdot v`.

    Args:
        field: Vector field ``v(t, x)``, ``x`` of shape ``(B, *D)``.
        divergence: ``"exact"`` (``prod(D)`` backward passes) or ``"hutchinson"``.
        n_probes, probe, generator, fixed_probes: Hutchinson options (see
            :class:`AugmentedDynamics`).
        create_graph: See :func:`divergence_exact`.
    Returns:
        A callable ``aug(t, (x, logp)) -> (v, -div)`` for :func:`otgen.ode.integrate`.
    Example:
        Log-likelihood of data ``x1`` under a flow from ``N(0, I)`` at t=0 to t=1:

        >>> from otgen.ode import integrate
        >>> A = torch.tensor([[0.5, 0.0], [0.0, -0.2]], dtype=torch.float64)
        >>> x1 = torch.randn(8, 2, dtype=torch.float64)
        >>> aug = augmented_dynamics(lambda t, x: x @ A.T)
        >>> res = integrate(aug, (x1, x1.new_zeros(8)), t0=1.0, t1=0.0, atol=1e-9, rtol=1e-9)
        >>> x0, delta = res.x  # delta = integral of div v over [0, 1] = trace(A) here
        >>> logp0 = -0.5 * (x0 ** 2).sum(1) - torch.log(torch.tensor(2 * torch.pi))
        >>> logp1 = logp0 - delta
        >>> round(float(delta[0]), 6)
        0.3
    """
    return AugmentedDynamics(field, divergence, n_probes, probe, generator, fixed_probes,
                             create_graph)
