r"""MNIST (or any IDX image set) from files the user already has on disk; never downloaded.

The IDX format (LeCun et al.) is a big-endian header followed by the raw array:

* bytes 0-1: zero; byte 2: element type (``0x08`` unsigned byte, ``0x09`` signed byte,
  ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64); byte 3: the number
  of dimensions ``k``;
* ``k`` big-endian uint32 sizes;
* the ``prod(sizes)`` elements, big-endian, in C order.

MNIST ships ``train-images-idx3-ubyte`` (60000 × 28 × 28 uint8), ``train-labels-idx1-ubyte``
(60000 uint8 labels), and the ``t10k-*`` test files, each optionally gzipped (``.gz``).
:func:`load_mnist` finds them in a directory (accepting ``-`` or ``.`` before ``idx``, as
some mirrors rename them), checks that images and labels agree, and scales pixel ``p`` in
``{0, ..., 255}`` to ``[0, 1]`` (``p / 255``) or ``[-1, 1]`` (``2 p / 255 - 1``).

Example:
    >>> x, y = load_mnist("~/data/mnist", "test", "[-1,1]")   # doctest: +SKIP
    >>> x.shape, y.shape                                     # doctest: +SKIP
    (torch.Size([10000, 784]), torch.Size([10000]))
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from otgen._validate import check_choice

__all__ = ["load_idx", "load_mnist", "find_mnist_files", "write_idx", "MNIST_FILES",
           "IDX_DTYPES"]

#: IDX type code -> NumPy big-endian dtype.
IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
                              0x0D: ">f4", 0x0E: ">f8"}
#: ``split`` -> (images stem, labels stem) of the MNIST file names.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(p: Path) -> bytes:
    try:
        with p.open("rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":  # gzip magic
            with gzip.open(p, "rb") as gz:
                return gz.read()
        return p.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"{p}: cannot read the file ({err}); is it a complete IDX file?"
                         ) from None


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a NumPy array in native byte order.

    Args:
        path: The file.
    Returns:
        Array of the shape stored in the header (e.g. ``(n, 28, 28)`` uint8 for images,
        ``(n,)`` for labels), C-contiguous, native byte order.
    Raises:
        ValueError: missing file, bad magic number, unknown type code, or a payload whose
            length does not match the header (truncated or padded file).
    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "l.idx"
        >>> _ = f.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 4]))
        >>> load_idx(f).tolist()
        [7, 1, 4]
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise ValueError(f"{p}: no such file; give the path of an IDX file "
                         "(e.g. train-images-idx3-ubyte or its .gz).")
    raw = _read_bytes(p)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{p}: not an IDX file (the first two bytes must be 0, got "
                         f"{raw[:2].hex() or 'nothing'}).")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{p}: unknown IDX element type 0x{code:02X}; expected one of "
                         f"{', '.join(f'0x{c:02X}' for c in IDX_DTYPES)}.")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{p}: IDX header is truncated ({len(raw)} bytes for {ndim} sizes).")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dt = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dt.itemsize
    payload = len(raw) - 4 - 4 * ndim
    if payload != expected:
        raise ValueError(f"{p}: header says shape {shape} ({expected} bytes of data) but the "
                         f"file holds {payload}; the file is truncated or corrupt.")
    arr = np.frombuffer(raw, dtype=dt, offset=4 + 4 * ndim).reshape(shape)
    return np.ascontiguousarray(arr.astype(dt.newbyteorder("="), copy=False))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``); the inverse
    of :func:`load_idx` (used by tests and to export small subsets).

    Raises:
        ValueError: the dtype has no IDX type code, or the array is 0-d.
    """
    arr = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in IDX_DTYPES.items()}
    key = arr.dtype.newbyteorder("=").str
    if key not in codes or arr.ndim == 0:
        raise ValueError(f"`array` must be a >= 1-d array of uint8, int8, int16, int32, "
                         f"float32 or float64, got {arr.dtype} with shape {arr.shape}.")
    code = codes[key]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big")
                                                     for s in arr.shape)
    body = np.ascontiguousarray(arr.astype(np.dtype(IDX_DTYPES[code]))).tobytes()
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    if p.suffix == ".gz":
        with gzip.open(tmp, "wb") as gz:
            gz.write(head + body)
    else:
        tmp.write_bytes(head + body)
    os.replace(tmp, p)
    return p


def find_mnist_files(root: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """Locate ``(images, labels)`` of ``split`` in directory ``root``.

    Accepts the canonical names, with ``.`` instead of ``-`` before ``idx``, with or
    without ``.gz``.

    Raises:
        ValueError: ``root`` is not a directory, or a file is missing (the message lists
            the names looked for).
    """
    check_choice("split", split, tuple(MNIST_FILES))
    base = Path(os.path.expanduser(os.fspath(root)))
    if not base.is_dir():
        raise ValueError(f"mnist:{root}: not a directory; pass the folder holding "
                         f"{MNIST_FILES[split][0]}[.gz] and {MNIST_FILES[split][1]}[.gz].")
    found: list[Path] = []
    for stem in MNIST_FILES[split]:
        names = [n + gz for n in (stem, stem.replace("-idx", ".idx")) for gz in ("", ".gz")]
        hits = [base / n for n in names if (base / n).is_file()]
        if not hits:
            raise ValueError(f"mnist:{root}: missing {stem} (looked for {', '.join(names)}); "
                             "download MNIST yourself and point --data mnist:PATH at it.")
        found.append(hits[0])
    return found[0], found[1]


def load_mnist(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] = "train",
    scale: Literal["[0,1]", "[-1,1]"] = "[-1,1]",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""MNIST images as flat vectors and their labels, read from ``root``.

    Args:
        root: Directory with the four IDX files (see :func:`find_mnist_files`).
        split: ``"train"`` or ``"test"``.
        scale: ``"[0,1]"`` maps pixel ``p`` to ``p / 255``, ``"[-1,1]"`` to ``2p/255 - 1``.
        dtype: Floating dtype of the images. device: Device of both tensors.
    Returns:
        ``(x, y)``: images ``(n, H*W)`` (row-major; ``H = W = 28`` for MNIST) and labels
        ``(n,)`` int64.
    Raises:
        ValueError: missing files, malformed IDX, images that are not ``(n, H, W)`` uint8,
            labels that are not ``(n,)``, or counts that disagree.
        TypeError: ``dtype`` is not floating.
    """
    check_choice("scale", scale, ("[0,1]", "[-1,1]"))
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}.")
    img_path, lab_path = find_mnist_files(root, split)
    images, labels = load_idx(img_path), load_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected uint8 images of shape (n, H, W), got "
                         f"{images.dtype} {images.shape}.")
    if labels.ndim != 1:
        raise ValueError(f"{lab_path}: expected labels of shape (n,), got {labels.shape}.")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{img_path} holds {images.shape[0]} images but {lab_path} holds "
                         f"{labels.shape[0]} labels; use files of the same split.")
    x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float64))
    x = x / 255.0 if scale == "[0,1]" else x * (2.0 / 255.0) - 1.0
    y = torch.from_numpy(labels.astype(np.int64))
    return x.to(dtype=dtype, device=device), y.to(device=device)
