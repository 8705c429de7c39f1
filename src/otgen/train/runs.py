"""Re-opening a finished run directory: config, weights (safetensors) and training state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from otgen.train.checkpoint import load_weights, read_state
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
        if module is not None:
            load_weights(module, out / f"{name}.safetensors")
    state = read_state(out)
    return run, state
