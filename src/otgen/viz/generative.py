"""Figures of the OT-view generative models: image grids of samples and training curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_image_grid", "plot_training_curves"]


def plot_image_grid(images: Tensor, *, ncol: int = 10, title: str = "",
                    vmin: float | None = None, vmax: float | None = None) -> Figure:
    """Grid of grey images ``(n, h, w)`` (``n`` rounded up to full rows, dark = high)."""
    x = images.detach().cpu().double().numpy()
    n, h, w = x.shape
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    canvas = np.full((nrow * (h + 1) + 1, ncol * (w + 1) + 1), np.nan)
    for k in range(n):
        r, c = divmod(k, ncol)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = x[k]
    fig = Figure(figsize=(0.5 * ncol + 0.4, 0.5 * nrow + (0.6 if title else 0.2)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo = float(np.nanmin(x)) if vmin is None else vmin
    hi = float(np.nanmax(x)) if vmax is None else vmax
    ax.imshow(np.ma.masked_invalid(canvas), cmap="gray_r", vmin=lo, vmax=hi,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_training_curves(history: Mapping[str, Sequence[float]], *, window: int = 50,
                         title: str = "") -> Figure:
    """One panel per logged series (linear scale: dual values may be negative): the value
    per step (light) and its running mean over ``window`` steps."""
    names = [k for k, v in history.items() if len(v)]
    fig = Figure(figsize=(6.0, 2.4 * max(1, len(names)) + 0.3), dpi=110)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        y = np.asarray(history[name], dtype=float)
        ax = fig.add_subplot(len(names), 1, i + 1)
        steps = np.arange(1, y.size + 1)
        ax.plot(steps, y, c="tab:blue", alpha=0.25, lw=0.5)
        if y.size >= window:
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, y.size + 1), smooth, c="tab:blue", lw=1.5)
            lo, hi = np.percentile(y, [1, 99])
            pad = 0.1 * (hi - lo) if hi > lo else 1.0
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(name)
        if i == 0 and title:
            ax.set_title(title)
    if names:
        fig.axes[-1].set_xlabel("generator step")
    fig.tight_layout()
    return fig
