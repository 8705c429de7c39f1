r"""Latent geometry of generators: pullback and expected metrics, curves, geodesics.

A decoder :math:`f` (any torch callable) makes its latent space Riemannian with
:math:`M(z) = J_f^\top J_f`; a stochastic decoder :math:`\mu + \sigma \odot \varepsilon`
with the expected metric :math:`\bar M = J_\mu^\top J_\mu + J_\sigma^\top J_\sigma`.
Geodesics come from energy minimisation over splines or from the geodesic ODE by shooting.

>>> import torch
>>> from otgen.geometry import PullbackMetric, EnergyMinimizer
>>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
>>> metric = PullbackMetric(lambda z: z @ A.T)
>>> z0, z1 = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
>>> res = EnergyMinimizer()(metric, z0, z1)
>>> round(float(res.length), 6), round(float((A @ torch.ones(2, dtype=torch.float64)).norm()), 6)
(3.741657, 3.741657)
"""

from otgen.geometry.curves import (
    AbstractCurve,
    CubicSpline,
    DiscreteCurve,
    curve_energy,
    curve_length,
    polyline_energy,
    polyline_length,
    polyline_sq_segments,
    straight_line,
)
from otgen.geometry.geodesics import (
    EnergyMinimizer,
    GeodesicResult,
    GeodesicWarning,
    Shooting,
    exp_map,
    ode_residual,
    pairwise_geodesic_distances,
)
from otgen.geometry.metrics import (
    AbstractMetric,
    ExpectedMetric,
    FunctionMetric,
    PullbackMetric,
    decoder_jacobian,
    monte_carlo_metric,
)

__all__ = [
    "AbstractCurve", "AbstractMetric", "CubicSpline", "DiscreteCurve", "EnergyMinimizer",
    "ExpectedMetric", "FunctionMetric", "GeodesicResult", "GeodesicWarning",
    "PullbackMetric", "Shooting", "curve_energy", "curve_length", "decoder_jacobian",
    "exp_map", "monte_carlo_metric", "ode_residual", "pairwise_geodesic_distances",
    "polyline_energy", "polyline_length", "polyline_sq_segments", "straight_line",
]
