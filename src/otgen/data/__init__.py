"""Data sources: 2-D toys (:mod:`otgen.data.toys`), specs by name
(:mod:`otgen.data.registry`) and point clouds from ``.npy`` / ``.csv`` files
(:mod:`otgen.data.io`) and scikit-learn's 8×8 digits (:mod:`otgen.data.digits`)."""

from otgen.data.digits import load_digits
from otgen.data.io import load_cloud, load_weights
from otgen.data.registry import TOYS, dataset_dim, get_sampler
from otgen.data.toys import (
    sample_8gaussians,
    sample_checkerboard,
    sample_circles,
    sample_moons,
    sample_pinwheel,
    sample_scurve,
    sample_spirals,
    sample_swissroll,
)

__all__ = [
    "load_digits",
    "load_cloud",
    "load_weights",
    "TOYS",
    "dataset_dim",
    "get_sampler",
    "sample_8gaussians",
    "sample_checkerboard",
    "sample_circles",
    "sample_moons",
    "sample_pinwheel",
    "sample_scurve",
    "sample_spirals",
    "sample_swissroll",
]
