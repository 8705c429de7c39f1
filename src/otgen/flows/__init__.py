"""Flow matching: probability paths, minibatch couplings and objectives, CNF likelihood,
class-conditional couplings and guidance, diffusion (score <-> velocity)."""

from otgen.flows.conditional import (
    COUPLINGS,
    AbstractConditionalCoupling,
    ClassPenaltyOTCoupling,
    ConditionalBatch,
    ConditionalFlowMatcher,
    LabelBlindCoupling,
    WithinClassOTCoupling,
    assign_noise_labels,
    make_conditional_matcher,
)
from otgen.flows.couplings import (
    AbstractCoupling,
    EntropicOTCoupling,
    ExactOTCoupling,
    IndependentCoupling,
    ReflowCoupling,
)
from otgen.flows.diffusion import (
    DiffusionMatcher,
    EpsScore,
    GaussianSchedule,
    LinearSchedule,
    ProbabilityFlowField,
    ReverseVPSDE,
    VPSchedule,
    probability_flow_log_likelihood,
    probability_flow_sample,
    reverse_sde_sample,
    score_to_velocity,
    velocity_to_score,
)
from otgen.flows.guidance import ClassifierFreeGuidance, guided_sample
from otgen.flows.likelihood import (
    LikelihoodResult,
    bits_per_dim,
    log_likelihood,
    standard_normal_logprob,
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
    # paths, couplings, matchers
    "AbstractCoupling", "AbstractPath", "BrownianBridgePath", "CurvedPath",
    "EntropicOTCoupling", "ExactOTCoupling", "FlowMatcher", "IndependentCoupling",
    "LinearPath", "LipmanPath", "METHODS", "MatcherBatch", "PathSample", "ReflowCoupling",
    "VPPath", "make_matcher",
    # class-conditional couplings and guidance
    "AbstractConditionalCoupling", "COUPLINGS", "ClassPenaltyOTCoupling", "ConditionalBatch",
    "ConditionalFlowMatcher", "ClassifierFreeGuidance", "LabelBlindCoupling",
    "WithinClassOTCoupling", "assign_noise_labels", "guided_sample", "make_conditional_matcher",
    # diffusion
    "DiffusionMatcher", "EpsScore", "GaussianSchedule", "LinearSchedule",
    "ProbabilityFlowField", "ReverseVPSDE", "VPSchedule", "probability_flow_log_likelihood",
    "probability_flow_sample", "reverse_sde_sample", "score_to_velocity", "velocity_to_score",
    # likelihood
    "LikelihoodResult", "bits_per_dim", "log_likelihood", "standard_normal_logprob",
]
