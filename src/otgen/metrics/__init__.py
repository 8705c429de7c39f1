"""Metrics of generated samples and learned flows (OT distances, MMD, path energy, NLL)."""

from otgen.metrics.distances import mmd, sliced_w2, w2
from otgen.metrics.flow import FlowStats, bures_map_error, path_energy

__all__ = ["FlowStats", "bures_map_error", "mmd", "path_energy", "sliced_w2", "w2"]
