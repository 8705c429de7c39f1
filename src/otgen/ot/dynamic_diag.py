r"""Diagnostics of a dynamic (Benamou--Brenier) transport: action along particle paths,
the Hamilton--Jacobi residual of a potential, the curl of a velocity field, straightness.

For particles :math:`x_0 \sim p_0` moved by :math:`\dot x = u(x, t)` on :math:`[0, 1]`,

.. math::
    S[u] = \mathbb E_{x_0}\Big[\int_0^1 \tfrac12 |u(x_t, t)|^2\, dt\Big]
         = \int_0^1\!\!\int \tfrac12 |u|^2\, p_t\, dx\, dt \;\ge\; \tfrac12 W_2^2(p_0, p_1),

with equality exactly for the optimal (McCann) flow, whose velocity is a gradient
:math:`u = \nabla\varphi` with :math:`\partial_t\varphi + \tfrac12|\nabla\varphi|^2 = 0`
(free-particle Hamilton--Jacobi; the seed note writes :math:`u = -\nabla\lambda`, i.e.
:math:`\lambda = -\varphi`). Each function here measures one of these facts on samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from otgen._validate import as_points, check_int, check_tensor
from otgen.ode import integrate

__all__ = ["integrate_action", "hj_terms", "hj_residual", "curl_rms", "straightness"]

Field = Callable[[Tensor, Tensor], Tensor]
Potential = Callable[[Tensor, Tensor], Tensor]


def integrate_action(
    field: Field, x0: Tensor, *, steps: int = 8, method: str = "rk4",
    record: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""Move ``x0`` along ``u`` from t = 0 to 1 and integrate the action of each particle.

    The action is the extra ODE component :math:`\dot a = \tfrac12|u(x, t)|^2`,
    :math:`a(0) = 0`, integrated together with :math:`x` by the same fixed-step stepper of
    :func:`otgen.ode.integrate`, so the result is differentiable (unrolled) in the field's
    parameters and in ``x0``.

    Args:
        field: Velocity ``u(t, x)``: ``t`` a 0-d tensor, ``x`` ``(n, d)`` -> ``(n, d)``.
        x0: Start points ``(n, d)``.
        steps: Number of uniform time steps (>= 1).
        method: Fixed-step stepper name (``"euler"``, ``"heun"``, ``"midpoint"``,
            ``"rk4"``).
        record: Also return the path at the ``steps + 1`` grid times.
    Returns:
        ``(x1, a, xs)``: end points ``(n, d)``, per-particle action ``(n,)`` (its mean is
        :math:`S[u]`), and the path ``(steps + 1, n, d)`` or ``None``.
    Example:
        >>> x0 = torch.zeros(4, 2, dtype=torch.float64)
        >>> x1, a, _ = integrate_action(lambda t, x: torch.ones_like(x), x0)
        >>> a  # 1/2 |(1, 1)|^2
        tensor([1., 1., 1., 1.], dtype=torch.float64)
    """
    x0 = as_points("x0", x0)
    steps = check_int("steps", steps, minimum=1)

    def aug(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        u = field(t, state[0])
        return u, 0.5 * (u * u).sum(1)

    t_eval = None
    if record:
        t_eval = torch.linspace(0.0, 1.0, steps + 1, dtype=x0.dtype, device=x0.device)
    res = integrate(aug, (x0, x0.new_zeros(x0.shape[0])), method=method, steps=steps,
                    t_eval=t_eval)
    x1, a = res.x
    xs = res.xs[0] if res.xs is not None else None
    return x1, a, xs


def _times(ts: Tensor, T: int, like: Tensor) -> Tensor:
    ts = check_tensor("ts", ts)
    if ts.shape != (T,):
        raise ValueError(f"`ts` must have shape ({T},) to match `xs`, got {tuple(ts.shape)}; "
                         "pass one time per frame of the path.")
    return ts.to(dtype=like.dtype, device=like.device)


def _frames(xs: Tensor) -> Tensor:
    xs = check_tensor("xs", xs)
    if xs.ndim != 3:
        raise ValueError(f"`xs` must be a path of shape (T, n, d), got {tuple(xs.shape)}; "
                         "record it with integrate_action(..., record=True).")
    return xs


def hj_residual(potential: Potential, xs: Tensor, ts: Tensor) -> float:
    r"""Relative Hamilton--Jacobi residual of a potential along particle paths.

    With :math:`r(x, t) = \partial_t\varphi(x, t) + \tfrac12|\nabla_x\varphi(x, t)|^2`, the
    optimal potential has :math:`r = c(t)`: adding any :math:`c(t)` to :math:`\varphi`
    leaves the velocity :math:`\nabla\varphi` unchanged, so only the spatial variation of
    :math:`r` is meaningful. The gauge-fixed residual is centred per time,

    .. math::
        \rho = \frac{\big(\operatorname{mean}_t \operatorname{Var}_{x \sim p_t} r(x, t)
               \big)^{1/2}}{\operatorname{mean}_{t, x} |\nabla\varphi|^2},

    i.e. the RMS of the residual relative to the kinetic-energy density
    (dimensionless; 0 for the optimal potential).

    Args:
        potential: :math:`\varphi(t, x)`: ``t`` of shape ``(n,)``, ``x`` ``(n, d)`` ->
            ``(n,)``; twice differentiable by autograd.
        xs: Particle positions ``(T, n, d)`` (samples of :math:`p_t` at each time).
        ts: Times ``(T,)``.
    Returns:
        The relative residual (a float; computed without keeping the graph).
    Example:
        >>> phi = lambda t, x: 0.5 * (x ** 2).sum(1) / (1 + t)  # x -> 2x scaling
        >>> xs = torch.randn(3, 50, 2, dtype=torch.float64)
        >>> hj_residual(phi, xs, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)) < 1e-12
        True
    """
    xs = _frames(xs)
    ts = _times(ts, xs.shape[0], xs)
    res, kin = [], []
    for k in range(xs.shape[0]):
        r, k2 = hj_terms(potential, xs[k], ts[k])
        res.append(r.var(unbiased=False) if r.numel() > 1 else r.new_zeros(()))
        kin.append(k2.mean())
    scale = torch.stack(kin).mean()
    num = torch.stack(res).mean().sqrt()
    return float(num / scale) if float(scale) > 0 else float(num)


def hj_terms(potential: Potential, x: Tensor, t: Tensor | float, *,
             create_graph: bool = False) -> tuple[Tensor, Tensor]:
    r"""HJ residual :math:`r = \partial_t\varphi + \tfrac12|\nabla_x\varphi|^2` and
    :math:`|\nabla_x\varphi|^2` at points ``x`` ``(n, d)`` and time ``t`` (0-d or float),
    both ``(n,)``. With ``create_graph`` the outputs stay differentiable in the potential's
    parameters (for an HJ penalty); the positions themselves are treated as data."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).detach()
        ti = tt.reshape(()).expand(x.shape[0]).clone().requires_grad_(True)
        phi = potential(ti, xi)
        gx, gt = torch.autograd.grad(phi.sum(), (xi, ti), create_graph=create_graph)
    k2 = (gx * gx).sum(1)
    return gt + 0.5 * k2, k2


def curl_rms(field: Field, xs: Tensor, ts: Tensor) -> tuple[float, float]:
    r"""RMS vorticity of a velocity field along particle paths.

    The antisymmetric part of the Jacobian :math:`J = \partial u / \partial x`,
    :math:`\Omega = (J - J^\top)/2`, vanishes iff :math:`u` is locally a gradient; its norm
    :math:`\omega = \sqrt2\,\|\Omega\|_F` equals :math:`|\partial_1 u_2 - \partial_2 u_1|`,
    the scalar curl, in 2-D (and :math:`|\nabla\times u|` in 3-D).

    Args:
        field: Velocity ``u(t, x)``: ``t`` 0-d, ``x`` ``(n, d)`` -> ``(n, d)``.
        xs: Particle positions ``(T, n, d)``; ts: times ``(T,)``.
    Returns:
        ``(curl, curl_rel)``: the RMS of :math:`\omega` over particles and times, and the
        same relative to the RMS of :math:`\|J\|_F` (dimensionless, in [0, 1]; 0 for a
        gradient field, 1 for a rotation).
    Example:
        >>> rot = lambda t, x: torch.stack([-x[:, 1], x[:, 0]], 1)  # curl 2, J = rotation
        >>> curl_rms(rot, torch.randn(2, 5, 2, dtype=torch.float64),
        ...          torch.tensor([0.0, 1.0], dtype=torch.float64))
        (2.0, 1.0)
    """
    xs = _frames(xs)
    ts = _times(ts, xs.shape[0], xs)
    d = xs.shape[2]
    om, jn = [], []
    for k in range(xs.shape[0]):
        with torch.enable_grad():
            x = xs[k].detach().requires_grad_(True)
            u = field(ts[k].detach(), x)  # (n, d)
            rows = [torch.autograd.grad(u[:, i].sum(), x, retain_graph=i < d - 1)[0]
                    for i in range(d)]
        J = torch.stack(rows, 1).detach()  # (n, d, d), J[:, i, j] = du_i / dx_j
        om.append(((J - J.mT) ** 2).sum((1, 2)) / 2.0)  # omega^2, (n,)
        jn.append((J ** 2).sum((1, 2)))
    w2, j2 = torch.cat(om).mean(), torch.cat(jn).mean()
    curl = float(w2.sqrt())
    rel = float((w2 / (2.0 * j2)).sqrt()) if float(j2) > 0 else 0.0
    return curl, rel


def straightness(x0: Tensor, x1: Tensor, action: Tensor) -> float:
    r"""Excess kinetic energy over the chord, :math:`2S - \mathbb E|x_1 - x_0|^2 \ge 0`.

    By Cauchy--Schwarz :math:`\int_0^1|\dot x|^2 dt \ge |x_1 - x_0|^2`, with equality iff
    the path is a straight segment run at constant speed, so this is 0 for straight paths
    (the convention of :class:`otgen.metrics.flow.FlowStats`).

    Args:
        x0, x1: Start and end points ``(n, d)``.
        action: Per-particle action ``(n,)`` or its mean ``()``.
    Returns:
        The excess energy (a float).
    """
    chord = ((x1 - x0) ** 2).sum(1).mean()
    return float(2.0 * action.mean() - chord)
