"""Checkpoints that are safe to load and never half-written.

A checkpoint is a directory ``<run>/checkpoint/`` holding

* ``model.safetensors`` (and ``ema.safetensors``): weights, loaded without unpickling;
* ``optimizer.safetensors`` + the optimizer's non-tensor state inside ``state.json``;
* ``rng.safetensors``: the states of the run's ``torch.Generator`` streams (uint8 tensors);
* ``state.json``: step, loss history, config digest and file checksums (SHA-256).

Writing goes to ``checkpoint.tmp-<pid>/`` and is published by ``os.replace`` onto
``checkpoint/`` (the previous one is kept as ``checkpoint.prev/`` until the swap is done),
so a run killed at any moment leaves either the old or the new checkpoint, never a mix.
Loading verifies every checksum first: a truncated or tampered file gives one clear
:class:`CheckpointError` instead of a crash deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "has_checkpoint",
           "load_weights", "read_state"]

_DIR = "checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, tampered with or does not fit the model."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (for safetensors) and JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        meta: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta[k] = v
        state_meta[str(pid)] = meta
    return tensors, {"param_groups": sd["param_groups"], "state_meta": state_meta}


def _unflatten_optimizer(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
                         ) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, m in meta["state_meta"].items():
        state[int(pid)] = dict(m)
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | os.PathLike[str], *, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, generators: Mapping[str, torch.Generator],
    state: Mapping[str, Any], ema: torch.nn.Module | None = None,
) -> Path:
    """Write a checkpoint atomically under ``run_dir``; returns its directory.

    Args:
        run_dir: Run directory.
        model: Module whose ``state_dict`` is saved (tensors only).
        optimizer: Optimizer (tensor state to safetensors, the rest to JSON).
        generators: Named random streams to restore bit for bit.
        state: JSON-serialisable training state (step, history, ...).
        ema: Optional EMA copy of the model.
    """
    run = Path(run_dir)
    tmp = run / f"{_DIR}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files: dict[str, Tensor | dict[str, Tensor]] = {
        "model.safetensors": {k: v.detach().cpu().contiguous()
                              for k, v in model.state_dict().items()},
        "rng.safetensors": {k: g.get_state() for k, g in generators.items()},
    }
    if ema is not None:
        files["ema.safetensors"] = {k: v.detach().cpu().contiguous()
                                    for k, v in ema.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    files["optimizer.safetensors"] = opt_tensors
    checksums = {}
    for name, tensors in files.items():
        save_file(tensors, str(tmp / name))  # type: ignore[arg-type]
        checksums[name] = _sha256(tmp / name)
    payload = {"state": dict(state), "optimizer": opt_meta, "checksums": checksums,
               "format": "otgen-checkpoint-1"}
    with open(tmp / "state.json", "w") as fh:
        json.dump(payload, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    final, prev = run / _DIR, run / f"{_DIR}.prev"
    if prev.exists():
        shutil.rmtree(prev)
    if final.exists():
        os.replace(final, prev)
    os.replace(tmp, final)
    if prev.exists():
        shutil.rmtree(prev)
    return final


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a checkpoint (or a complete previous one)."""
    run = Path(run_dir)
    return (run / _DIR / "state.json").exists() or (run / f"{_DIR}.prev" / "state.json").exists()


def load_checkpoint(
    run_dir: str | os.PathLike[str], *, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, generators: Mapping[str, torch.Generator],
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore model, optimizer, EMA and generators in place; returns the saved ``state``.

    Raises:
        CheckpointError: missing files, checksum mismatch (truncated or tampered),
            unreadable safetensors, or tensors that do not fit the model.
    """
    run = Path(run_dir)
    ck = run / _DIR
    if not (ck / "state.json").exists() and (run / f"{_DIR}.prev" / "state.json").exists():
        ck = run / f"{_DIR}.prev"  # killed between the two renames: the old one is whole
    path = ck / "state.json"
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {run}: {path} is missing; start without "
                              "--resume or point --out at the run to continue.")
    try:
        payload = json.loads(path.read_text())
        checksums = payload["checksums"]
        state = payload["state"]
        opt_meta = payload["optimizer"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt ({err}); delete {ck} to start "
                              "over.") from err
    loaded: dict[str, dict[str, Tensor]] = {}
    for name, digest in checksums.items():
        f = ck / name
        if not f.exists():
            raise CheckpointError(f"checkpoint file {f} is missing.")
        if _sha256(f) != digest:
            raise CheckpointError(f"checkpoint file {f} does not match its checksum "
                                  "(truncated or modified); refusing to load it.")
        try:
            loaded[name] = load_file(str(f))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"checkpoint file {f} is unreadable: {err}") from err
    try:
        model.load_state_dict(loaded["model.safetensors"])
        if ema is not None and "ema.safetensors" in loaded:
            ema.load_state_dict(loaded["ema.safetensors"])
        optimizer.load_state_dict(_unflatten_optimizer(loaded["optimizer.safetensors"],
                                                       opt_meta))
        for k, g in generators.items():
            g.set_state(loaded["rng.safetensors"][k])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint in {ck} does not fit this model/config: {err}"
                              ) from err
    return dict(state)


def load_weights(module: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a finished run's ``.safetensors`` weights into ``module`` (in place).

    Raises:
        CheckpointError: the file is missing (the run did not finish), unreadable, or does
            not fit the module.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing; the run did not finish (resume it with "
                              "'otgen train --resume --out DIR').")
    try:
        module.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path} is unreadable or does not fit the config: {err}"
                              ) from err


def read_state(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The training state (``step``, ``loss``, ``train_seconds``, ...) of a run's last
    checkpoint, or an empty state when there is none."""
    state: dict[str, Any] = {"step": 0, "loss": [], "train_seconds": float("nan")}
    ck = Path(run_dir) / _DIR / "state.json"
    if ck.exists():
        try:
            state = dict(json.loads(ck.read_text())["state"])
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{ck} is corrupt: {err}") from err
    return state
