"""Flow matching: probability paths, minibatch couplings and objectives."""

from otgen.flows.couplings import (
    AbstractCoupling,
    EntropicOTCoupling,
    ExactOTCoupling,
    IndependentCoupling,
    ReflowCoupling,
)
from otgen.flows.matchers import METHODS, FlowMatcher, MatcherBatch, make_matcher
from otgen.flows.paths import (
    AbstractPath,
    BrownianBridgePath,
    CurvedPath,
    LinearPath,
    LipmanPath,
    PathSample,
    VPPath,
)

__all__ = [
    "AbstractCoupling", "AbstractPath", "BrownianBridgePath", "CurvedPath",
    "EntropicOTCoupling", "ExactOTCoupling", "FlowMatcher", "IndependentCoupling",
    "LinearPath", "LipmanPath", "METHODS", "MatcherBatch", "PathSample", "ReflowCoupling",
    "VPPath", "make_matcher",
]
