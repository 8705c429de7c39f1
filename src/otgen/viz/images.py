"""Image grids: generated digits (or any small grey images) tiled row by row."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from otgen.viz._common import new_figure

__all__ = ["tile_images", "plot_image_grid", "plot_image_rows"]


def tile_images(images: Tensor, *, shape: tuple[int, int], ncol: int, pad: int = 1,
                value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Tile ``images`` ``(n, H*W)`` or ``(n, H, W)`` / ``(n, 1, H, W)`` into one 2-D array in
    ``[0, 1]`` with ``ncol`` images per row and ``pad`` pixels of background (0) between
    them; values are clipped to ``value_range`` and mapped linearly to ``[0, 1]``.

    Returns:
        ``(rows (H + pad) - pad, ncol (W + pad) - pad)`` float array, rows ``ceil(n / ncol)``.
    Raises:
        ValueError: images do not have ``H * W`` pixels, ``ncol < 1`` or an empty range.
    """
    h, w = shape
    arr = images.detach().cpu().double().numpy()
    n = arr.shape[0]
    if n and arr[0].size != h * w:
        raise ValueError(f"`images` must hold {h}x{w} images, got shape {tuple(images.shape)}.")
    if ncol < 1:
        raise ValueError(f"`ncol` must be >= 1, got {ncol}.")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"`value_range` must be (low, high) with high > low, got {value_range}.")
    arr = (np.clip(arr.reshape(n, h, w), lo, hi) - lo) / (hi - lo)
    rows = max(1, -(-n // ncol))
    out = np.zeros((rows * (h + pad) - pad, ncol * (w + pad) - pad))
    for k in range(n):
        r, c = divmod(k, ncol)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = arr[k]
    return out


def _fig(w: float, h: float) -> Figure:
    return new_figure(w, h, dpi=110)


def plot_image_grid(images: Tensor, *, shape: tuple[int, int] = (8, 8), ncol: int = 10,
                    title: str = "", row_labels: Sequence[str] | None = None,
                    value_range: tuple[float, float] = (-1.0, 1.0)) -> Figure:
    """A grid of images ``(n, H*W)``, ``ncol`` per row, grey (white = high), optional
    labels on the left of each row."""
    grid = tile_images(images, shape=shape, ncol=ncol, value_range=value_range)
    rows = max(1, -(-images.shape[0] // ncol))
    scale = 0.45 if shape[0] <= 8 else 0.9
    fig = _fig(max(2.5, ncol * scale + 0.6), max(1.2, rows * scale + (0.5 if title else 0.2)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        ax.set_yticks([r * (shape[0] + 1) + shape[0] / 2 - 0.5 for r in range(len(row_labels))])
        ax.set_yticklabels(list(row_labels), fontsize=8)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_image_rows(rows: Sequence[Tensor], labels: Sequence[str], *,
                    shape: tuple[int, int] = (8, 8), title: str = "",
                    value_range: tuple[float, float] = (-1.0, 1.0)) -> Figure:
    """One labelled row of images per entry of ``rows`` (each ``(k, H*W)``, same ``k``),
    e.g. one row per coupling or per guidance scale."""
    if len(rows) != len(labels) or not rows:
        raise ValueError(f"`rows` and `labels` must be non-empty and of equal length, got "
                         f"{len(rows)} and {len(labels)}.")
    import torch

    k = rows[0].shape[0]
    if any(r.shape[0] != k for r in rows):
        raise ValueError("every row must hold the same number of images.")
    return plot_image_grid(torch.cat([r.detach().cpu() for r in rows]), shape=shape, ncol=k,
                           title=title, row_labels=labels, value_range=value_range)
