r"""Point clouds from disk: ``.npy`` and ``.csv`` files.

A cloud is returned as ``points`` of shape ``(n, d)`` and optional raw ``weights`` of shape
``(n,)`` (non-negative, positive total mass, *not* normalised; the caller decides).

Formats:

- ``.npy``: a numeric array of shape ``(n, d)``, loaded with ``allow_pickle=False`` (object
  arrays are rejected, never unpickled). Weights are never guessed from an extra column;
  they come from ``weights_path`` or, if that is not given, from a sibling file
  ``<stem>.weights.npy`` (e.g. ``cloud.npy`` → ``cloud.weights.npy``) when it exists.
- ``.csv``: comma-separated numbers, one point per row, with an optional header line
  (recognised when none of its cells is a number). A header column named ``weight`` or
  ``w`` (any case) holds the weights; every other column is a coordinate. Blank lines and
  lines starting with ``#`` are skipped.

A weights file (``weights_path``) is ``.npy`` of shape ``(n,)`` or ``(n, 1)``, or ``.csv``
with a single column or a header naming a ``weight``/``w`` column.

Every failure raises ``ValueError`` naming the file and the problem (row and column for
malformed CSV, count and first row for NaN/inf values).

Example:
    >>> points, weights = load_cloud("examples/clouds/target.csv")  # doctest: +SKIP
    >>> points.shape, weights.shape                                  # doctest: +SKIP
    (torch.Size([400, 2]), torch.Size([400]))
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_cloud", "load_weights", "sibling_weights_path", "SUFFIXES", "WEIGHT_COLUMNS"]

#: File suffixes ``load_cloud`` understands.
SUFFIXES: tuple[str, ...] = (".npy", ".csv")
#: Header names (case-insensitive) of the weight column of a CSV file.
WEIGHT_COLUMNS: tuple[str, ...] = ("weight", "w")


def sibling_weights_path(path: str | os.PathLike[str]) -> Path:
    """The weights file looked for next to a ``.npy`` cloud: ``<stem>.weights.npy``."""
    p = Path(path)
    return p.with_name(p.stem + ".weights.npy")


def load_cloud(
    path: str | os.PathLike[str],
    *,
    weights_path: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor | None]:
    """Load a point cloud and its optional raw weights from a ``.npy`` or ``.csv`` file.

    Args:
        path: The cloud file, ``.npy`` (array ``(n, d)``) or ``.csv`` (see module docs).
        weights_path: Optional weights file (``.npy`` or ``.csv``) with one weight per point.
            For ``.npy`` clouds, ``<stem>.weights.npy`` next to ``path`` is used when this
            is ``None`` and that file exists.
        dtype: Floating dtype of the returned tensors.
    Returns:
        ``(points, weights)``: ``points`` of shape ``(n, d)`` and ``weights`` of shape
        ``(n,)`` (raw, not normalised) or ``None`` when the file carries no weights.
    Raises:
        ValueError: missing or empty file, unsupported suffix, malformed CSV, wrong rank,
            NaN/inf values, negative weights, zero total mass, weights of the wrong length.
        TypeError: ``dtype`` is not a floating dtype.
    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.csv"
        >>> _ = f.write_text("x,y,w\\n0,0,1\\n1,2,3\\n")
        >>> pts, w = load_cloud(f)
        >>> pts.tolist(), w.tolist()
        ([[0.0, 0.0], [1.0, 2.0]], [1.0, 3.0])
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch dtype, got {dtype!r}.")
    p = _check_file(path, SUFFIXES, "point cloud")
    if p.suffix.lower() == ".npy":
        arr = _load_npy(p)
        if arr.ndim != 2:
            hint = "reshape it to (n, 1)" if arr.ndim == 1 else "reshape it to (n, d)"
            raise ValueError(
                f"{p}: a point cloud must be a 2-D array of shape (n, d), got shape "
                f"{arr.shape}; {hint}."
            )
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{p}: the array has shape {arr.shape}; a cloud needs n, d >= 1.")
        points, weights, rows = arr, None, None
        if weights_path is None and sibling_weights_path(p).is_file():
            weights_path = sibling_weights_path(p)
    else:
        points, weights, rows = _load_csv_cloud(p)
        if weights is not None and weights_path is not None:
            raise ValueError(
                f"{p}: the file has a weight column and a weights file ({weights_path}) was "
                f"also given; pass only one of them."
            )
    _check_finite_rows(p, points, rows, "coordinates")
    if weights is not None:
        _check_weights(p, weights, rows)
    if weights_path is not None:
        weights = _load_weights_array(weights_path)
        if weights.shape[0] != points.shape[0]:
            raise ValueError(
                f"{weights_path}: holds {weights.shape[0]} weights but the cloud {p} has "
                f"{points.shape[0]} points; give one weight per point."
            )
    pts = torch.as_tensor(np.ascontiguousarray(points), dtype=dtype)
    w = None if weights is None else torch.as_tensor(np.ascontiguousarray(weights), dtype=dtype)
    return pts, w


