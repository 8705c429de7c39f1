"""Wasserstein gradient flows: energies and first variations, JKO schemes, particle
schemes (explicit, blob, Langevin) and an SDE zoo with closed-form marginals."""

from otgen.gradflows.energies import (
    KL,
    AbstractEnergy,
    Grid,
    InteractionEnergy,
    NegEntropy,
    PorousMedium,
    PotentialEnergy,
    SumEnergy,
    blob_log_density,
    scott_bandwidth,
)
from otgen.gradflows.exact import (
    aggregation_gaussian,
    barenblatt,
    gaussian_quantiles,
    heat_gaussian,
    ou_gaussian,
)
from otgen.gradflows.jko import EntropicJKO, JKOResult, QuantileJKO, jko
from otgen.gradflows.particles import ParticleFlowResult, langevin, particle_flow
from otgen.gradflows.potentials import (
    KERNELS,
    POTENTIALS,
    attractive_repulsive_kernel,
    double_well,
    get_kernel,
    get_potential,
    grad_potential,
    quadratic,
    quadratic_kernel,
    zero_potential,
)
from otgen.gradflows.sdes import (
    VPSDE,
    BridgeSDE,
    BrownianBridge,
    HeatSDE,
    LangevinSDE,
    OrnsteinUhlenbeck,
)

__all__ = [
    "BridgeSDE", "BrownianBridge", "HeatSDE", "LangevinSDE", "OrnsteinUhlenbeck",
    "ParticleFlowResult", "VPSDE", "langevin", "particle_flow",
    "AbstractEnergy", "EntropicJKO", "Grid", "InteractionEnergy", "JKOResult", "KERNELS", "KL",
    "NegEntropy", "POTENTIALS", "PorousMedium", "PotentialEnergy", "QuantileJKO", "SumEnergy",
    "aggregation_gaussian", "attractive_repulsive_kernel", "barenblatt", "blob_log_density",
    "double_well", "gaussian_quantiles", "get_kernel", "get_potential", "grad_potential",
    "heat_gaussian", "jko", "ou_gaussian", "quadratic", "quadratic_kernel", "scott_bandwidth",
    "zero_potential",
]
