r"""Training a Gaussian VAE (:class:`otgen.models.vae.VAE`) on scikit-learn's digits.

Two phases (Arvanitidis et al., 2018): ``steps`` Adam steps on the ELBO with a learned
constant decoder std (KL weight warmed up linearly over ``kl_warmup`` steps), then k-means
centres on the encoded training means and ``var_steps`` steps training only the RBF
precision weights (encoder and mean frozen). The run directory gets ``config.json``,
``metrics.json`` (test/train ELBO, log-likelihood, KL in nats per image, decoder std at
the data and far from it, ``train_seconds``), ``model.safetensors``, ``loss.png`` and a
resumable ``checkpoint/`` (bit-for-bit on the CPU: weights, Adam state and the two random
streams ``data`` and ``noise`` are saved).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from otgen._validate import check_choice
from otgen.data.digits import SCALES, load_digits
from otgen.models.mlp import ACTIVATIONS
from otgen.models.vae import VAE
from otgen.train._validate_cfg import (
    check_dtype,
    check_fields,
    check_known_keys,
    check_nonnegative,
    read_run_config,
)
from otgen.train.checkpoint import has_checkpoint, load_checkpoint, load_weights, save_checkpoint

__all__ = ["VAEConfig", "train_vae", "evaluate_vae", "load_vae_run", "build_vae"]


@dataclass(frozen=True)
class VAEConfig:
    """Hyperparameters of ``otgen train --model vae`` (saved as ``config.json``).

    Attributes:
        model: Always ``"vae"`` (identifies the run kind).
        data: ``"digits"`` (scikit-learn's 8×8 digits, fixed train/test split).
        scale: Pixel range, ``"[0,1]"`` or ``"[-1,1]"``.
        latent_dim, hidden, depth, activation: Architecture (``tanh``: a smooth metric).
        n_centres, rbf_scale, zeta, min_std: The RBF variance network (centres ``K``,
            bandwidth factor ``a``, precision floor, std floor).
        steps: Phase-1 steps (encoder, mean, constant std). var_steps: Phase-2 steps.
        batch_size, lr, var_lr: Adam settings of the two phases.
        kl_warmup: Steps over which the KL weight grows linearly from 0 to 1.
        seed: Seed of the weights and of the ``data`` / ``noise`` streams.
        dtype: ``"float32"`` or ``"float64"``. threads: torch threads while training.
        ckpt_every: Steps between checkpoints (0: at the phase switch and the end only).
    """

    model: str = "vae"
    data: str = "digits"
    scale: str = "[0,1]"
    latent_dim: int = 2
    hidden: int = 128
    depth: int = 2
    activation: str = "tanh"
    n_centres: int = 32
    rbf_scale: float = 1.0
    zeta: float = 1e-2
    min_std: float = 1e-2
    steps: int = 8000
    var_steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    var_lr: float = 1e-2
    kl_warmup: int = 1000
    seed: int = 0
    dtype: str = "float32"
    threads: int = 1
    ckpt_every: int = 2000

    def __post_init__(self) -> None:
        check_choice("model", self.model, ("vae",))
        check_choice("data", self.data, ("digits",))
        check_choice("scale", self.scale, SCALES)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_dtype(self.dtype)
        check_fields(self, ints=("latent_dim", "hidden", "n_centres", "steps", "batch_size",
                                 "threads"),
                     counts=("depth", "var_steps", "kl_warmup", "ckpt_every"),
                     positive=("rbf_scale", "zeta", "lr", "var_lr"))
        check_nonnegative("min_std", self.min_std)

    @property
    def total_steps(self) -> int:
        return self.steps + self.var_steps

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> VAEConfig:
        check_known_keys(cls, obj, "VAE config")
        return cls(**obj)


def build_vae(cfg: VAEConfig) -> VAE:
    """The (seeded) untrained model of ``cfg``."""
    torch.manual_seed(cfg.seed)
    model = VAE(64, cfg.latent_dim, hidden=cfg.hidden, depth=cfg.depth,
                activation=cfg.activation, n_centres=cfg.n_centres, zeta=cfg.zeta,
                min_std=cfg.min_std)
    return model.to(getattr(torch, cfg.dtype))


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _save_weights(model: VAE, out: Path) -> None:
    tmp = out / f".model.safetensors.tmp-{os.getpid()}"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp))
    os.replace(tmp, out / "model.safetensors")


def _set_phase_grads(model: VAE, phase: int) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_((name == "rbf.log_weight") == (phase == 1))


def train_vae(cfg: VAEConfig, run_dir: str | os.PathLike[str], *, resume: bool = False,
              progress: bool | None = None) -> tuple[VAE, dict[str, Any]]:
    """Train ``cfg`` into ``run_dir`` (``config.json`` is written by the caller or here).

    Returns:
        ``(model, state)`` with ``state`` holding ``step``, ``loss`` (negative ELBO per
        step), ``train_seconds``.
    Raises:
        ValueError: ``resume`` without a checkpoint.
    """
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").exists():
        _write_json(out / "config.json", cfg.to_json())
    dtype = getattr(torch, cfg.dtype)
    x_train, _ = load_digits("train", cfg.scale, dtype=dtype)  # type: ignore[arg-type]
    model = build_vae(cfg)
    gens = {"data": torch.Generator().manual_seed(cfg.seed * 1000 + 1),
            "noise": torch.Generator().manual_seed(cfg.seed * 1000 + 2)}
    opt = torch.optim.Adam([
        {"params": [p for n, p in model.named_parameters() if n != "rbf.log_weight"],
         "lr": cfg.lr},
        {"params": [model.rbf.log_weight], "lr": cfg.var_lr}])
    state: dict[str, Any] = {"step": 0, "loss": [], "train_seconds": 0.0}
    if resume:
        if not has_checkpoint(out):
            raise ValueError(f"--resume: no checkpoint in {out}; run without --resume first.")
        if cfg.steps > 0:
            model.phase.fill_(0)
        state = load_checkpoint(out, model=model, optimizer=opt, generators=gens)
    losses: list[float] = list(state["loss"])
    step, seconds0 = int(state["step"]), float(state["train_seconds"])
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    bar = tqdm(total=cfg.total_steps, initial=step, desc="train vae", unit="step",
               disable=progress is False, delay=1.0, leave=False, mininterval=0.5)
    n = x_train.shape[0]

    def checkpoint() -> dict[str, Any]:
        st = {"step": step, "loss": losses,
              "train_seconds": seconds0 + time.perf_counter() - t_start}
        save_checkpoint(out, model=model, optimizer=opt, generators=gens, state=st)
        return st

    try:
        while step < cfg.total_steps:
            phase = 0 if step < cfg.steps else 1
            if phase == 1 and int(model.phase) == 0:
                model.start_variance_phase(x_train, scale=cfg.rbf_scale,
                                           generator=torch.Generator().manual_seed(cfg.seed))
            _set_phase_grads(model, phase)
            idx = torch.randint(n, (cfg.batch_size,), generator=gens["data"])
            beta = 1.0 if phase == 1 or cfg.kl_warmup == 0 else min(1.0, step / cfg.kl_warmup)
            elbo, _, _ = model.elbo(x_train[idx], generator=gens["noise"], beta=beta)
            loss = -elbo.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"VAE loss became {float(loss)} at step {step}; "
                                         "lower --lr or raise min_std.")
            bar.update(1)
            if step % 100 == 0:
                bar.set_postfix(neg_elbo=f"{sum(losses[-100:]) / 100:.2f}", refresh=False)
            if ((cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps) \
                    and step < cfg.total_steps:
                checkpoint()
    finally:
        bar.close()
        torch.set_num_threads(threads)
    state = checkpoint()
    _save_weights(model, out)
    return model, state


@torch.no_grad()
def evaluate_vae(model: VAE, cfg: VAEConfig, *, n_samples: int = 8) -> dict[str, float]:
    """ELBO terms on the test and train splits (nats per image, ``n_samples`` draws of
    :math:`q(z|x)` averaged, fixed seed) and the decoder std at the data vs far away."""
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 99)
    out: dict[str, float] = {}
    for split in ("test", "train"):
        x, _ = load_digits(split, cfg.scale, dtype=dtype)  # type: ignore[arg-type]
        terms = [model.elbo(x, generator=g) for _ in range(n_samples)]
        for i, name in enumerate(("elbo", "log_likelihood", "kl")):
            out[f"{name}_{split}"] = float(torch.stack([t[i] for t in terms]).mean())
    x, _ = load_digits("test", cfg.scale, dtype=dtype)  # type: ignore[arg-type]
    m, _ = model.encode(x)
    out["std_at_data"] = float(model.std(m).mean())
    far = m.norm(dim=-1).max() * 3.0
    ring = torch.stack([torch.cos(torch.linspace(0, 6.283, 16, dtype=dtype)),
                        torch.sin(torch.linspace(0, 6.283, 16, dtype=dtype))], 1)
    if model.latent_dim == 2:
        out["std_far"] = float(model.std(far * ring).mean())
    out["latent_radius"] = float(m.norm(dim=-1).max())
    return out


def load_vae_run(run_dir: str | os.PathLike[str]) -> tuple[VAE, VAEConfig]:
    """Rebuild a trained VAE from its run directory (``config.json`` +
    ``model.safetensors``), in eval mode.

    Raises:
        ValueError: not a VAE run directory.
        CheckpointError: missing or unreadable weights.
    """
    out = Path(run_dir)
    obj = read_run_config(out, "otgen train --model vae")
    if not isinstance(obj, dict) or obj.get("model") != "vae":
        raise ValueError(f"--run {out}: not a VAE run (config.json has model="
                         f"{obj.get('model') if isinstance(obj, dict) else None!r}); train "
                         "one with 'otgen train --model vae --data digits --latent-dim 2'.")
    cfg = VAEConfig.from_json(obj)
    model = build_vae(cfg)
    load_weights(model, out / "model.safetensors")
    return model.eval(), cfg
