"""Helpers shared by the figure modules: tensors to NumPy, and headless figures."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor


def to_numpy(x: Tensor) -> np.ndarray:
    """A float64 NumPy copy of ``x`` (any shape, detached, on the CPU)."""
    return x.detach().cpu().double().numpy()


def new_figure(w: float, h: float, *, dpi: int = 100) -> Figure:
    """A ``w`` x ``h`` inch :class:`~matplotlib.figure.Figure` on an Agg canvas (no pyplot
    state, so nothing is shown and nothing leaks between figures)."""
    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig
