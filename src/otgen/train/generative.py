r"""Training the OT-view generative models (:mod:`otgen.generative`) into a run directory.

``otgen train --model wgan|semidiscrete|sinkhorn-gen|wae|vae-elbo --data moons|digits|...``
lands here. The data are a fixed training set and a held-out set, the same for every model
and seed: for ``digits`` the fixed train / test split (1437 / 360 images in [0, 1]); for a
toy, ``gaussian:D`` or a file, ``n_train`` and ``n_eval`` independent draws with fixed
seeds. A run directory gets ``config.json``, ``metrics.json`` (flat JSON), ``model.safetensors``,
``samples.png`` (scatter in 2-D, an image grid for digits), ``loss.png`` (every logged
series) and a resumable ``checkpoint/`` (weights, Adam state, the ``data`` / ``latent`` /
``aux`` streams; bit-for-bit on the CPU when ``max_seconds`` is 0).

Metrics (``metrics.json``): ``w2`` (exact :math:`W_2` of ``n_eval`` generated points to the
held-out set), ``w2_init`` (the same before training), ``sliced_w2``, ``mmd``,
``sinkhorn`` (:math:`S_\varepsilon`, ε = 5 % of the mean cost, squared-distance units),
``train_seconds``, ``steps``, and per model ``w1_critic`` / ``w1`` (WGAN: the critic's dual
value vs exact :math:`W_1` on the same samples), ``semidual`` / ``w2sq_train`` (semi-discrete:
:math:`F(\tilde h)` on fresh samples vs exact :math:`W_2^2` of the samples to the training
set), ``reconstruction`` (WAE, held-out), ``elbo`` (VAE, held-out, nats).
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from otgen._validate import check_choice, check_int
from otgen.data.digits import load_digits
from otgen.data.registry import get_sampler
from otgen.generative import MODELS, GenerativeModel, Objective, param_groups, train_step
from otgen.generative.critic import kantorovich_dual
from otgen.metrics import mmd, sliced_w2, w2
from otgen.models.mlp import ACTIVATIONS
from otgen.ot import sinkhorn_divergence, wasserstein
from otgen.train._validate_cfg import (
    check_data_params,
    check_device,
    check_dtype,
    check_fields,
    check_known_keys,
    check_nonnegative,
)
from otgen.train.checkpoint import CheckpointError, has_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["GenerativeConfig", "config_from", "load_data", "build_model", "train_generative",
           "evaluate_generative", "load_generative_run"]

_MOONS = {"noise": 0.05, "noise_kind": "gaussian", "scale": 2.0, "shift": [-1.0, 0.0]}
#: Per-model defaults applied by :func:`config_from` (the CLI) on top of the dataclass
#: defaults. The semi-discrete dual must track a moving generator: on moons, 4096 atoms, one
#: ascent step per generator step and lr 1e-3 collapsed onto half the data and then drifted;
#: 512 atoms, 5 ascent steps and a slower generator lowered W2 steadily.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "semidiscrete": {"lr": 5e-4, "dual_steps": 5, "n_atoms": 512},
}
#: Seeds of the fixed training and held-out draws (independent of ``config.seed``).
DATA_SEEDS = (7919, 7920)


@dataclass(frozen=True)
class GenerativeConfig:
    """Hyperparameters of one run (saved as ``config.json``; unknown keys are refused).

    Attributes:
        model: One of :data:`otgen.generative.MODELS`.
        data: ``"digits"``, a toy name, ``"gaussian:D"`` or ``FILE.npy`` / ``FILE.csv``.
        data_params: Toy parameters (default: the main job's moons).
        n_train, n_eval: Sizes of the fixed training / held-out draws (not for digits) and
            ``n_eval`` generated points for the metrics.
        latent_dim: ``k`` (``None``: 2 for 2-D data, 8 otherwise).
        hidden, depth, activation: MLPs of generator, critic, encoder.
        steps, batch_size, lr: Generator updates, batch, Adam learning rate.
        critic_lr, critic_steps, gp_weight, one_sided, spectral_norm: WGAN critic.
        dual_lr, dual_steps, dual_batch: Semi-discrete ascent (η, steps per generator step,
            generated points per step; see :meth:`otgen.generative.SemiDual.ascent_step`).
        n_atoms: ``semidiscrete``: carry :math:`\tilde h` on the first ``n_atoms`` training
            points only (0: all); fewer atoms mean wider Laguerre cells, larger ascent steps
            and cheaper ``(B, n)`` cost blocks, at the price of fitting a coarser ν.
        loss, eps_rel: ``sinkhorn-gen`` loss and the ε of every Sinkhorn divergence.
        wae_lambda, wae_penalty: WAE.
        max_seconds: Stop once training has used this many seconds (0: no limit); makes
            the run depend on the machine's speed.
        seed, dtype, threads, device, ckpt_every: As in :class:`otgen.train.TrainConfig`.
    """

    model: str = "wgan"
    data: str = "moons"
    data_params: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(_MOONS))
    n_train: int = 4096
    n_eval: int = 2000
    latent_dim: int | None = None
    hidden: int = 128
    depth: int = 3
    activation: str = "relu"
    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    critic_lr: float = 1e-3
    critic_steps: int = 5
    gp_weight: float = 10.0
    one_sided: bool = True
    spectral_norm: bool = False
    dual_lr: float = 1.0
    dual_steps: int = 1
    dual_batch: int = 1024
    n_atoms: int = 0
    loss: str = "sinkhorn"
    eps_rel: float = 0.05
    wae_lambda: float = 10.0
    wae_penalty: str = "mmd"
    max_seconds: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    threads: int = 1
    device: str = "cpu"
    ckpt_every: int = 1000

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_dtype(self.dtype)
        check_fields(self, ints=("n_train", "n_eval", "hidden", "steps", "threads"),
                     counts=("depth", "ckpt_every", "seed", "n_atoms"))
        if self.latent_dim is not None:
            check_int("latent_dim", self.latent_dim)
        check_fields(self, positive=("lr", "critic_lr", "dual_lr"))
        check_nonnegative("max_seconds", self.max_seconds)
        check_data_params(self.data_params)
        if self.data == "digits" and self.data_params:
            raise ValueError("`data_params` apply to toy data, not to digits; drop them.")
        check_device(self.device)
        self.objective()  # validates the objective's fields

    def objective(self) -> Objective:
        return Objective(batch_size=self.batch_size, critic_steps=self.critic_steps,
                         gp_weight=self.gp_weight, one_sided=self.one_sided,
                         dual_steps=self.dual_steps, dual_batch=self.dual_batch,
                         dual_lr=self.dual_lr,
                         loss=self.loss, eps_rel=self.eps_rel, wae_lambda=self.wae_lambda,
                         wae_penalty=self.wae_penalty)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"`device` {self.device!r}: CUDA is not available; use 'cpu'.")
        return torch.device(self.device)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GenerativeConfig:
        check_known_keys(cls, obj, "generative config")
        return cls(**obj)


def load_data(cfg: GenerativeConfig) -> tuple[Tensor, Tensor]:
    """The fixed ``(train (n, d), held_out (m, d))`` sets of ``cfg`` (dtype, device)."""
    dtype, device = getattr(torch, cfg.dtype), cfg.torch_device()
    if cfg.data == "digits":
        train = load_digits("train", dtype=dtype, device=device)[0]
        return train, load_digits("test", dtype=dtype, device=device)[0]
    sampler = get_sampler(cfg.data, dtype=dtype, device=device, **cfg.data_params)
    g_train, g_held = (torch.Generator().manual_seed(s) for s in DATA_SEEDS)
    return sampler(cfg.n_train, g_train), sampler(cfg.n_eval, g_held)


def build_model(cfg: GenerativeConfig, train: Tensor) -> GenerativeModel:
    """The seeded, untrained model of ``cfg`` on the data ``train`` ``(n, d)``."""
    d = int(train.shape[1])
    k = cfg.latent_dim if cfg.latent_dim is not None else (2 if d == 2 else 8)
    torch.manual_seed(cfg.seed)
    atoms = train[:cfg.n_atoms] if cfg.n_atoms else train
    model = GenerativeModel(cfg.model, atoms, latent_dim=k, hidden=cfg.hidden,
                            depth=cfg.depth, activation=cfg.activation,
                            spectral_norm=cfg.spectral_norm)
    return model.to(dtype=train.dtype, device=train.device)


def _optimizer(model: GenerativeModel, cfg: GenerativeConfig) -> torch.optim.Adam:
    return torch.optim.Adam(param_groups(model, cfg.lr, critic_lr=cfg.critic_lr))


def _streams(seed: int) -> dict[str, torch.Generator]:
    return {name: torch.Generator().manual_seed(seed * 1000 + k)
            for k, name in enumerate(("data", "latent", "aux"), start=11)}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _w2_now(model: GenerativeModel, cfg: GenerativeConfig, held: Tensor) -> float:
    x = model.sample(cfg.n_eval, torch.Generator().manual_seed(cfg.seed * 1000 + 99))
    return float(w2(x, held))


def train_generative(cfg: GenerativeConfig, run_dir: str | os.PathLike[str], *,
                     resume: bool = False, progress: bool | None = None,
                     stop_after: int | None = None) -> tuple[GenerativeModel, dict[str, Any]]:
    """Train ``cfg`` into ``run_dir``.

    Args:
        cfg: The configuration (``config.json`` is written here if missing).
        run_dir: Run directory (created).
        resume: Continue from ``run_dir/checkpoint``.
        progress: tqdm bar (``None``: shown for runs over a second).
        stop_after: Stop (after a checkpoint) at this step; used to test resume.
    Returns:
        ``(model, state)``; ``state`` has ``step``, ``history`` (per-step lists: ``loss``
        and the model's estimates), ``train_seconds`` and ``w2_init``.
    Raises:
        ValueError: ``resume`` without a checkpoint; CheckpointError: a broken one.
    """
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").exists():
        _write_json(out / "config.json", cfg.to_json())
    train, held = load_data(cfg)
    model = build_model(cfg, train)
    opt = _optimizer(model, cfg)
    gens = _streams(cfg.seed)
    if resume:
        if not has_checkpoint(out):
            raise ValueError(f"--resume: no checkpoint in {out}; run without --resume first.")
        state = load_checkpoint(out, model=model, optimizer=opt, generators=gens)
    else:
        state = {"step": 0, "history": {}, "train_seconds": 0.0,
                 "w2_init": _w2_now(model, cfg, held)}
    history: dict[str, list[float]] = {k: list(v) for k, v in state["history"].items()}
    step, seconds0 = int(state["step"]), float(state["train_seconds"])
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    obj = cfg.objective()

    def data(n: int, g: torch.Generator) -> Tensor:
        return train[torch.randint(train.shape[0], (n,), generator=g).to(train.device)]

    def checkpoint() -> dict[str, Any]:
        st = {"step": step, "history": history, "w2_init": state["w2_init"],
              "train_seconds": seconds0 + time.perf_counter() - t_start}
        save_checkpoint(out, model=model, optimizer=opt, generators=gens, state=st)
        return st

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.model}", unit="step",
               disable=progress is False, delay=1.0, leave=False, mininterval=0.5)
    t_start = time.perf_counter()
    try:
        while step < end:
            if cfg.max_seconds and seconds0 + time.perf_counter() - t_start >= cfg.max_seconds:
                break
            logged = train_step(model, opt, data, gens, obj)
            step += 1
            for k, v in logged.items():
                history.setdefault(k, []).append(v)
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix({k: f"{sum(v[-50:]) / len(v[-50:]):.4g}"
                                 for k, v in history.items()}, refresh=False)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < end:
                checkpoint()
    finally:
        bar.close()
        torch.set_num_threads(threads)
    state = checkpoint()
    tmp = out / f".model.safetensors.tmp-{os.getpid()}"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp))
    os.replace(tmp, out / "model.safetensors")
    return model, state


@torch.no_grad()
def _model_metrics(model: GenerativeModel, cfg: GenerativeConfig, x: Tensor, train: Tensor,
                   held: Tensor) -> dict[str, float]:
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 98)
    out: dict[str, float] = {}
    if model.critic is not None:
        out["w1_critic"] = float(kantorovich_dual(model.critic, x, held))
        out["w1"] = float(wasserstein(x.double(), held.double(), p=1))
    if model.dual is not None:
        out["semidual"] = float(model.dual.value(model.sample(20_000, g)))
        out["w2sq_train"] = float(wasserstein(x.double(), model.dual.y.double()) ** 2)
    if model.encoder is not None:
        rec = model.decode(model.encoder(held))
        out["reconstruction"] = float((rec - held).square().sum(1).mean())
    if model.vae is not None:
        out["elbo"] = float(torch.stack([model.vae.elbo(held, generator=g)[0].mean()
                                         for _ in range(8)]).mean())
    return out


def evaluate_generative(model: GenerativeModel, cfg: GenerativeConfig, state: dict[str, Any],
                        run_dir: str | os.PathLike[str] | None = None, *,
                        figures: bool = True) -> dict[str, Any]:
    """Metrics of a trained model (see the module docstring); with ``run_dir`` also writes
    ``metrics.json``, ``samples.png`` and ``loss.png`` there."""
    model.eval()
    train, held = load_data(cfg)
    x = model.sample(cfg.n_eval, torch.Generator().manual_seed(cfg.seed * 1000 + 99))
    metrics: dict[str, Any] = {
        "model": cfg.model, "data": cfg.data,
        "w2": float(w2(x, held)), "w2_init": state.get("w2_init"),
        "sliced_w2": float(sliced_w2(x, held, generator=torch.Generator().manual_seed(0))),
        "mmd": float(mmd(x, held)),
        "sinkhorn": float(sinkhorn_divergence(x.detach().double(), held.double(),
                                              eps_rel=cfg.eps_rel)),
        "train_seconds": float(state.get("train_seconds", float("nan"))),
        "steps": int(state.get("step", 0)), "n_eval": cfg.n_eval,
    }
    metrics.update(_model_metrics(model, cfg, x, train, held))
    if run_dir is None:
        return metrics
    out = Path(run_dir)
    _write_json(out / "metrics.json", {k: v for k, v in metrics.items() if v is not None})
    if figures:
        from otgen.viz import plot_samples
        from otgen.viz.generative import plot_image_grid, plot_training_curves

        title = f"{cfg.model}: W2 = {metrics['w2']:.3f}"
        if cfg.data == "digits":
            fig = plot_image_grid(x[:100].reshape(-1, 8, 8), title=title, vmin=0.0, vmax=1.0)
        elif x.shape[1] == 2:
            fig = plot_samples(x, held, title=title)
        else:
            fig = None
        if fig is not None:
            fig.savefig(out / "samples.png")
        plot_training_curves(state.get("history", {}), title=cfg.model).savefig(out / "loss.png")
    return metrics


def load_generative_run(run_dir: str | os.PathLike[str]
                        ) -> tuple[GenerativeModel, GenerativeConfig, dict[str, Any]]:
    """Rebuild a trained model from its run directory (``config.json`` +
    ``model.safetensors`` + the checkpoint's state).

    Raises:
        ValueError: not a run of these models; CheckpointError: missing/broken weights.
    """
    out = Path(run_dir)
    try:
        obj = json.loads((out / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--run {out}: cannot read config.json ({err}); pass a directory "
                         "written by 'otgen train --model wgan|semidiscrete|...'.") from err
    if not isinstance(obj, dict) or obj.get("model") not in MODELS:
        raise ValueError(f"--run {out}: not a run of {', '.join(MODELS)}.")
    cfg = GenerativeConfig.from_json(obj)
    model = build_model(cfg, load_data(cfg)[0])
    try:
        model.load_state_dict(load_file(str(out / "model.safetensors")))
        state = json.loads((out / "checkpoint" / "state.json").read_text())["state"]
    except (SafetensorError, OSError, RuntimeError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{out}: weights or state missing or unreadable ({err}); "
                              "resume the run with 'otgen train --resume --out DIR'.") from err
    return model.eval(), cfg, state


def config_from(model: str, overrides: dict[str, Any], base: str | os.PathLike[str] | None = None
                ) -> GenerativeConfig:
    """The config of ``otgen train --model MODEL``: defaults (with
    :data:`MODEL_DEFAULTS`), then the JSON file ``base``
    (e.g. ``--config FILE``, keys of :class:`GenerativeConfig`), then non-``None``
    ``overrides`` (the command-line flags). A new ``data`` drops the moons parameters
    unless ``data_params`` is given too.

    Raises:
        ValueError: unreadable ``base``, unknown keys or invalid values.
    """
    obj = GenerativeConfig(model=model).to_json()
    obj.update(MODEL_DEFAULTS.get(model, {}))
    if base is not None:
        try:
            loaded = json.loads(Path(base).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--config {base}: cannot read a JSON object ({err}).") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {base} must hold a JSON object of config keys.")
        if loaded.get("data", obj["data"]) != obj["data"] and "data_params" not in loaded:
            obj["data_params"] = {}
        obj.update(loaded)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("data", obj["data"]) != obj["data"] and "data_params" not in given:
        obj["data_params"] = {}
    obj.update(given)
    if obj.get("model", model) != model:
        raise ValueError(f"--config sets model {obj['model']!r} but --model is {model!r}.")
    return GenerativeConfig.from_json(obj)
