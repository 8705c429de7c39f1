"""Figures of a trained flow: samples vs data, trajectories, the loss curve."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from otgen.viz._common import new_figure
from otgen.viz._common import to_numpy as _np

__all__ = ["plot_samples", "plot_trajectories", "plot_loss"]


def _fig(w: float = 5.0, h: float = 5.0) -> Figure:
    return new_figure(w, h, dpi=110)


def plot_samples(generated: Tensor, data: Tensor, *, title: str = "") -> Figure:
    """Scatter of generated ``(n, 2)`` vs data ``(m, 2)`` samples (first two coordinates)."""
    g, d = _np(generated), _np(data)
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(d[:, 0], d[:, 1], s=3, alpha=0.4, c="tab:gray", label="data")
    ax.scatter(g[:, 0], g[:, 1], s=3, alpha=0.6, c="tab:blue", label="generated")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title or "generated vs data")
    fig.tight_layout()
    return fig


def plot_trajectories(xs: Tensor, *, max_paths: int = 300, title: str = "") -> Figure:
    """Paths ``xs`` of shape ``(T, n, 2)`` from t = 0 (black) to t = 1 (blue)."""
    p = _np(xs[:, :max_paths])
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    for i in range(p.shape[1]):
        ax.plot(p[:, i, 0], p[:, i, 1], c="olive", alpha=0.25, lw=0.6)
    ax.scatter(p[0, :, 0], p[0, :, 1], s=4, c="black", label="t = 0")
    ax.scatter(p[-1, :, 0], p[-1, :, 1], s=4, c="tab:blue", label="t = 1")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=3)
    ax.set_title(title or "trajectories")
    fig.tight_layout()
    return fig


def plot_loss(losses: list[float], *, window: int = 50) -> Figure:
    """Training loss per step (light) and its running mean over ``window`` steps."""
    y = np.asarray(losses, dtype=float)
    fig = _fig(6.0, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    if y.size:
        ax.plot(np.arange(1, y.size + 1), y, c="tab:blue", alpha=0.25, lw=0.5)
        if y.size >= window:
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, y.size + 1), smooth, c="tab:blue", lw=1.5,
                    label=f"mean of {window}")
            ax.legend()
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    fig.tight_layout()
    return fig
