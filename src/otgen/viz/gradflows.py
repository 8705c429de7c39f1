"""Figures of gradient flows: snapshots, energy curves and an animated GIF.

A *state* is either a density on a grid (1-D ``(n,)`` or 2-D ``(n1, n2)``, with the grid's
axes) or a particle cloud ``(n, d)``. Snapshots and animations take a stack of states.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.figure import Figure
from torch import Tensor

from otgen.viz._common import new_figure as _fig
from otgen.viz._common import to_numpy as _np

__all__ = ["plot_frames", "plot_energy", "flow_animation", "save_gif"]


def _draw(ax: object, state: np.ndarray, kind: str, axes: Sequence[np.ndarray] | None,
          ref: np.ndarray | None, lim: tuple[float, float, float, float] | None) -> None:
    if kind == "grid" and state.ndim == 1 and axes is not None:
        ax.plot(axes[0], state, c="tab:blue", lw=1.5, label="scheme")  # type: ignore[attr-defined]
        if ref is not None:
            ax.plot(axes[0], ref, c="k", ls="--", lw=1, label="closed form")  # type: ignore[attr-defined]
    elif kind == "grid" and axes is not None:
        ax.imshow(state.T, origin="lower", cmap="viridis", aspect="equal",  # type: ignore[attr-defined]
                  extent=(axes[0][0], axes[0][-1], axes[1][0], axes[1][-1]))
    elif state.shape[1] == 1:
        ax.hist(state[:, 0], bins=50, density=True, color="tab:blue", alpha=0.7)  # type: ignore[attr-defined]
        if ref is not None and axes is not None:
            ax.plot(axes[0], ref, c="k", ls="--", lw=1)  # type: ignore[attr-defined]
    else:
        ax.scatter(state[:, 0], state[:, 1], s=3, alpha=0.6, c="tab:blue")  # type: ignore[attr-defined]
        if lim is not None:
            ax.set_xlim(lim[0], lim[1])  # type: ignore[attr-defined]
            ax.set_ylim(lim[2], lim[3])  # type: ignore[attr-defined]
        ax.set_aspect("equal")  # type: ignore[attr-defined]


def _limits(states: np.ndarray, kind: str) -> tuple[float, float, float, float] | None:
    if kind != "particles" or states.shape[-1] < 2:
        return None
    lo, hi = np.quantile(states[..., 0], [0.005, 0.995]), np.quantile(states[..., 1],
                                                                      [0.005, 0.995])
    pad = 0.1 * max(hi[1] - hi[0], lo[1] - lo[0])
    return lo[0] - pad, lo[1] + pad, hi[0] - pad, hi[1] + pad


def plot_frames(states: Tensor, times: Sequence[float], *, kind: str = "grid",
                axes: Sequence[Tensor] | None = None, reference: Tensor | None = None,
                title: str = "") -> Figure:
    """Snapshots side by side.

    Args:
        states: ``(T, *state)``: grid densities ``(T, n)`` / ``(T, n1, n2)`` or particles
            ``(T, n, d)``.
        times: The ``T`` times.
        kind: ``"grid"`` or ``"particles"``.
        axes: Grid axes (for grids, and as the x-axis of 1-D references).
        reference: Optional closed-form densities ``(T, n)`` drawn dashed (1-D only).
        title: Figure title.
    """
    s = _np(states)
    ax_np = [_np(a) for a in axes] if axes is not None else None
    ref = _np(reference) if reference is not None else None
    k = s.shape[0]
    fig = _fig(3.0 * k, 3.0)
    lim = _limits(s, kind)
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1)
        _draw(ax, s[i], kind, ax_np, None if ref is None else ref[i], lim)
        ax.set_title(f"t = {times[i]:.3g}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_energy(times: Sequence[float], energies: Sequence[float], *,
                reference: Sequence[float] | None = None, label: str = "F") -> Figure:
    """Energy along the flow (and an optional closed-form curve)."""
    fig = _fig(5.0, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(list(times), list(energies), "o-", ms=2.5, c="tab:blue", label="scheme")
    if reference is not None:
        ax.plot(list(times), list(reference), "--", c="k", label="closed form")
        ax.legend()
    ax.set_xlabel("t")
    ax.set_ylabel(label)
    fig.tight_layout()
    return fig


def flow_animation(states: Tensor, times: Sequence[float], *, kind: str = "grid",
                   axes: Sequence[Tensor] | None = None, title: str = "") -> FuncAnimation:
    """An animation of the states (one frame per state), for :func:`save_gif`."""
    s = _np(states)
    ax_np = [_np(a) for a in axes] if axes is not None else None
    fig = _fig(4.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    lim = _limits(s, kind)
    top = float(s.max()) * 1.05 if kind == "grid" and s.ndim == 2 else None

    def frame(i: int) -> list[Any]:
        ax.clear()
        _draw(ax, s[i], kind, ax_np, None, lim)
        if top is not None:
            ax.set_ylim(0.0, top)
        ax.set_title(f"{title} t = {times[i]:.3g}".strip(), fontsize=9)
        return []

    return FuncAnimation(fig, frame, frames=s.shape[0], blit=False)


def save_gif(anim: FuncAnimation, path: str | os.PathLike[str], *, fps: int = 10) -> Path:
    """Write ``anim`` as a GIF (Pillow) atomically: a temporary file, then ``os.replace``."""
    out = Path(path)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.gif")
    try:
        anim.save(str(tmp), writer=PillowWriter(fps=fps))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
