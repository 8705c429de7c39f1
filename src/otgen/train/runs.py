"""Re-opening a finished run directory: config, weights (safetensors) and training state."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from otgen.train.checkpoint import CheckpointError
from otgen.train.config import load_config
from otgen.train.loop import Run, build_run

__all__ = ["load_run"]


def load_run(run_dir: str | os.PathLike[str]) -> tuple[Run, dict[str, Any]]:
    """Rebuild the run in ``run_dir`` with its trained weights.

    Returns:
        ``(run, state)``; ``state`` has ``step``, ``loss`` and ``train_seconds`` from the
        last checkpoint (empty history if none was kept).
    Raises:
        ValueError: not a run directory, bad config.
        CheckpointError: missing, truncated or mismatched weights.
    """
    out = Path(run_dir)
    if not out.is_dir():
        raise ValueError(f"--run {out}: not a directory; pass a directory written by "
                         "'otgen train'.")
    run = build_run(load_config(out))
    for name, module in (("model", run.model), ("ema", run.ema)):
        if module is None:
            continue
        path = out / f"{name}.safetensors"
        if not path.exists():
            raise CheckpointError(f"{path} is missing; the run did not finish (resume it "
                                  "with 'otgen train --resume --out DIR').")
        try:
            module.load_state_dict(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError) as err:
            raise CheckpointError(f"{path} is unreadable or does not fit the config: {err}"
                                  ) from err
    state: dict[str, Any] = {"step": 0, "loss": [], "train_seconds": float("nan")}
    ck = out / "checkpoint" / "state.json"
    if ck.exists():
        try:
            state = dict(json.loads(ck.read_text())["state"])
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{ck} is corrupt: {err}") from err
    return run, state
