"""Helpers shared by CLI subcommands: argument types, run directories, atomic writes.

Nothing here knows about a particular command; each ``<name>_cmd`` module uses these to
parse its flags and to write its run directory (``config.json``, ``metrics.json``, arrays,
figures), every file written atomically (temporary file in the same directory, then
``os.replace``) so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = [
    "CLIError",
    "positive_float",
    "positive_int",
    "new_run_dir",
    "resume_dir",
    "read_resume_config",
    "atomic_write",
    "write_json",
    "save_npy",
    "save_figure",
    "jsonable",
]


T = TypeVar("T")


class CLIError(Exception):
    """A user error found by the CLI itself; ``main`` prints it as one line, exit code 2."""


# --------------------------------------------------------------------------- argument types


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


# --------------------------------------------------------------------------- run directories


def new_run_dir(out: str | os.PathLike[str] | None, prefix: str) -> Path:
    """Create and return the run directory: ``out`` if given (may exist), else a fresh
    ``runs/<prefix>-<YYYYmmdd-HHMMSS>`` (suffixed ``-2``, ``-3``, ... if taken)."""
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise CLIError(f"--out {path}: exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{prefix}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        path = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise CLIError(f"could not create a fresh run directory next to {base}")


# --------------------------------------------------------------------------- atomic writes


def resume_dir(out: str | os.PathLike[str] | None) -> Path:
    """The run directory that ``--resume`` continues (``--out``, which it requires).

    Raises:
        CLIError: no ``--out``.
    """
    if not out:
        raise CLIError("--resume needs --out DIR of the run to continue.")
    return Path(out)


def read_resume_config(out: Path, from_json: Callable[[Any], T]) -> T:
    """``from_json`` of the run's ``config.json`` (e.g. ``VAEConfig.from_json``).

    Raises:
        CLIError: the file is missing, unreadable or not JSON. The ``ValueError`` of
            ``from_json`` (unknown keys, bad values) passes through.
    """
    try:
        return from_json(json.loads((out / "config.json").read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise CLIError(f"--resume: cannot read {out / 'config.json'}: {err}") from err


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file atomically: ``write(fh)`` fills a temporary file in the same directory,
    which is then fsynced and renamed over ``path`` (``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 (not mkstemp's 0o600) so the file gets the umask's permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def jsonable(value: Any) -> Any:
    """Turn a value into strict JSON: tensors/NumPy scalars to numbers, NaN/inf to ``None``,
    paths to strings, tuples to lists, mappings recursively."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # torch / NumPy scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def write_json(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> Path:
    """Atomically write ``obj`` as strict, indented JSON (NaN/inf become ``null``)."""
    data = (json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n").encode()
    return atomic_write(path, lambda fh: fh.write(data))


def save_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """Atomically save a NumPy array as ``.npy`` (never pickled)."""
    import numpy as np

    arr = np.asarray(array)
    return atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=False))


def save_figure(path: str | os.PathLike[str], fig: Any, *, dpi: int = 120) -> Path:
    """Atomically save a matplotlib figure; the format comes from the suffix."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi))
