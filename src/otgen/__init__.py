"""otgen: optimal transport and transport-based generative modelling in PyTorch."""

from otgen import ot

__version__ = "0.1.0"
__all__ = ["ot", "__version__"]
