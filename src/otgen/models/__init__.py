"""Networks: MLPs and vector fields ``v(t, x)`` with time embeddings."""

from otgen.models.conv import ConvVectorField, label_dropout
from otgen.models.embeddings import SinusoidalTimeEmbedding, expand_time, sinusoidal_embedding
from otgen.models.mlp import (
    ACTIVATIONS,
    MLP,
    MLPVectorField,
    count_parameters,
    make_activation,
)

__all__ = [
    "ACTIVATIONS",
    "ConvVectorField",
    "MLP",
    "MLPVectorField",
    "SinusoidalTimeEmbedding",
    "count_parameters",
    "label_dropout",
    "expand_time",
    "make_activation",
    "sinusoidal_embedding",
]
