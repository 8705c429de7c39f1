r"""scikit-learn's handwritten digits: 1797 grey images of 8×8 pixels with labels 0–9.

The images ship with scikit-learn (no download). Pixel values are integers in
:math:`\{0, \dots, 16\}`; :func:`load_digits` scales them to ``[0, 1]`` (``x / 16``) or
``[-1, 1]`` (``x / 8 - 1``) and flattens each image row by row to a vector of 64 features.

The train/test split is **fixed**: stratified by label, 20 % test, drawn once with seed
:data:`SPLIT_SEED`, so every model in otgen (VAE, conditional generators, the digits
classifier used by the Fréchet metric) trains and tests on the same images. The split is
360 test images (36 per class) and 1437 train images.

Example:
    >>> x, y = load_digits("train")
    >>> x.shape, y.shape, x.dtype, y.dtype
    (torch.Size([1437, 64]), torch.Size([1437]), torch.float32, torch.int64)
    >>> float(x.min()), float(x.max())
    (0.0, 1.0)
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor

from otgen._validate import check_choice

__all__ = ["load_digits", "digits_split_indices", "DIGITS_SHAPE", "SPLIT_SEED", "SCALES",
           "SPLITS", "to_images"]

#: Height and width of one image.
DIGITS_SHAPE = (8, 8)
#: Seed of the fixed stratified train/test split.
SPLIT_SEED = 0
#: Accepted values of ``split`` and ``scale``.
SPLITS = ("train", "test", "all")
SCALES = ("[0,1]", "[-1,1]")
_TEST_PER_CLASS = 36


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits as _sk_load

    bunch = _sk_load()
    x = torch.as_tensor(bunch.data, dtype=torch.float64)  # (1797, 64), values 0..16
    y = torch.as_tensor(bunch.target, dtype=torch.int64)  # (1797,)
    return x, y


@functools.lru_cache(maxsize=1)
def _split() -> tuple[Tensor, Tensor]:
    """Indices of the fixed stratified split: ``(train_idx, test_idx)``, both sorted."""
    _, y = _raw()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    test = []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        perm = torch.randperm(idx.numel(), generator=g)
        test.append(idx[perm[:_TEST_PER_CLASS]])
    test_idx = torch.sort(torch.cat(test)).values
    mask = torch.ones(y.numel(), dtype=torch.bool)
    mask[test_idx] = False
    return torch.nonzero(mask).flatten(), test_idx


def digits_split_indices(split: Literal["train", "test", "all"] = "train") -> Tensor:
    """Row indices (into scikit-learn's order) of ``split``, a sorted ``(n,)`` int64 tensor.

    Raises:
        ValueError: unknown ``split``.
    """
    check_choice("split", split, SPLITS)
    if split == "all":
        return torch.arange(_raw()[1].numel())
    train_idx, test_idx = _split()
    return (train_idx if split == "train" else test_idx).clone()


def load_digits(
    split: Literal["train", "test", "all"] = "train",
    scale: Literal["[0,1]", "[-1,1]"] = "[0,1]",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The digits images as flat vectors and their labels.

    Args:
        split: ``"train"`` (1437 images), ``"test"`` (360, 36 per class) or ``"all"``
            (1797, scikit-learn's order). The split is fixed (stratified, seed
            :data:`SPLIT_SEED`).
        scale: ``"[0,1]"`` maps pixel ``p`` to ``p / 16``, ``"[-1,1]"`` to ``p / 8 - 1``.
        dtype: Floating dtype of the images.
        device: Device of both tensors (default CPU).
    Returns:
        ``(x, y)``: images ``(n, 64)`` (row-major 8×8) of ``dtype`` and labels ``(n,)``
        int64 in ``0..9``.
    Raises:
        ValueError: unknown ``split`` or ``scale``.
        TypeError: ``dtype`` is not a floating dtype.
    """
    check_choice("scale", scale, SCALES)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}; pass e.g. "
                        "torch.float32.")
    idx = digits_split_indices(split)
    x, y = _raw()
    x = x[idx] / 16.0 if scale == "[0,1]" else x[idx] / 8.0 - 1.0
    return x.to(dtype=dtype, device=device), y[idx].to(device=device)


def to_images(x: Tensor) -> Tensor:
    """Reshape flat digits ``(n, 64)`` to images ``(n, 8, 8)`` (a view when possible).

    Raises:
        ValueError: the last dimension is not 64.
    """
    if x.shape[-1] != 64:
        raise ValueError(f"`x` must have 64 features per image (8x8 digits), got shape "
                         f"{tuple(x.shape)}.")
    return x.reshape(*x.shape[:-1], *DIGITS_SHAPE)
