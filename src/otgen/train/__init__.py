"""Training loop, checkpoints, evaluation and run directories."""

from otgen.train.checkpoint import CheckpointError, has_checkpoint, load_checkpoint, save_checkpoint
from otgen.train.config import TrainConfig, load_config
from otgen.train.evaluate import evaluate
from otgen.train.loop import Run, build_run, save_weights, train

__all__ = [
    "CheckpointError", "Run", "TrainConfig", "build_run", "evaluate", "has_checkpoint",
    "load_checkpoint", "load_config", "save_checkpoint", "save_weights", "train",
]
