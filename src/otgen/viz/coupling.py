r"""Figures of an OT coupling :math:`P` between two point clouds.

In 2-D the clouds are drawn as scatter plots (marker area proportional to weight) joined by
one segment per matched pair :math:`(i, j)`, with opacity proportional to :math:`P_{ij}`.
In any other dimension the plan itself is shown as an image (rows = source points, columns
= target points), binned by summing blocks when it is larger than ``max_pixels`` a side.

Figures are built on the Agg canvas directly (no pyplot state, no GUI, never ``show()``);
the caller saves them with ``fig.savefig(path)``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_coupling"]

_SOURCE_COLOR = "tab:blue"
_TARGET_COLOR = "tab:orange"
_LINE_COLOR = "0.25"


def plot_coupling(
    x: Tensor,
    y: Tensor,
    *,
    plan: Tensor | None = None,
    plan_indices: Tensor | None = None,
    plan_values: Tensor | None = None,
    a: Tensor | None = None,
    b: Tensor | None = None,
    max_lines: int = 2000,
    max_pixels: int = 400,
    title: str | None = None,
) -> Figure:
    r"""Plot two clouds and the coupling between them.

    Args:
        x: Source points, shape ``(n, d)``.
        y: Target points, shape ``(m, d)``, same ``d``.
        plan: Dense plan, shape ``(n, m)``; or give the sparse form instead:
        plan_indices: Row/column indices of the plan's support, shape ``(2, k)``.
        plan_values: Masses on ``plan_indices``, shape ``(k,)``.
        a: Source weights, shape ``(n,)`` (marker sizes); default uniform.
        b: Target weights, shape ``(m,)``; default uniform.
        max_lines: In 2-D, draw only the ``max_lines`` heaviest entries of the plan.
        max_pixels: For ``d != 2``, plans larger than this a side are binned (block sums).
        title: Figure title; a summary ``n``, ``m``, entries shown, by default.
    Returns:
        A :class:`matplotlib.figure.Figure` (Agg canvas); save it with ``fig.savefig``.
    Raises:
        ValueError: inconsistent shapes, or both a dense and a sparse plan.
    Example:
        >>> import io, torch
        >>> x, y = torch.randn(5, 2), torch.randn(5, 2)
        >>> fig = plot_coupling(x, y, plan=torch.eye(5) / 5)
        >>> fig.savefig(io.BytesIO(), format="png")
    """
    xs, ys = _points("x", x), _points("y", y)
    n, m = xs.shape[0], ys.shape[0]
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(
            f"`x` and `y` must have the same dimension d, got {xs.shape[1]} and {ys.shape[1]}."
        )
    if isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 0:
        raise ValueError(f"`max_lines` must be an int >= 0, got {max_lines!r}.")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"`max_pixels` must be an int >= 1, got {max_pixels!r}.")
    wa, wb = _weights("a", a, n), _weights("b", b, m)
    rows, cols, vals = _triplets(plan, plan_indices, plan_values, n, m)

    fig = Figure(figsize=(6.0, 5.0) if xs.shape[1] != 2 else (6.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if xs.shape[1] == 2:
        shown = _draw_2d(ax, xs, ys, wa, wb, rows, cols, vals, max_lines)
        summary = f"n={n}, m={m}" + (
            f", {shown} of {vals.size} plan entries drawn" if vals is not None else ""
        )
    else:
        summary = _draw_image(fig, ax, rows, cols, vals, n, m, max_pixels)
    ax.set_title(title if title is not None else f"coupling ({summary})", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- helpers


def _to_numpy(t: object) -> np.ndarray:
    if isinstance(t, Tensor):
        return t.detach().to("cpu").double().numpy()
    return np.asarray(t, dtype=np.float64)


def _points(name: str, x: object) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"`{name}` must be a non-empty (n, d) cloud, got shape {arr.shape}.")
    return arr


def _weights(name: str, w: object, n: int) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    arr = _to_numpy(w)
    if arr.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), got {arr.shape}.")
    return arr


def _triplets(
    plan: object, idx: object, val: object, n: int, m: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The plan's non-zero entries as ``(rows, cols, masses)`` arrays, or ``None``s."""
    if plan is not None and (idx is not None or val is not None):
        raise ValueError("pass either `plan` or `plan_indices` + `plan_values`, not both.")
    if plan is not None:
        p = _to_numpy(plan)
        if p.shape != (n, m):
            raise ValueError(f"`plan` must have shape ({n}, {m}), got {p.shape}.")
        r, c = np.nonzero(p)
        return r, c, p[r, c]
    if idx is None and val is None:
        return None, None, None
    if idx is None or val is None:
        raise ValueError("`plan_indices` and `plan_values` must be given together.")
    ij = idx.detach().to("cpu").numpy() if isinstance(idx, Tensor) else np.asarray(idx)
    v = _to_numpy(val)
    if ij.ndim != 2 or ij.shape[0] != 2 or v.shape != (ij.shape[1],):
        raise ValueError(
            f"`plan_indices` must have shape (2, k) and `plan_values` shape (k,), got "
            f"{ij.shape} and {v.shape}."
        )
    r, c = ij[0].astype(np.int64), ij[1].astype(np.int64)
    if r.size and (r.min() < 0 or r.max() >= n or c.min() < 0 or c.max() >= m):
        raise ValueError(f"`plan_indices` must lie in [0, {n}) x [0, {m}).")
    keep = v != 0
    return r[keep], c[keep], v[keep]