def load_weights(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Load a weights file (``.npy`` of shape ``(n,)``/``(n, 1)``, or a one-column ``.csv``).

    Returns the raw ``(n,)`` weights; raises ``ValueError`` for NaN/inf or negative entries
    and for zero total mass.
    """
    return torch.as_tensor(_load_weights_array(path), dtype=dtype)


# --------------------------------------------------------------------------- helpers


def _check_file(path: object, suffixes: tuple[str, ...], what: str) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}.")
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(
            f"{p}: unsupported file type {p.suffix or '(no suffix)'!r} for a {what}; "
            f"use one of {', '.join(suffixes)}."
        )
    if not p.exists():
        raise ValueError(f"{p}: no such file.")
    if not p.is_file():
        raise ValueError(f"{p}: not a regular file.")
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: the file is empty (0 bytes).")
    return p


def _load_npy(p: Path) -> np.ndarray:
    with p.open("rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError(
            f"{p}: not a .npy file (no NumPy header; a pickle, an .npz or a text file?); "
            f"save the array with np.save(path, x)."
        )
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ValueError(
                f"{p}: the array holds Python objects, which would need unpickling; otgen "
                f"never unpickles. Save a numeric array, e.g. np.save(path, x.astype(float))."
            ) from None
        raise ValueError(f"{p}: not a valid .npy file ({e}).") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{p}: not a valid .npy file ({e}).") from None
    if arr.dtype.names is not None:
        raise ValueError(
            f"{p}: structured arrays (fields {', '.join(arr.dtype.names)}) are not "
            f"supported; save a plain (n, d) float array and the weights in a separate file."
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{p}: the array has non-numeric dtype {arr.dtype}; save a float array.")
    return arr.astype(np.float64, copy=False)


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv_table(p: Path) -> tuple[list[str] | None, np.ndarray, list[int]]:
    """Parse a numeric CSV: ``(header or None, values (rows, cols), line number per row)``."""
    header: list[str] | None = None
    values: list[list[float]] = []
    lines: list[int] = []
    ncols: int | None = None
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for row in reader:
                line = reader.line_num
                cells = [c.strip() for c in row]
                if not cells or all(c == "" for c in cells) or cells[0].startswith("#"):
                    continue
                if ncols is None:
                    ncols = len(cells)
                    if all(_parse_float(c) is None for c in cells):
                        header = cells
                        continue
                elif len(cells) != ncols:
                    raise ValueError(
                        f"{p}: malformed CSV, line {line} has {len(cells)} column(s) but "
                        f"{'the header' if header is not None else 'the first row'} has "
                        f"{ncols}; every row needs the same number of columns."
                    )
                parsed: list[float] = []
                for j, c in enumerate(cells):
                    v = _parse_float(c)
                    if v is None:
                        name = f" ({header[j]!r})" if header is not None else ""
                        shown = f"non-numeric value {c!r}" if c else "an empty cell"
                        raise ValueError(
                            f"{p}: malformed CSV, {shown} at line {line}, "
                            f"column {j + 1}{name}; every data cell must be a number."
                        )
                    parsed.append(v)
                values.append(parsed)
                lines.append(line)
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not a UTF-8 text CSV file ({e.reason}).") from None
    except csv.Error as e:
        raise ValueError(f"{p}: malformed CSV ({e}).") from None
    if ncols is None:
        raise ValueError(f"{p}: the file holds no data (only blank or comment lines).")
    if not values:
        raise ValueError(f"{p}: the file has a header but no data rows.")
    return header, np.asarray(values, dtype=np.float64), lines


def _weight_column(p: Path, header: list[str] | None) -> int | None:
    if header is None:
        return None
    idx = [j for j, h in enumerate(header) if h.lower() in WEIGHT_COLUMNS]
    if len(idx) > 1:
        raise ValueError(
            f"{p}: the header has {len(idx)} weight columns "
            f"({', '.join(repr(header[j]) for j in idx)}); keep one."
        )
    return idx[0] if idx else None


def _load_csv_cloud(p: Path) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    header, table, lines = _read_csv_table(p)
    wcol = _weight_column(p, header)
    if wcol is None:
        return table, None, lines
    if table.shape[1] == 1:
        raise ValueError(
            f"{p}: the only column is the weight column {header[wcol]!r}; "  # type: ignore[index]
            f"add coordinate columns."
        )
    keep = [j for j in range(table.shape[1]) if j != wcol]
    return table[:, keep], table[:, wcol], lines


def _row_label(rows: list[int] | None, i: int) -> str:
    return f"line {rows[i]}" if rows is not None else f"row {i} (0-based)"


def _check_finite_rows(p: Path, arr: np.ndarray, rows: list[int] | None, what: str) -> None:
    bad = ~np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"{p}: {int(bad.sum())} of {arr.shape[0]} row(s) have NaN/inf {what}, first at "
            f"{_row_label(rows, first)}; drop or impute those rows."
        )


def _check_weights(p: Path | str, w: np.ndarray, rows: list[int] | None) -> None:
    _check_finite_rows(Path(p), w, rows, "weights")
    neg = w < 0
    if neg.any():
        first = int(np.argmax(neg))
        raise ValueError(
            f"{p}: {int(neg.sum())} negative weight(s), first {w[first]:.6g} at "
            f"{_row_label(rows, first)}; weights are masses and must be >= 0."
        )
    total = float(w.sum())
    if not total > 0 or not math.isfinite(total):
        raise ValueError(
            f"{p}: the weights have total mass {total:.6g}; give at least one point a "
            f"positive weight."
        )


def _load_weights_array(path: str | os.PathLike[str]) -> np.ndarray:
    p = _check_file(path, SUFFIXES, "weights file")
    rows: list[int] | None = None
    if p.suffix.lower() == ".npy":
        w = _load_npy(p)
        if w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
        if w.ndim != 1:
            raise ValueError(
                f"{p}: weights must be a 1-D array of shape (n,), got shape {w.shape}."
            )
        if w.shape[0] == 0:
            raise ValueError(f"{p}: the weights array is empty.")
    else:
        header, table, rows = _read_csv_table(p)
        wcol = _weight_column(p, header)
        if wcol is None:
            if table.shape[1] != 1:
                raise ValueError(
                    f"{p}: a weights CSV needs a single column or a header naming a "
                    f"'weight' column, got {table.shape[1]} unnamed columns."
                )
            wcol = 0
        w = table[:, wcol]
    _check_weights(p, w, rows)
    return w
