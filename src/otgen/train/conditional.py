r"""Training class-conditional image flows (digits, MNIST) with label-aware couplings.

The objective is :class:`otgen.flows.conditional.ConditionalFlowMatcher` on the straight
path, the network :class:`otgen.models.conv.ConvVectorField`, the optimiser Adam with an
EMA copy of the weights for evaluation (decay warmed up as in :mod:`otgen.train.loop`).

Data: ``"digits"`` (scikit-learn's 8×8 digits, fixed stratified split, pixels
``p ∈ {0..16}`` at ``z = p/8 - 1``) or ``"mnist:PATH"`` (IDX files on disk, ``p ∈ {0..255}``
at ``z = 2p/255 - 1``). With ``dequantize`` (default) every training image gets uniform
noise inside its pixel cell, :math:`z + a(u - 1/2)`, so the model is a density on the
continuous cube and its bits/dim (evaluated with the same dequantisation) is honest.

Random streams (``torch.Generator``, seeded from ``seed``): ``data`` (batch indices),
``dequant`` (dequantisation noise), ``source`` (noise batches) and ``pair`` (coupling,
times, path noise, label dropout). The weights are initialised under
``torch.manual_seed(seed)``. The checkpoint stores weights, EMA, Adam state and the four
streams, so a resumed run continues bit for bit (on the CPU).

Run directory: ``config.json``, ``model.safetensors`` + ``ema.safetensors``, a resumable
``checkpoint/``; :func:`otgen.train.conditional_eval.evaluate_conditional` adds
``metrics.json``, ``loss.png`` and the sample grids ``samples.png`` (at ``guidance``) and
``samples_g<w>.png``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from otgen._validate import check_choice
from otgen.flows.conditional import COUPLINGS, ConditionalFlowMatcher, make_conditional_matcher
from otgen.models.conv import ConvVectorField
from otgen.train._validate_cfg import (
    check_dtype,
    check_ema,
    check_fields,
    check_known_keys,
    check_nonnegative,
    read_run_config,
)
from otgen.train.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    load_weights,
    read_state,
    save_checkpoint,
)

__all__ = ["ConditionalConfig", "ImageData", "load_image_data", "build_model",
           "train_conditional", "load_conditional_run", "is_image_data", "save_weights",
           "torch_threads"]

SOLVERS = ("dopri5", "euler", "heun", "midpoint", "rk4")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the count afterwards (one
    thread is much faster than two for these small convolutions on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_image_data(spec: object) -> bool:
    """Whether ``spec`` names an image data set (``"digits"`` or ``"mnist:PATH"``)."""
    return isinstance(spec, str) and (spec == "digits" or spec.startswith("mnist:"))


@dataclass(frozen=True)
class ConditionalConfig:
    """Hyperparameters of ``otgen train --data digits [--conditional]`` (``config.json``).

    Attributes:
        model: Always ``"conv"`` (identifies the run kind).
        data: ``"digits"`` or ``"mnist:PATH"``.
        conditional: Train :math:`v(t, x, c)` with labels (else unconditional: every
            label is the null class).
        coupling: ``"independent"``, ``"ot"`` (label-blind minibatch OT), ``"label-ot"``
            (exact OT within each class) or ``"label-penalty"`` (OT with a class-mismatch
            penalty ``label_penalty``, default the batch's mean squared distance).
        guidance_dropout: Label-dropout probability (classifier-free guidance).
        sigma: Noise of the straight path. dequantize: Uniform dequantisation of pixels.
        width, emb_dim: The U-Net (:class:`~otgen.models.conv.ConvVectorField`).
        steps, batch_size, lr, lr_schedule ("constant" | "cosine"), ema: Optimisation.
        seed: Seed of the weights and of every stream.
        solver, solver_steps, atol, rtol: Sampling ODE solver at evaluation (dopri5 at
            1e-3: far below the dequantisation cell of 1/8 in model space).
        guidance: Guidance scale of ``samples.png`` and the headline metrics.
        eval_guidance: Scales evaluated in ``metrics.json`` (``*_g<w>`` keys).
        n_per_class: Generated images per class at evaluation (36: the test set's count).
        n_nll: Test images for bits/dim; nll_divergence: ``"exact"`` or ``"hutchinson"``.
        ckpt_every: Steps between checkpoints (0: only at the end).
        dtype: ``"float32"`` or ``"float64"``. threads: torch threads while training.
    """

    model: str = "conv"
    data: str = "digits"
    conditional: bool = True
    coupling: str = "label-ot"
    guidance_dropout: float = 0.1
    label_penalty: float | None = None
    sigma: float = 0.0
    dequantize: bool = True
    width: int = 16
    emb_dim: int = 64
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    ema: float = 0.999
    seed: int = 0
    solver: str = "dopri5"
    solver_steps: int = 20
    atol: float = 1e-3
    rtol: float = 1e-3
    guidance: float = 1.0
    eval_guidance: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    n_per_class: int = 36
    n_nll: int = 100
    nll_divergence: str = "hutchinson"
    ckpt_every: int = 500
    dtype: str = "float32"
    threads: int = 1

    def __post_init__(self) -> None:
        check_choice("model", self.model, ("conv",))
        if not is_image_data(self.data):
            raise ValueError(f"`data` must be 'digits' or 'mnist:PATH' for the image flow, got "
                             f"{self.data!r}.")
        check_choice("coupling", self.coupling, COUPLINGS)
        if not self.conditional and self.coupling.startswith("label"):
            raise ValueError(f"`coupling` {self.coupling!r} uses the labels; train with "
                             "--conditional or pick 'ot' / 'independent'.")
        if not 0.0 <= self.guidance_dropout <= 1.0:
            raise ValueError(f"`guidance_dropout` must be in [0, 1], got "
                             f"{self.guidance_dropout}.")
        if self.label_penalty is not None:
            check_nonnegative("label_penalty", self.label_penalty)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        check_choice("nll_divergence", self.nll_divergence, ("exact", "hutchinson"))
        check_dtype(self.dtype)
        check_fields(self, ints=("width", "emb_dim", "steps", "batch_size", "solver_steps",
                                 "n_per_class", "threads"),
                     counts=("n_nll", "ckpt_every", "seed"), positive=("lr", "atol", "rtol"))
        check_ema(self.ema)
        check_nonnegative("sigma", self.sigma)
        scales = (self.guidance, *self.eval_guidance)
        if any(isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w)
               for w in scales):
            raise ValueError(f"guidance scales must be finite numbers, got {scales}.")
        object.__setattr__(self, "eval_guidance", tuple(float(w) for w in self.eval_guidance))

    def to_json(self) -> dict[str, Any]:
        obj = dataclasses.asdict(self)
        obj["eval_guidance"] = list(self.eval_guidance)
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ConditionalConfig:
        check_known_keys(cls, obj)
        obj = dict(obj)
        if "eval_guidance" in obj:
            obj["eval_guidance"] = tuple(obj["eval_guidance"])
        return cls(**obj)


@dataclass(frozen=True)
class ImageData:
    """Integer pixels ``(n, d)`` (``pixels``), labels ``(n,)``, and the map to model space
    ``z = step * p + offset``; ``shape`` ``(C, H, W)``; ``levels`` pixel values."""

    pixels: Tensor
    labels: Tensor
    step: float
    offset: float
    shape: tuple[int, int, int]
    levels: int

    def images(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Model-space images ``(n, d)`` (no dequantisation)."""
        return self.step * self.pixels.to(dtype) + self.offset


def load_image_data(spec: str, split: str = "train") -> ImageData:
    """Load ``"digits"`` or ``"mnist:PATH"`` (``split`` ``"train"`` or ``"test"``)."""
    if spec == "digits":
        from otgen.data.digits import load_digits

        x, y = load_digits(split, "[0,1]", dtype=torch.float64)  # type: ignore[arg-type]
        return ImageData(torch.round(x * 16).to(torch.uint8), y, 1 / 8, -1.0, (1, 8, 8), 17)
    if spec.startswith("mnist:"):
        from otgen.data.mnist import load_mnist

        x, y = load_mnist(spec[len("mnist:"):], split, "[0,1]",  # type: ignore[arg-type]
                          dtype=torch.float64)
        side = int(round(math.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"{spec}: images must be square, got {x.shape[1]} pixels.")
        return ImageData(torch.round(x * 255).to(torch.uint8), y, 2 / 255, -1.0,
                         (1, side, side), 256)
    raise ValueError(f"`data` must be 'digits' or 'mnist:PATH', got {spec!r}.")


def build_model(cfg: ConditionalConfig, shape: tuple[int, int, int]) -> ConvVectorField:
    """The seeded, untrained network of ``cfg`` for images of ``shape``."""
    torch.manual_seed(cfg.seed)
    model = ConvVectorField(shape, n_classes=10, width=cfg.width, emb_dim=cfg.emb_dim)
    return model.to(getattr(torch, cfg.dtype))


def _matcher(cfg: ConditionalConfig) -> ConditionalFlowMatcher:
    return make_conditional_matcher(cfg.coupling, sigma=cfg.sigma,
                                    p_uncond=cfg.guidance_dropout if cfg.conditional else 1.0,
                                    null_class=10, penalty=cfg.label_penalty)


def _streams(seed: int) -> dict[str, torch.Generator]:
    return {name: torch.Generator().manual_seed(seed * 1000 + 11 + k)
            for k, name in enumerate(("data", "dequant", "source", "pair"))}


def _atomic_save(tensors: dict[str, Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save_weights(model: ConvVectorField, ema: ConvVectorField | None, out: Path) -> None:
    """Write ``model.safetensors`` (and ``ema.safetensors``) atomically."""
    _atomic_save(model.state_dict(), out / "model.safetensors")
    if ema is not None:
        _atomic_save(ema.state_dict(), out / "ema.safetensors")


def _write_config(out: Path, cfg: ConditionalConfig) -> None:
    tmp = out / f".config.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    os.replace(tmp, out / "config.json")


def train_conditional(
    cfg: ConditionalConfig, run_dir: str | os.PathLike[str], *, resume: bool = False,
    progress: bool | None = None, stop_after: int | None = None,
) -> tuple[ConvVectorField, dict[str, Any]]:
    """Train ``cfg`` into ``run_dir``.

    Args:
        cfg: Configuration (written to ``config.json`` when the file is absent).
        run_dir: Run directory (created).
        resume: Continue from ``run_dir/checkpoint``.
        progress: Progress bar on stderr (``None``: tqdm's default after 1 s).
        stop_after: Stop (after a checkpoint) once this many steps are done (tests).
    Returns:
        ``(network, state)``: the EMA network (the plain one when ``ema = 0``) in eval
        mode and the state (``step``, ``loss`` history, ``train_seconds``).
    Raises:
        ValueError: ``resume`` without a checkpoint; a non-finite loss.
    """
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").exists():
        _write_config(out, cfg)
    dtype = getattr(torch, cfg.dtype)
    data = load_image_data(cfg.data, "train")
    x_train, y_train = data.images(dtype), data.labels  # (n, d), (n,)
    model = build_model(cfg, data.shape)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
    matcher = _matcher(cfg)
    gens = _streams(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state: dict[str, Any] = {"step": 0, "loss": [], "train_seconds": 0.0}
    if resume:
        if not has_checkpoint(out):
            raise ValueError(f"--resume: no checkpoint in {out}; run without --resume first.")
        state = load_checkpoint(out, model=model, optimizer=opt, generators=gens, ema=ema)
    losses: list[float] = list(state["loss"])
    step, seconds0 = int(state["step"]), float(state["train_seconds"])
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    n, d, b = x_train.shape[0], x_train.shape[1], cfg.batch_size
    t_start = time.perf_counter()

    def checkpoint() -> dict[str, Any]:
        st = {"step": step, "loss": losses,
              "train_seconds": seconds0 + time.perf_counter() - t_start}
        save_checkpoint(out, model=model, optimizer=opt, generators=gens, state=st, ema=ema)
        return st

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.coupling}", unit="step",
               disable=progress is False, delay=1.0, leave=False, mininterval=0.5)
    try:
        while step < end:
            if cfg.lr_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * step / cfg.steps))
            idx = torch.randint(n, (b,), generator=gens["data"])
            x1 = x_train[idx]
            if cfg.dequantize:
                u = torch.rand(b, d, generator=gens["dequant"], dtype=dtype)
                x1 = x1 + data.step * (u - 0.5)
            x0 = torch.randn(b, d, generator=gens["source"], dtype=dtype)
            loss = matcher.loss(model, x0, x1, y_train[idx], generator=gens["pair"])
            if not torch.isfinite(loss):
                raise ValueError(f"the loss became {float(loss)} at step {step}; lower --lr.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                decay = min(cfg.ema, (1.0 + step) / (10.0 + step))
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                        pe.lerp_(p, 1.0 - decay)
            step += 1
            losses.append(float(loss.detach()))
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}", refresh=False)
            bar.update(1)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < end:
                checkpoint()
    finally:
        bar.close()
        torch.set_num_threads(threads)
    state = checkpoint()
    save_weights(model, ema, out)
    net = ema if ema is not None else model
    return net.eval(), state


def load_conditional_run(run_dir: str | os.PathLike[str]
                         ) -> tuple[ConvVectorField, ConditionalConfig, dict[str, Any]]:
    """Rebuild a trained image flow: ``(network (EMA if kept), config, state)``.

    Raises:
        ValueError: not a conditional image run. CheckpointError: missing/bad weights.
    """
    out = Path(run_dir)
    obj = read_run_config(out, "otgen train --data digits")
    if not isinstance(obj, dict) or obj.get("model") != "conv":
        raise ValueError(f"--run {out}: not an image-flow run (config.json has no "
                         "model='conv').")
    cfg = ConditionalConfig.from_json(obj)
    shape = (1, 8, 8) if cfg.data == "digits" else load_image_data(cfg.data, "test").shape
    model = build_model(cfg, shape)
    name = "ema" if cfg.ema > 0 else "model"
    load_weights(model, out / f"{name}.safetensors")
    state = read_state(out)
    return model.requires_grad_(False).eval(), cfg, state

