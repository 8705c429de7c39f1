"""The flow-matching training loop: seeded streams, Adam (+EMA), progress bar, atomic
checkpoints and bit-for-bit resume on the CPU.

Random streams (each a ``torch.Generator`` seeded from ``config.seed``): ``data`` (target
batches), ``source`` (noise batches) and ``pair`` (coupling, times and path noise). Model
weights are initialised under ``torch.manual_seed(config.seed)``. A resumed run restores
the weights, the optimiser state and the three streams, so it continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from otgen.data.registry import get_sampler
from otgen.flows.couplings import EntropicOTCoupling, ExactOTCoupling, ReflowCoupling
from otgen.flows.diffusion import DiffusionMatcher
from otgen.flows.matchers import FlowMatcher, make_objective
from otgen.flows.paths import LinearPath
from otgen.models import MLPVectorField
from otgen.train.checkpoint import (
    CheckpointError,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from otgen.train.config import TrainConfig
from otgen.train.distributed import DistContext, context, rank_stream_seed

__all__ = ["Run", "build_run", "train", "save_weights"]


@dataclass
class Run:
    """Everything a run trains or evaluates: config, model (+EMA), objective, samplers.

    For ``method="diffusion"`` the network predicts the noise of the VP-SDE and
    :meth:`eval_model` wraps it as its probability-flow ODE field on [0, 1], so sampling,
    path energy and likelihood code treat it as any other flow."""

    config: TrainConfig
    model: MLPVectorField
    ema: MLPVectorField | None
    matcher: FlowMatcher | DiffusionMatcher
    data: Any
    source: Any
    dim: int
    dtype: torch.dtype

    def network(self) -> MLPVectorField:
        """The trained network used for evaluation: the EMA copy when enabled."""
        return self.ema if self.ema is not None else self.model

    def eval_model(self) -> torch.nn.Module:
        """The vector field ``v(t, x)`` to sample with: :meth:`network` itself for flow
        matching, its probability-flow ODE field for diffusion."""
        if isinstance(self.matcher, DiffusionMatcher):
            return self.matcher.flow(self.network())
        return self.network()


def build_run(cfg: TrainConfig) -> Run:
    """Instantiate model, objective and samplers from ``cfg`` (weights seeded)."""
    dtype = getattr(torch, cfg.dtype)
    device = torch.device(cfg.resolved_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {cfg.device!r}: CUDA is not available here; use 'auto' "
                         "or 'cpu'.")
    data = get_sampler(cfg.data, dtype=dtype, device=device, **cfg.data_params)
    source = get_sampler(cfg.source, dtype=dtype, device=device)
    probe = data(2, torch.Generator().manual_seed(0))
    dim = int(probe.shape[1])
    if source(2, torch.Generator().manual_seed(0)).shape[1] != dim:
        raise ValueError(f"`source` {cfg.source!r} and `data` {cfg.data!r} have different "
                         "dimensions; use 'gaussian:D' with the data's D.")
    torch.manual_seed(cfg.seed)
    model = MLPVectorField(dim, hidden=cfg.hidden, depth=cfg.depth, activation=cfg.activation,
                           time_embedding=cfg.time_embedding).to(device=device, dtype=dtype)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
    if cfg.method == "diffusion" and not cfg.source.startswith("gaussian"):
        raise ValueError(f"method 'diffusion' needs the standard Gaussian source (the VP-SDE's "
                         f"noise), got source {cfg.source!r}; use 'gaussian' or 'gaussian:D'.")
    matcher = make_objective(cfg.method, sigma=cfg.sigma, beta_min=cfg.beta_min,
                             beta_max=cfg.beta_max)
    return Run(cfg, model, ema, matcher, data, source, dim, dtype)


_STREAMS = ("data", "source", "pair", "coupling")


def _streams(seed: int, rank: int = 0) -> dict[str, torch.Generator]:
    """The run's random streams on ``rank``. Data, source and pair streams differ between
    ranks (no repeated samples); the coupling stream is shared so that every rank draws the
    same global coupling (rank 0 = the single-process streams)."""
    return {name: torch.Generator().manual_seed(
        rank_stream_seed(seed, k, 0 if name == "coupling" else rank))
        for k, name in enumerate(_STREAMS)}


def _pair_local(matcher: FlowMatcher | DiffusionMatcher, x0: torch.Tensor,
                x1: torch.Tensor, generator: torch.Generator,
                ctx: DistContext | None) -> Pairs:
    """Couple (possibly gathered) batches; with ``ctx``, keep this rank's slice."""
    pairs = matcher.pair(x0, x1, generator)
    if ctx is None:
        return pairs
    return ctx.local(pairs[0]), ctx.local(pairs[1]), ctx.local(pairs[2])


