"""Figures of latent geometry: magnification heat map with geodesics, decoded paths, the
VAE loss curve."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from otgen.viz._common import to_numpy as _np

__all__ = ["plot_latent_geometry", "plot_decoded_paths", "plot_vae_loss"]


def plot_latent_geometry(xs: Tensor, ys: Tensor, log_magnification: Tensor, codes: Tensor,
                         labels: Tensor, geodesics: Tensor, straight: Tensor | None = None,
                         *, title: str = "") -> Figure:
    r"""Heat map of :math:`\log \sqrt{\det M}` with encoded points and paths.

    Args:
        xs, ys: Grid coordinates ``(W,)``, ``(H,)``.
        log_magnification: ``(H, W)`` values on the grid.
        codes: Encoded points ``(n, 2)``; labels: ``(n,)`` integer classes (colours).
        geodesics: ``(B, T, 2)`` paths drawn solid; straight: ``(B, T', 2)`` drawn dashed.
    """
    fig = Figure(figsize=(7.0, 6.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x, y, lm = _np(xs), _np(ys), _np(log_magnification)
    mesh = ax.pcolormesh(x, y, lm, cmap="Greys", shading="auto")
    fig.colorbar(mesh, ax=ax, label=r"$\log \sqrt{\det \bar M(z)}$")
    c, lab = _np(codes), labels.detach().cpu().numpy()
    sc = ax.scatter(c[:, 0], c[:, 1], c=lab, cmap="tab10", s=6, alpha=0.8, vmin=-0.5,
                    vmax=9.5)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    g = _np(geodesics)
    for i in range(g.shape[0]):
        ax.plot(g[i, :, 0], g[i, :, 1], c="tab:red", lw=1.8,
                label="geodesic" if i == 0 else None)
        ax.plot(g[i, [0, -1], 0], g[i, [0, -1], 1], "o", c="tab:red", ms=4)
    if straight is not None:
        s = _np(straight)
        for i in range(s.shape[0]):
            ax.plot(s[i, :, 0], s[i, :, 1], "--", c="tab:orange", lw=1.2,
                    label="straight line" if i == 0 else None)
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "latent space: magnification factor, codes, geodesics")
    fig.tight_layout()
    return fig


def plot_decoded_paths(geodesic_images: Tensor, straight_images: Tensor, *,
                       titles: list[str] | None = None) -> Figure:
    """Decoded images along paths: for each pair a row along the geodesic and a row along
    the straight line.

    Args:
        geodesic_images, straight_images: ``(B, T, h, w)`` images at uniform times.
        titles: Optional label per pair.
    """
    g, s = _np(geodesic_images), _np(straight_images)
    b, t = g.shape[:2]
    fig = Figure(figsize=(0.7 * t + 1.2, 1.5 * b + 0.3), dpi=110)
    FigureCanvasAgg(fig)
    lo, hi = float(min(g.min(), s.min())), float(max(g.max(), s.max()))
    for i in range(b):
        for r, (imgs, name) in enumerate(((g, "geodesic"), (s, "straight"))):
            for j in range(t):
                ax = fig.add_subplot(2 * b, t, (2 * i + r) * t + j + 1)
                ax.imshow(imgs[i, j], cmap="gray_r", vmin=lo, vmax=hi)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    label = name if titles is None else f"{titles[i]}\n{name}"
                    ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.12, right=0.99, top=0.99, bottom=0.01, wspace=0.05,
                        hspace=0.08)
    return fig


def plot_vae_loss(losses: list[float], *, phase_switch: int | None = None,
                  window: int = 50) -> Figure:
    """Negative ELBO per step (light), its running mean, and the phase switch (dotted)."""
    y = np.asarray(losses, dtype=float)
    fig = Figure(figsize=(6.0, 3.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if y.size:
        ax.plot(np.arange(1, y.size + 1), y, c="tab:blue", alpha=0.25, lw=0.5)
        if y.size >= window:
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, y.size + 1), smooth, c="tab:blue", lw=1.5,
                    label=f"mean of {window}")
        lo, hi = np.percentile(y, [1, 99])
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    if phase_switch is not None and 0 < phase_switch < y.size:
        ax.axvline(phase_switch, ls=":", c="k", label="variance phase")
    ax.set_xlabel("step")
    ax.set_ylabel("negative ELBO (nats / image)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return fig
