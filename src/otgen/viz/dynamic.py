"""Figures of dynamic OT: particle paths, density frames, velocity quivers, animations.

Every function takes tensors and returns a :class:`matplotlib.figure.Figure` on the Agg
canvas (or, for animations, a ``(Figure, FuncAnimation)`` pair that the caller saves with
``anim.save(path, writer=PillowWriter(fps=...))``); nothing here writes files or calls
``show()``. Points are ``(T, n, d)`` with ``d`` = 1 or 2 (only the first two coordinates
are drawn for ``d > 2``); densities are ``(T, N)`` or ``(T, N1, N2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure
from torch import Tensor

from otgen.viz._common import new_figure as _fig
from otgen.viz._common import to_numpy as _np

__all__ = [
    "animate_densities",
    "animate_points",
    "plot_density_frames",
    "plot_paths",
    "plot_quivers",
]


def _check_points(name: str, xs: Tensor) -> np.ndarray:
    if not isinstance(xs, Tensor) or xs.ndim != 3:
        got = tuple(xs.shape) if isinstance(xs, Tensor) else type(xs).__name__
        raise ValueError(f"`{name}` must have shape (T, n, d), got {got}.")
    return _np(xs)


def plot_paths(xs: Tensor, ts: Tensor | None = None, *, target: Tensor | None = None,
               max_paths: int = 300, title: str = "") -> Figure:
    """Particle paths ``xs`` ``(T, n, d)``: in 2-D, curves from t = 0 (black) to t = 1
    (blue) over the target cloud ``(m, d)`` (grey); in 1-D, position against time."""
    p = _check_points("xs", xs)[:, :max_paths]
    T = p.shape[0]
    t = _np(ts) if ts is not None else np.linspace(0.0, 1.0, T)
    fig = _fig(5.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    if p.shape[2] == 1:
        for i in range(p.shape[1]):
            ax.plot(t, p[:, i, 0], c="olive", alpha=0.3, lw=0.7)
        ax.set_xlabel("t")
        ax.set_ylabel("x")
    else:
        if target is not None:
            q = _np(target)
            ax.scatter(q[:, 0], q[:, 1], s=3, c="0.7", label="target")
        for i in range(p.shape[1]):
            ax.plot(p[:, i, 0], p[:, i, 1], c="olive", alpha=0.3, lw=0.6)
        ax.scatter(p[0, :, 0], p[0, :, 1], s=4, c="black", label="t = 0")
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=4, c="tab:blue", label="t = 1")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="upper right", markerscale=3, fontsize=8)
    ax.set_title(title or "particle paths")
    fig.tight_layout()
    return fig


def _extent(coords: Sequence[Tensor]) -> tuple[float, float, float, float]:
    c0, c1 = _np(coords[0]), _np(coords[1])
    h0 = c0[1] - c0[0] if c0.size > 1 else 1.0
    h1 = c1[1] - c1[0] if c1.size > 1 else 1.0
    return (float(c0[0] - h0 / 2), float(c0[-1] + h0 / 2), float(c1[0] - h1 / 2),
            float(c1[-1] + h1 / 2))


def plot_density_frames(rho: Tensor, ts: Tensor, coords: Sequence[Tensor], *,
                        frames: int = 5, title: str = "") -> Figure:
    """Density path ``rho`` ``(T, N)`` or ``(T, N1, N2)`` at ``frames`` evenly spaced
    times: 1-D curves on one axis, or a row of 2-D images (axis 0 horizontal)."""
    r, t = _np(rho), _np(ts)
    idx = np.unique(np.linspace(0, r.shape[0] - 1, max(2, frames)).round().astype(int))
    if r.ndim == 2:
        fig = _fig(6.0, 3.5)
        ax = fig.add_subplot(1, 1, 1)
        x = _np(coords[0])
        cmap = colormaps["viridis"]
        for k, i in enumerate(idx):
            ax.plot(x, r[i], c=cmap(k / max(1, len(idx) - 1)), label=f"t = {t[i]:.2f}")
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        ax.set_title(title or "density path")
    else:
        fig = _fig(2.6 * len(idx), 2.9)
        ext = _extent(coords)
        vmax = float(r.max())
        for k, i in enumerate(idx):
            ax = fig.add_subplot(1, len(idx), k + 1)
            ax.imshow(r[i].T, origin="lower", extent=ext, cmap="magma", vmin=0.0, vmax=vmax)
            ax.set_title(f"t = {t[i]:.2f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        if title:
            fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_quivers(frames: Sequence[tuple[float, Tensor, Tensor]], *,
                 title: str = "velocity") -> Figure:
    """Velocity snapshots: ``frames`` is a list of ``(t, points (k, d), vectors (k, d))``;
    2-D: one quiver panel per time (shared arrow scale); 1-D: ``u(x, t)`` curves."""
    if not frames:
        raise ValueError("`frames` must hold at least one (t, points, vectors) triple.")
    d = frames[0][1].shape[1]
    if d == 1:
        fig = _fig(6.0, 3.5)
        ax = fig.add_subplot(1, 1, 1)
        for t, pts, vec in frames:
            x, v = _np(pts)[:, 0], _np(vec)[:, 0]
            order = np.argsort(x)
            ax.plot(x[order], v[order], label=f"t = {t:.2f}")
        ax.set_xlabel("x")
        ax.set_ylabel("u(x, t)")
        ax.legend(fontsize=8)
        ax.set_title(title)
        fig.tight_layout()
        return fig
    vmax = max(float(np.abs(_np(v)).max()) for _, _, v in frames) or 1.0
    fig = _fig(2.8 * len(frames), 3.0)
    for k, (t, pts, vec) in enumerate(frames):
        p, v = _np(pts), _np(vec)
        ax = fig.add_subplot(1, len(frames), k + 1)
        ax.quiver(p[:, 0], p[:, 1], v[:, 0], v[:, 1], np.hypot(v[:, 0], v[:, 1]),
                  cmap="viridis", angles="xy", scale_units="xy",
                  scale=vmax / (0.08 * max(np.ptp(p[:, 0]), np.ptp(p[:, 1]), 1e-12)),
                  width=0.006)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"t = {t:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def animate_points(xs: Tensor, ts: Tensor | None = None, *, target: Tensor | None = None,
                   weights: Tensor | None = None, interval: int = 80) -> tuple[Figure, Any]:
    """Animation of particles ``xs`` ``(T, n, d)`` over time (2-D scatter; 1-D histogram
    of positions). ``weights`` ``(n,)`` scale the marker areas. Returns ``(fig, anim)``."""
    p = _check_points("xs", xs)
    t = _np(ts) if ts is not None else np.linspace(0.0, 1.0, p.shape[0])
    fig = _fig(4.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    w = _np(weights) if weights is not None else None
    if p.shape[2] == 1:
        lo, hi = float(p.min()), float(p.max())
        bins = np.linspace(lo, hi + 1e-12, 41).tolist()

        def draw1(i: int) -> list[Any]:
            ax.clear()
            ax.hist(p[i, :, 0], bins=bins, weights=w, color="tab:blue", density=True)
            ax.set_title(f"t = {t[i]:.2f}")
            return []

        return fig, FuncAnimation(fig, draw1, frames=p.shape[0], interval=interval)
    if target is not None:
        q = _np(target)
        ax.scatter(q[:, 0], q[:, 1], s=3, c="0.8")
    sizes = 6.0 if w is None else 6.0 * w / max(float(w.mean()), 1e-300)
    sc = ax.scatter(p[0, :, 0], p[0, :, 1], s=sizes, c="tab:blue")
    ax.set_xlim(float(p[..., 0].min()) - 0.1, float(p[..., 0].max()) + 0.1)
    ax.set_ylim(float(p[..., 1].min()) - 0.1, float(p[..., 1].max()) + 0.1)
    ax.set_aspect("equal")
    title = ax.set_title("t = 0.00")

    def draw(i: int) -> list[Any]:
        sc.set_offsets(p[i, :, :2])
        title.set_text(f"t = {t[i]:.2f}")
        return [sc, title]

    return fig, FuncAnimation(fig, draw, frames=p.shape[0], interval=interval)


def animate_densities(rho: Tensor, ts: Tensor, coords: Sequence[Tensor], *,
                      interval: int = 80) -> tuple[Figure, Any]:
    """Animation of a density path ``(T, N)`` or ``(T, N1, N2)``. Returns ``(fig, anim)``."""
    r, t = _np(rho), _np(ts)
    fig = _fig(4.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    title = ax.set_title("t = 0.00")
    if r.ndim == 2:
        x = _np(coords[0])
        (line,) = ax.plot(x, r[0], c="tab:blue")
        ax.set_ylim(0.0, float(r.max()) * 1.05)

        def draw1(i: int) -> list[Any]:
            line.set_ydata(r[i])
            title.set_text(f"t = {t[i]:.2f}")
            return [line, title]

        return fig, FuncAnimation(fig, draw1, frames=r.shape[0], interval=interval)
    im = ax.imshow(r[0].T, origin="lower", extent=_extent(coords), cmap="magma", vmin=0.0,
                   vmax=float(r.max()))

    def draw(i: int) -> list[Any]:
        im.set_data(r[i].T)
        title.set_text(f"t = {t[i]:.2f}")
        return [im, title]

    return fig, FuncAnimation(fig, draw, frames=r.shape[0], interval=interval)