def _ahead_in_thread(matcher: FlowMatcher | DiffusionMatcher) -> bool:
    """Whether to compute the pairing in a worker thread while the model steps: only for
    exact minibatch OT, whose compiled solver releases the GIL for its whole run. Other
    pairings run inline (the result is the same, they draw from the same private
    generator): the independent one is an ``arange``, and Sinkhorn's or an ODE solver's
    many small torch calls hold the GIL between them, so a thread fights the training
    step for it. Measured on this project's 2-core CPU, 1 torch thread, moons, with the
    thread against without: I-CFM 0.75x, SB-CFM 0.77x, a reflow stage 0.78x the speed;
    OT-CFM 1.6x."""
    return isinstance(getattr(matcher, "coupling", None), ExactOTCoupling)


def _global_coupling(matcher: FlowMatcher | DiffusionMatcher) -> bool:
    """Whether the pairing depends on the whole batch (minibatch OT): then DDP ranks
    couple the all-gathered batch."""
    coupling = getattr(matcher, "coupling", None)
    return isinstance(coupling, ExactOTCoupling | EntropicOTCoupling)


def save_weights(run: Run, run_dir: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors`` (and ``ema.safetensors``) atomically."""
    out = Path(run_dir)
    for name, module in (("model", run.model), ("ema", run.ema)):
        if module is None:
            continue
        tmp = out / f".{name}.safetensors.tmp-{os.getpid()}"
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  str(tmp))
        os.replace(tmp, out / f"{name}.safetensors")


def train(
    cfg: TrainConfig, run_dir: str | os.PathLike[str], *, resume: bool = False,
    progress: bool | None = None, stop_after: int | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Train ``cfg`` into ``run_dir``; returns the run and its state.

    Args:
        cfg: Configuration.
        run_dir: Output directory (created).
        resume: Continue from ``run_dir/checkpoint`` (error if there is none).
        progress: Show the progress bar (``None``: when stderr is a terminal or always
            for runs over a second, via tqdm's delay).
        stop_after: Stop (after checkpointing) once this many steps are done in total;
            used to test kill-and-resume. ``None`` runs to ``cfg.total_steps``.
    Returns:
        ``(run, state)`` with ``state`` holding ``step``, ``loss`` (per-step history),
        ``train_seconds``.
    """
    ctx = context(cfg.resolved_device())  # torchrun job, or one process
    run = build_run(cfg)
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    gens = _streams(cfg.seed, ctx.rank)
    opt = torch.optim.Adam(run.model.parameters(), lr=cfg.lr)
    state: dict[str, Any] = {"step": 0, "loss": [], "train_seconds": 0.0}
    if resume:
        if not has_checkpoint(out):
            raise ValueError(f"--resume: no checkpoint in {out}; run without --resume first.")
        state = load_checkpoint(out, model=run.model, optimizer=opt,
                                generators={ctx.own_name(k): g for k, g in gens.items()},
                                ema=run.ema)
    model, ema = run.model, run.ema
    total = cfg.total_steps
    end = total if stop_after is None else min(total, stop_after)
    losses: list[float] = list(state["loss"])
    evals: list[list[float]] = list(state.get("evals", []))
    bar = tqdm(total=total, initial=state["step"], desc="train", unit="step",
               disable=progress is False or not ctx.is_main, delay=1.0, leave=False,
               mininterval=0.5)
    t_start = time.perf_counter()
    seconds0 = float(state["train_seconds"])
    step = int(state["step"])

    def stage(k: int) -> int:
        return min(k // cfg.steps, cfg.reflow)

    teacher = _load_teacher(run, out) if stage(step) > 0 else None

    def matcher_at(k: int) -> FlowMatcher | DiffusionMatcher:
        if stage(k) == 0:
            return run.matcher
        if teacher is None:
            raise RuntimeError("internal: reflow stage without a teacher")
        return FlowMatcher(LinearPath(0.0), ReflowCoupling(teacher, atol=1e-5, rtol=1e-5))

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        return run.source(cfg.batch_size, gens["source"]), run.data(cfg.batch_size,
                                                                    gens["data"])

    # Couplings of the next `prefetch` batches are computed in worker threads while the
    # model steps on the current one (the network simplex releases the GIL). Every random
    # draw happens on this thread in step order, and each queued batch carries the stream
    # states from just before its draw: a checkpoint after step k saves the states from
    # before batch k+1 was drawn, so a resumed run redraws exactly the same batches. At a
    # reflow boundary the queue waits for the stage's last step (the new teacher).
    queue: deque[tuple[int, dict[str, torch.Tensor], Future[Pairs]]] = deque()

    def refill(k_next: int) -> None:
        """Queue batches k_next, k_next + 1, ... of the stage now training."""
        while len(queue) < cfg.prefetch and k_next < end and stage(k_next) == stage(step):
            snap = {name: g.get_state() for name, g in gens.items()}
            x0, x1 = draw()
            matcher = matcher_at(k_next)
            share = ctx if ctx.active and _global_coupling(matcher) else None
            if share is not None:  # DDP: couple the global batch, train on this rank's part
                x0, x1 = share.gather(x0), share.gather(x1)
            # a private generator per batch, seeded here in step order (workers run in
            # parallel, so they must not share a stream)
            seed = int(torch.randint(0, 2**62, (1,), generator=gens["coupling"]))
            private = torch.Generator().manual_seed(seed)
            if _ahead_in_thread(matcher):
                fut = pool.submit(_pair_local, matcher, x0, x1, private, share)
            else:
                fut = Future()
                fut.set_result(_pair_local(matcher, x0, x1, private, share))
            queue.append((k_next, snap, fut))
            k_next += 1

    pool = ThreadPoolExecutor(max_workers=cfg.prefetch)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        refill(step)
        while step < end and queue:
            k, _, fut = queue.popleft()
            pairs = fut.result()
            refill(k + 1 + len(queue))
            if cfg.lr_schedule == "cosine":
                frac = (step % cfg.steps) / cfg.steps  # restarts at each reflow stage
                for group in opt.param_groups:
                    group["lr"] = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * frac))
            loss = matcher_at(step).loss(model, pairs[0], pairs[1], generator=gens["pair"],
                                         pairs=pairs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = ctx.average_grads(model.parameters(), loss)  # DDP: mean over ranks
            opt.step()
            if ema is not None:  # decay warmed up as min(ema, (1 + k) / (10 + k))
                decay = min(cfg.ema, (1.0 + step) / (10.0 + step))
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                        pe.lerp_(p, 1.0 - decay)
            step += 1
            losses.append(loss_value)
            if not queue and step < end:  # reflow boundary: freeze the teacher, go on
                teacher = _save_teacher(run, out, write=ctx.is_main)
                refill(step)
            if cfg.eval_every and step % cfg.eval_every == 0 and ctx.is_main:
                evals.append([step, _quick_w2(run)])
                bar.set_postfix(w2=f"{evals[-1][1]:.3f}", refresh=False)
            elif step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}", refresh=False)
            bar.update(1)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < end:
                _checkpoint(out, run, opt, gens, _states_before(queue, gens), losses, evals,
                            seconds0 + time.perf_counter() - t_start, step, ctx)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
    snapshot = _states_before(queue, gens)
    state = _checkpoint(out, run, opt, gens, snapshot, losses, evals,
                        seconds0 + time.perf_counter() - t_start, step, ctx)
    if ctx.is_main:
        save_weights(run, out)
    ctx.barrier()  # the files are complete before any rank goes on
    return run, state


Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _states_before(queue: deque[tuple[int, dict[str, torch.Tensor], Any]],
                   gens: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """Stream states before the first batch still queued (or the current ones)."""
    if queue:
        return queue[0][1]
    return {k: g.get_state() for k, g in gens.items()}


def _checkpoint(out: Path, run: Run, opt: torch.optim.Optimizer,
                gens: dict[str, torch.Generator], snapshot: dict[str, torch.Tensor],
                losses: list[float], evals: list[list[float]], seconds: float, step: int,
                ctx: DistContext | None = None) -> dict[str, Any]:
    """Save with the data/source/coupling streams as they were before the look-ahead draw
    and the pair stream (times, path noise) as it is now. Under DDP every rank calls this
    (its streams are gathered) and rank 0 writes."""
    ctx = ctx if ctx is not None else DistContext()
    states = {k: gens[k].get_state() if k == "pair" else snapshot[k] for k in gens}
    states = ctx.gather_states(states)
    state = {"step": step, "loss": losses, "evals": evals, "train_seconds": seconds}
    if ctx.is_main:
        saved = {k: torch.Generator() for k in states}
        for k, g in saved.items():
            g.set_state(states[k])
        save_checkpoint(out, model=run.model, optimizer=opt, generators=saved, state=state,
                        ema=run.ema)
    return state


def _save_teacher(run: Run, out: Path, *, write: bool = True) -> MLPVectorField:
    """Freeze the current weights as the reflow teacher (also written to
    ``teacher.safetensors`` so that a resumed run uses the same one; under DDP by rank 0)."""
    teacher = copy.deepcopy(run.network()).requires_grad_(False).eval()
    if not write:
        return teacher
    tmp = out / f".teacher.safetensors.tmp-{os.getpid()}"
    save_file({k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()},
              str(tmp))
    os.replace(tmp, out / "teacher.safetensors")
    return teacher


def _load_teacher(run: Run, out: Path) -> MLPVectorField:
    path = out / "teacher.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path} is missing: cannot resume a reflow stage without "
                              "its teacher.")
    teacher = copy.deepcopy(run.model).requires_grad_(False).eval()
    teacher.load_state_dict(load_file(str(path)))
    return teacher


def _quick_w2(run: Run, n: int = 500) -> float:
    """W2 of ``n`` samples (20 RK4 steps) to ``n`` fresh data points, own seeded stream."""
    from otgen.metrics import w2
    from otgen.ode import integrate

    g = torch.Generator().manual_seed(run.config.seed * 1000 + 77)
    x0, data = run.source(n, g), run.data(n, g)
    with torch.no_grad():
        x1 = integrate(run.eval_model(), x0, method="rk4", steps=20).x
    if isinstance(x1, tuple):
        raise TypeError("internal: sampling state must be a tensor")
    return float(w2(x1, data))
