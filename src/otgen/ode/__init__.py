r"""ODE layer: Runge--Kutta steppers, ``integrate`` and divergence estimators for CNFs.

Vector fields are ``v(t, x)`` with ``t`` a 0-d tensor and ``x`` of shape ``(B, *D)``;
time 0 is the source (noise) and 1 the target (data).

>>> import torch
>>> from otgen.ode import integrate
>>> x0 = torch.randn(16, 2, dtype=torch.float64)
>>> res = integrate(lambda t, x: -x, x0)                 # Dopri5, atol = rtol = 1e-5
>>> res.success, res.n_rejected
(True, 0)
"""

from otgen.ode.controller import PIController, initial_step, pi_factor
from otgen.ode.divergence import (
    AugmentedDynamics,
    augmented_dynamics,
    divergence_exact,
    divergence_hutchinson,
    sample_probes,
)
from otgen.ode.integrate import integrate
from otgen.ode.result import (
    IntegrationError,
    IntegrationWarning,
    MaxStepsExceeded,
    ODEResult,
    StepSizeUnderflowError,
)
from otgen.ode.sde import (
    SDE_STEPPERS,
    AbstractSDEStepper,
    EulerMaruyama,
    SDELike,
    SDEResult,
    StochasticHeun,
    brownian_increments,
    euler_maruyama_step,
    get_sde_stepper,
    sdeint,
    stochastic_heun_step,
)
from otgen.ode.steppers import (
    RK4,
    STEPPERS,
    AbstractAdaptiveStepper,
    AbstractStepper,
    Dopri5,
    Euler,
    Heun,
    Midpoint,
    dopri5_step,
    euler_step,
    get_stepper,
    heun_step,
    midpoint_step,
    rk4_step,
)

__all__ = [
    "AbstractAdaptiveStepper", "AbstractStepper", "AugmentedDynamics", "Dopri5", "Euler",
    "Heun", "IntegrationError", "IntegrationWarning", "MaxStepsExceeded", "Midpoint",
    "ODEResult", "PIController", "RK4", "STEPPERS", "StepSizeUnderflowError",
    "augmented_dynamics", "divergence_exact", "divergence_hutchinson", "dopri5_step",
    "euler_step", "get_stepper", "heun_step", "initial_step", "integrate", "midpoint_step",
    "pi_factor", "rk4_step", "sample_probes",
    # SDE steppers
    "AbstractSDEStepper", "EulerMaruyama", "SDELike", "SDEResult", "SDE_STEPPERS",
    "StochasticHeun", "brownian_increments", "euler_maruyama_step", "get_sde_stepper",
    "sdeint", "stochastic_heun_step",
]
