"""Static optimal transport: costs, problems, solvers, duality, maps and closed forms.

The stable one-line entry points are :func:`solve`, :func:`wasserstein`,
:func:`sinkhorn_divergence`, :func:`gaussian_w2` and :func:`sliced_wasserstein`; the
objects behind them (``LinearProblem``, ``Exact``, ``Sinkhorn``, ``OTResult``, ...) are
exported too.
"""

from otgen.ot.api import solve, wasserstein
from otgen.ot.bb_grid import BenamouBrenier, GridProblem, GridResult, benamou_brenier
from otgen.ot.costs import AbstractCost, CallableCost, Euclidean, PNorm, SqEuclidean, get_cost
from otgen.ot.divergence import sinkhorn_divergence
from otgen.ot.duality import c_transform, c_transform_targets, dual_objective, duality_gap
from otgen.ot.dynamic import DynamicProblem, LeastAction, LeastActionResult, least_action
from otgen.ot.exact import Exact, assignment
from otgen.ot.gaussian import (
    GaussianMap,
    bures_map,
    gaussian_mccann,
    gaussian_w2,
    gaussian_w2_squared,
    sqrtm_psd,
)
from otgen.ot.maps import (
    barycentric_projection,
    displacement_interpolation,
    entropic_map,
    interpolate_coupling,
)
from otgen.ot.mccann import DisplacementPath, gaussian_displacement, mccann_interpolation
from otgen.ot.onedim import monotone_map, wasserstein_1d, wasserstein_1d_cost
from otgen.ot.problem import LinearProblem
from otgen.ot.result import ConvergenceWarning, OTResult
from otgen.ot.sinkhorn import Sinkhorn
from otgen.ot.sliced import sliced_wasserstein

__all__ = [
    "AbstractCost", "CallableCost", "ConvergenceWarning", "Euclidean", "Exact", "assignment",
    "GaussianMap", "LinearProblem", "OTResult", "PNorm", "Sinkhorn", "SqEuclidean",
    "barycentric_projection", "bures_map", "c_transform", "c_transform_targets",
    "displacement_interpolation", "dual_objective", "duality_gap", "entropic_map",
    "gaussian_mccann", "gaussian_w2", "gaussian_w2_squared", "get_cost",
    "interpolate_coupling", "monotone_map", "sinkhorn_divergence", "sliced_wasserstein",
    "solve", "sqrtm_psd", "wasserstein", "wasserstein_1d", "wasserstein_1d_cost",
    "BenamouBrenier", "GridProblem", "GridResult", "benamou_brenier",
    "DynamicProblem", "LeastAction", "LeastActionResult", "least_action",
    "DisplacementPath", "gaussian_displacement", "mccann_interpolation",
]