def _marker_sizes(w: np.ndarray, base: float) -> np.ndarray:
    """Marker areas proportional to weight, ``base`` at the mean weight."""
    mean = float(np.abs(w).mean())
    s = base * np.abs(w) / mean if mean > 0 else np.full(w.shape, base)
    return np.clip(s, 0.0, 40.0 * base)


def _draw_2d(ax, xs, ys, wa, wb, rows, cols, vals, max_lines: int) -> int:
    base = float(np.clip(5000.0 / max(xs.shape[0], ys.shape[0]), 4.0, 40.0))
    shown = 0
    if vals is not None and vals.size and max_lines > 0:
        k = min(max_lines, vals.size)
        top = np.argpartition(-np.abs(vals), k - 1)[:k] if k < vals.size else np.arange(vals.size)
        top = top[np.argsort(np.abs(vals[top]))]  # heaviest drawn last, on top
        segs = np.stack([xs[rows[top]], ys[cols[top]]], axis=1)  # (k, 2, 2)
        alpha = np.abs(vals[top]) / np.abs(vals[top]).max()
        colors = np.tile(np.asarray(to_rgba(_LINE_COLOR)), (k, 1))
        colors[:, 3] = np.clip(alpha, 0.03, 1.0) * 0.6
        ax.add_collection(LineCollection(list(segs), colors=colors, linewidths=0.6, zorder=1))
        shown = k
    ax.scatter(
        xs[:, 0],
        xs[:, 1],
        s=_marker_sizes(wa, base),
        c=_SOURCE_COLOR,
        edgecolors="none",
        alpha=0.8,
        label=f"source x (n={xs.shape[0]})",
        zorder=2,
    )
    ax.scatter(
        ys[:, 0],
        ys[:, 1],
        s=_marker_sizes(wb, base),
        c=_TARGET_COLOR,
        edgecolors="none",
        alpha=0.8,
        label=f"target y (m={ys.shape[0]})",
        zorder=3,
    )
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.legend(loc="best", fontsize=8, markerscale=1.0)
    return shown


def _draw_image(fig, ax, rows, cols, vals, n: int, m: int, max_pixels: int) -> str:
    if vals is None:
        ax.text(0.5, 0.5, "plan not materialised", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return f"n={n}, m={m}, no plan"
    kn, km = -(-n // max_pixels), -(-m // max_pixels)  # block sizes (ceil), 1 if small
    bn, bm = -(-n // kn), -(-m // km)  # number of blocks
    img = np.zeros((bn, bm))
    np.add.at(img, (rows // kn, cols // km), vals)  # block sums, mass preserved
    im = ax.imshow(
        img,
        cmap="magma_r",
        interpolation="nearest",
        aspect="auto",
        extent=(-0.5, m - 0.5, n - 0.5, -0.5),
    )
    fig.colorbar(im, ax=ax, label="mass" + (" (block sums)" if (bn, bm) != (n, m) else ""))
    ax.set_xlabel("target index j")
    ax.set_ylabel("source index i")
    binned = f", {kn}x{km} blocks summed" if (bn, bm) != (n, m) else ""
    return f"n={n}, m={m}{binned}"
