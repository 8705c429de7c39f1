"""The configuration of a flow-matching run: every choice, saved as ``config.json``.

A run is reproducible from its config alone (seeded ``torch.Generator`` streams for the
data, the source, the pairing/time/noise draws and the evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otgen._validate import check_choice, check_int, check_positive
from otgen.flows.matchers import METHODS
from otgen.train._validate_cfg import (
    check_data_params,
    check_device,
    check_dtype,
    check_ema,
    check_fields,
    check_known_keys,
    check_nonnegative,
)

__all__ = ["TrainConfig", "SOLVERS", "load_config"]

SOLVERS = ("dopri5", "euler", "heun", "midpoint", "rk4")
ACTIVATIONS = ("selu", "silu", "relu", "gelu", "tanh", "elu")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of ``otgen train`` (defaults: the main job, OT-CFM N(0, I) → moons).

    Attributes:
        data: Target spec (``"moons"``, ``"8gaussians"``, ..., ``"gaussian:D"``,
            ``FILE.npy``/``FILE.csv``); see :func:`otgen.data.registry.get_sampler`.
        data_params: Keyword parameters of the toy sampler (JSON object).
        source: Source spec (``"gaussian"`` or another toy).
        method: Objective: one of :data:`otgen.flows.matchers.METHODS`.
        sigma: Path noise (method-dependent default when ``None``).
        steps: Optimiser steps. batch_size: Samples per step. lr: Adam learning rate.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 over each stage's steps).
        hidden, depth, activation, time_embedding: The MLP vector field.
        ema: EMA decay of the weights used for evaluation (0 disables), warmed up as
            ``min(ema, (1 + k) / (10 + k))`` at step ``k``. The main job's
            defaults (width 128, EMA 0.999) were chosen by measurement: at 8000 steps on
            moons, W2 = 0.186 (width 64, no EMA), 0.144 (64, EMA), 0.129 (128, EMA); the
            sampling floor (2000 vs 2000 fresh samples) is 0.054.
        seed: Seed of every random stream.
        solver: ODE solver for sampling/evaluation; ``solver_steps`` for fixed-step ones.
        atol, rtol: Tolerances of dopri5 at evaluation.
        n_eval: Generated / fresh data samples for W2 and NPE; ``n_nll`` points for the NLL.
        ckpt_every: Steps between checkpoints (0: only at the end).
        eval_every: Steps between quick evaluations during training (W2 of 500 samples
            drawn with 20 RK4 steps, logged in the state's ``evals``; 0 disables).
        reflow: Number of reflow stages after the first (rectified flow / k-reflow): each
            retrains for ``steps`` more steps on pairs ``(x0, T(x0))`` of the model as it
            was at the end of the previous stage. Total steps ``steps * (1 + reflow)``.
        beta_min, beta_max: Linear β schedule of the VP-SDE (``method="diffusion"`` only;
            generative time t = 1 - s, see :mod:`otgen.flows.diffusion`).
        sde_steps: Euler--Maruyama steps of the reverse-SDE sampler evaluated for
            ``method="diffusion"`` (metric ``w2_sde``).
        dtype: ``"float32"`` or ``"float64"``.
        threads: torch intra-op threads during training (restored afterwards); 1 is fastest
            for small MLPs on CPU, where the spare cores compute minibatch couplings.
        prefetch: Batches whose coupling is computed ahead in worker threads (>= 1).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``. Random streams live on the CPU, so a run draws the same batches
            on any device; bit-for-bit resume is guaranteed on the CPU.
    """

    data: str = "moons"
    data_params: dict[str, Any] = dataclasses.field(default_factory=lambda: {
        "noise": 0.05, "noise_kind": "gaussian", "scale": 2.0, "shift": [-1.0, 0.0]})
    source: str = "gaussian"
    method: str = "otcfm"
    sigma: float | None = None
    steps: int = 8000
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "constant"
    hidden: int = 128
    depth: int = 3
    activation: str = "selu"
    time_embedding: str = "concat"
    ema: float = 0.999
    seed: int = 0
    solver: str = "dopri5"
    solver_steps: int = 100
    atol: float = 1e-4
    rtol: float = 1e-4
    n_eval: int = 2000
    n_nll: int = 500
    ckpt_every: int = 2000
    eval_every: int = 0
    reflow: int = 0
    beta_min: float = 0.1
    beta_max: float = 20.0
    sde_steps: int = 500
    dtype: str = "float32"
    threads: int = 1
    prefetch: int = 2
    device: str = "auto"

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("time_embedding", self.time_embedding, ("concat", "sinusoidal"))
        check_dtype(self.dtype)
        check_device(self.device)
        check_fields(self, ints=("steps", "batch_size", "hidden", "depth", "solver_steps",
                                 "n_eval", "n_nll"),
                     counts=("ckpt_every", "eval_every", "reflow"))
        check_int("sde_steps", self.sde_steps)
        check_positive("beta_min", self.beta_min)
        if not self.beta_max >= self.beta_min:
            raise ValueError(f"`beta_max` must be >= beta_min={self.beta_min}, got "
                             f"{self.beta_max}.")
        if self.method == "diffusion" and self.reflow:
            raise ValueError("`reflow` needs a flow-matching method; method 'diffusion' trains "
                             "a score model (use reflow=0).")
        check_fields(self, ints=("threads", "prefetch"), counts=("seed",),
                     positive=("lr", "atol", "rtol"))
        check_ema(self.ema)
        if self.sigma is not None:
            check_nonnegative("sigma", self.sigma)
        check_data_params(self.data_params)

    @property
    def total_steps(self) -> int:
        """Optimiser steps over all stages: ``steps * (1 + reflow)``."""
        return self.steps * (1 + self.reflow)

    def resolved_device(self) -> str:
        """The torch device this config runs on."""
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ``ValueError`` naming them."""
        check_known_keys(cls, obj)
        return cls(**obj)


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read ``config.json`` (a run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError as err:
        raise ValueError(f"{p} does not exist; is this an otgen run directory?") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON ({err}).") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{p} must hold a JSON object.")
    return TrainConfig.from_json(obj)
