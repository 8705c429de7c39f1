r"""Particle schemes for Wasserstein gradient flows.

* :func:`particle_flow`: explicit Euler on the particle ODE
  :math:`\dot x_i = -\nabla\frac{\delta F}{\delta\rho}(x_i)` of the empirical measure,
  :math:`x_i \leftarrow x_i + \tau v_i`. Exact particle dynamics for potential and
  interaction energies; for internal energies (entropy, KL, porous medium) the velocity is
  that of the blob energy (Carrillo, Craig & Patacchini 2019), a deterministic particle
  method for diffusion.
* :func:`langevin`: the stochastic particle method for :math:`\mathrm{KL}(\cdot\,\|\,
  e^{-V})`, unadjusted Langevin :math:`dX = -\nabla V dt + \sqrt 2 dW` through
  :func:`otgen.ode.sdeint` (Euler--Maruyama or Heun).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from otgen._validate import as_points, as_weights, check_int, check_positive
from otgen.gradflows.energies import AbstractEnergy
from otgen.gradflows.potentials import Potential
from otgen.gradflows.sdes import LangevinSDE
from otgen.ode.sde import sdeint

__all__ = ["ParticleFlowResult", "particle_flow", "langevin"]


@dataclass(frozen=True)
class ParticleFlowResult:
    """Saved frames of a particle scheme.

    Attributes:
        xs: Particles ``(T, n, d)`` at ``times``.
        times: ``(T,)``.
        energies: Energy of each frame ``(T,)`` (``None`` when no energy was given).
        nfe: Velocity / drift evaluations.
    """

    xs: Tensor
    times: Tensor
    energies: Tensor | None
    nfe: int


def _frames(save_every: int | None, steps: int) -> int:
    return steps if save_every is None else check_int("save_every", save_every)


def particle_flow(energy: AbstractEnergy, x0: Tensor, *, tau: float, steps: int,
                  w: Tensor | None = None, save_every: int | None = 1,
                  progress: bool = False) -> ParticleFlowResult:
    r"""Explicit Euler particle scheme :math:`x \leftarrow x + \tau\,v(x)`,
    :math:`v = -\nabla\frac{\delta F}{\delta\rho}` (see
    :meth:`~otgen.gradflows.AbstractEnergy.velocity_particles`).

    Args:
        energy: Free energy.
        x0: Initial particles ``(n, d)``.
        tau: Time step (explicit: stable for :math:`\tau\,\mathrm{Lip}(v) < 2`).
        steps: Number of steps.
        w: Particle weights ``(n,)`` (uniform by default).
        save_every: Keep every ``save_every``-th frame (and the first and last); ``None``
            keeps only those two.
        progress: tqdm progress bar.
    Returns:
        :class:`ParticleFlowResult` with the energy of each saved frame.
    """
    x = as_points("x0", x0)
    w = as_weights("w", w, x.shape[0], x)
    tau = check_positive("tau", tau)
    steps = check_int("steps", steps)
    every = _frames(save_every, steps)
    xs, ts, es = [x], [0.0], [energy.particles(x, w).detach()]
    bar = tqdm(total=steps, desc=f"particles[{energy.name}]", unit="step",
               disable=not progress, leave=False)
    try:
        for k in range(steps):
            x = x + tau * energy.velocity_particles(x, w)
            if (k + 1) % every == 0 or k + 1 == steps:
                xs.append(x)
                ts.append(tau * (k + 1))
                es.append(energy.particles(x, w).detach())
            bar.update(1)
    finally:
        bar.close()
    return ParticleFlowResult(torch.stack(xs), torch.tensor(ts, dtype=x.dtype),
                              torch.stack(es), steps)


def langevin(V: Potential, x0: Tensor, *, tau: float, steps: int, temperature: float = 1.0,
             method: str = "euler", generator: torch.Generator | None = None,
             save_every: int | None = 1, energy: AbstractEnergy | None = None,
             grad_V: Potential | None = None, progress: bool = False) -> ParticleFlowResult:
    r"""Unadjusted Langevin particles :math:`dX = -\nabla V dt + \sqrt{2T} dW`.

    Args:
        V: Potential ``(B, d) -> (B,)`` (gradient by autograd).
        x0: Initial particles ``(n, d)``.
        tau: Time step; ``steps`` steps reach time ``tau * steps``.
        temperature: :math:`T`.
        method: ``"euler"`` (Euler--Maruyama, i.e. ULA) or ``"heun"``.
        generator: Randomness of the noise.
        save_every: Frame stride (``None``: first and last only).
        energy: Optional energy evaluated on each frame (e.g. ``KL(V)`` with blobs).
        grad_V: Optional explicit :math:`\nabla V` (skips autograd).
        progress: tqdm progress bar.
    Returns:
        :class:`ParticleFlowResult`.
    """
    x = as_points("x0", x0)
    tau = check_positive("tau", tau)
    steps = check_int("steps", steps)
    every = _frames(save_every, steps)
    res = sdeint(LangevinSDE(V, temperature, grad_V), x, t0=0.0, t1=tau * steps, steps=steps,
                 method=method, generator=generator, save_every=every, progress=progress)
    xs = res.xs if res.xs is not None else torch.stack([x, res.x])
    ts = res.ts if res.ts is not None else torch.tensor([0.0, tau * steps], dtype=x.dtype)
    es = torch.stack([energy.particles(f).detach() for f in xs]) if energy is not None \
        else None
    return ParticleFlowResult(xs, ts, es, res.nfe)
