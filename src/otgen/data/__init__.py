"""Data sources: point clouds from ``.npy`` / ``.csv`` files (see :mod:`otgen.data.io`)."""

from otgen.data.io import load_cloud, load_weights

__all__ = ["load_cloud", "load_weights"]
