"""Metrics of generated samples and learned flows (OT distances, MMD, path energy, NLL), and
the digits-classifier metrics (Frechet distance, conditional accuracy, dequantised bits/dim)."""

from otgen.metrics.digits import (
    DIGITS_LEVELS,
    DIGITS_OFFSET,
    DIGITS_STEP,
    DequantizedNLL,
    DigitsClassifier,
    cache_dir,
    conditional_accuracy,
    dequantized_bits_per_dim,
    digits_fd,
    frechet_distance,
    load_digits_classifier,
    train_digits_classifier,
)
from otgen.metrics.distances import mmd, sliced_w2, w2
from otgen.metrics.flow import FlowStats, bures_map_error, path_energy

__all__ = [
    "FlowStats", "bures_map_error", "mmd", "path_energy", "sliced_w2", "w2",
    "DIGITS_LEVELS", "DIGITS_OFFSET", "DIGITS_STEP", "DequantizedNLL", "DigitsClassifier",
    "cache_dir", "conditional_accuracy", "dequantized_bits_per_dim", "digits_fd",
    "frechet_distance", "load_digits_classifier", "train_digits_classifier",
]
