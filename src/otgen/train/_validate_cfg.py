"""Checks shared by the run configurations (``config.json``) of every trainer.

:class:`~otgen.train.config.TrainConfig`, :class:`~otgen.train.vae.VAEConfig`,
:class:`~otgen.train.generative.GenerativeConfig` and
:class:`~otgen.train.conditional.ConditionalConfig` validate their fields in
``__post_init__`` with these helpers, so a bad value gives the same message everywhere:
the key, what is expected, what was received and, where useful, the fix, e.g.::

    ValueError: `ema` must be in [0, 1), got 1.5.
    ValueError: unknown config key(s) ['bogus']; valid keys: ['batch_size', ...].
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from otgen._validate import check_choice, check_int, check_positive

DTYPES = ("float32", "float64")


def check_fields(cfg: object, *, ints: Iterable[str] = (), counts: Iterable[str] = (),
                 positive: Iterable[str] = ()) -> None:
    """Check groups of fields of ``cfg`` by name.

    Args:
        cfg: The config (fields read with ``getattr``).
        ints: Fields that must be ints >= 1.
        counts: Fields that must be ints >= 0.
        positive: Fields that must be finite numbers > 0.
    Raises:
        TypeError, ValueError: naming the first bad field (see :mod:`otgen._validate`).
    """
    for name in ints:
        check_int(name, getattr(cfg, name), minimum=1)
    for name in counts:
        check_int(name, getattr(cfg, name), minimum=0)
    for name in positive:
        check_positive(name, getattr(cfg, name))


def check_dtype(value: object) -> str:
    """``"float32"`` or ``"float64"``, else ``ValueError`` naming ``dtype``."""
    return check_choice("dtype", value, DTYPES)


def check_device(value: object) -> str:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, else ``ValueError``."""
    if not isinstance(value, str) or not (
            value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}.")
    return value


def check_nonnegative(name: str, value: Any) -> None:
    """``value >= 0`` (NaN fails), else ``ValueError`` naming ``name``."""
    if not value >= 0:
        raise ValueError(f"`{name}` must be >= 0, got {value!r}.")


def check_ema(value: Any) -> None:
    """An EMA decay in ``[0, 1)`` (0 disables the EMA), else ``ValueError``."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`ema` must be in [0, 1), got {value}.")


def check_data_params(value: object) -> None:
    """Toy-sampler parameters must be a JSON object (``dict``), else ``TypeError``."""
    if not isinstance(value, dict):
        raise TypeError("`data_params` must be a JSON object (dict).")


def check_known_keys(cls: type, obj: dict[str, Any], kind: str = "config") -> None:
    """Refuse keys of ``obj`` that are not fields of the dataclass ``cls``.

    Raises:
        ValueError: ``unknown <kind> key(s) [...]; valid keys: [...]``.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - names)
    if unknown:
        raise ValueError(f"unknown {kind} key(s) {unknown}; valid keys: {sorted(names)}.")


def read_run_config(run_dir: Path, written_by: str) -> Any:
    """The parsed ``config.json`` of a run directory (any JSON value; callers check it).

    Args:
        run_dir: The run directory.
        written_by: The command that writes such runs, for the message.
    Raises:
        ValueError: no ``config.json`` (naming the command that writes one), invalid JSON.
    """
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"--run {run_dir}: no config.json; pass a directory written by "
                         f"'{written_by}'.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
