"""Tasks, training loops and evaluation of ``benchmarks/flow_matching.py`` (see its docstring
for the protocol): otgen's loop, a synchronous otgen loop, TorchCFM's README loop (all with
an optional weight average), the identical-initialisation and identical-batch checks, and
the W2 / NFE / NPE evaluation shared by every library."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from otgen.data.registry import get_sampler
from otgen.flows.matchers import make_matcher
from otgen.metrics import path_energy, w2
from otgen.models import MLPVectorField
from otgen.ode import integrate
from otgen.train import loop as otgen_loop
from otgen.train.config import TrainConfig

TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "moons": ("moons", {"noise": 0.05, "noise_kind": "gaussian", "scale": 2.0,
                        "shift": [-1.0, 0.0]}),
    "8gaussians": ("8gaussians", {"radius": 5.0, "std": 0.1**0.5}),
}
METHODS = ("otcfm", "cfm", "sbcfm")
LIBS = ("otgen", "torchcfm")
BATCH, LR, HIDDEN, DEPTH = 256, 1e-3, 64, 3
N_EVAL, TOL = 2000, 1e-4


# --------------------------------------------------------------------------- helpers


def _save(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _sigma(method: str, sb_sigma: float) -> float:
    return sb_sigma if method == "sbcfm" else 0.0


def _samplers(task: str):
    name, params = TASKS[task]
    return get_sampler("gaussian"), get_sampler(name, **params)


def _streams(seed: int) -> dict[str, torch.Generator]:
    """The generators of otgen's loop (so that the TorchCFM loop sees the same batches)."""
    return otgen_loop._streams(seed)


def _tcfm_matcher(method: str, sb_sigma: float, sb_ot: str):
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
        SchrodingerBridgeConditionalFlowMatcher,
    )

    if method == "otcfm":
        return ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    if method == "cfm":
        return ConditionalFlowMatcher(sigma=0.0)
    return SchrodingerBridgeConditionalFlowMatcher(sigma=sb_sigma, ot_method=sb_ot)


def _tcfm_model(seed: int) -> torch.nn.Module:
    from torchcfm.models.models import MLP

    torch.manual_seed(seed)
    return MLP(dim=2, time_varying=True, w=HIDDEN)


class _TcfmField(torch.nn.Module):
    """TorchCFM's model as a field v(t, x) (the ``torch_wrapper`` of its examples)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        return self.model(torch.cat([x, t], dim=-1))


def _config(task: str, method: str, steps: int, seed: int, sb_sigma: float,
            ema: float = 0.0) -> TrainConfig:
    name, params = TASKS[task]
    return TrainConfig(data=name, data_params=dict(params), method=method,
                       sigma=_sigma(method, sb_sigma), steps=steps, batch_size=BATCH, lr=LR,
                       hidden=HIDDEN, depth=DEPTH, activation="selu", seed=seed,
                       ckpt_every=0, ema=ema, lr_schedule="constant")


class _EMA:
    """The weight average of otgen's loop, for the loops written here: after step ``k``
    (0-based) ``avg <- d avg + (1 - d) w`` with ``d = min(decay, (1 + k) / (10 + k))``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        import copy

        self.decay, self.k = decay, 0
        self.avg = copy.deepcopy(model).requires_grad_(False) if decay > 0 else None
        self.model = model

    def update(self) -> None:
        if self.avg is None:
            return
        d = min(self.decay, (1.0 + self.k) / (10.0 + self.k))
        self.k += 1
        with torch.no_grad():
            for pa, p in zip(self.avg.parameters(), self.model.parameters(), strict=True):
                pa.lerp_(p, 1.0 - d)

    def network(self) -> torch.nn.Module:
        return self.avg if self.avg is not None else self.model


# --------------------------------------------------------------------------- training


#: process CPU seconds (all threads) of the last training call; for otgen's loop it
#: also covers model construction and the final checkpoint (a few ms)
LAST_CPU = [float("nan")]


def train_otgen(task: str, method: str, steps: int, seed: int, sb_sigma: float,
                ema: float = 0.0) -> tuple[torch.nn.Module, float, float]:
    """otgen's own loop; returns (field, seconds, last loss); the field is the EMA network
    when ``ema > 0``."""
    cfg = _config(task, method, steps, seed, sb_sigma, ema)
    with tempfile.TemporaryDirectory(prefix="fm-bench-") as d:
        c0 = time.process_time()
        run, state = otgen_loop.train(cfg, d, progress=False)
        LAST_CPU[0] = time.process_time() - c0
    losses = state.get("loss") or [float("nan")]
    return run.network(), float(state["train_seconds"]), float(losses[-1])


def train_otgen_emd(task: str, method: str, steps: int, seed: int, sb_sigma: float
                    ) -> tuple[torch.nn.Module, float, float]:
    """Diagnostic: otgen's loop with the assignment routed to the network simplex
    (``otgen.ot.exact.prefer_assignment`` patched to False for the run)."""
    import otgen.ot.exact as exact

    saved = exact.prefer_assignment
    exact.prefer_assignment = lambda n, d: False
    try:
        return train_otgen(task, method, steps, seed, sb_sigma)
    finally:
        exact.prefer_assignment = saved


def train_otgen_sync(task: str, method: str, steps: int, seed: int, sb_sigma: float,
                     ema: float = 0.0) -> tuple[torch.nn.Module, float, float]:
    """otgen's objective in a synchronous loop (no look-ahead thread), same batches."""
    source, data = _samplers(task)
    gens = _streams(seed)
    torch.manual_seed(seed)
    model = MLPVectorField(2, hidden=HIDDEN, depth=DEPTH, activation="selu")
    matcher = make_matcher(method, sigma=_sigma(method, sb_sigma))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    avg = _EMA(model, ema)
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        x0 = source(BATCH, gens["source"])
        x1 = data(BATCH, gens["data"])
        loss = matcher.loss(model, x0, x1, generator=gens["pair"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        avg.update()
    secs = time.perf_counter() - t0
    LAST_CPU[0] = time.process_time() - c0
    return avg.network(), secs, float(loss.detach())


def train_torchcfm(task: str, method: str, steps: int, seed: int, sb_sigma: float,
                   sb_ot: str, *, replace: bool = True, ema: float = 0.0
                   ) -> tuple[torch.nn.Module, float, float]:
    """TorchCFM README loop on otgen's batches; returns (field, seconds, last loss).

    ``replace=False`` (diagnostic ``torchcfm-perm``, OT-CFM only): TorchCFM's own code with
    ``ot_sampler.sample_plan(x0, x1, replace=False)``, which on an exact plan between equal
    uniform batches draws every non-zero entry once, i.e. a (shuffled) permutation like
    otgen's coupling, then its ``ConditionalFlowMatcher`` path."""
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    source, data = _samplers(task)
    gens = _streams(seed)
    model = _tcfm_model(seed)
    np.random.seed(seed)  # noqa: NPY002 (TorchCFM samples plans with NumPy's global RNG)
    fm = _tcfm_matcher(method, sb_sigma, sb_ot)
    if not replace and method != "otcfm":
        raise ValueError("`replace=False` is the OT-CFM diagnostic; use method 'otcfm'.")
    plain = ConditionalFlowMatcher(sigma=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    avg = _EMA(model, ema)
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        x0 = source(BATCH, gens["source"])
        x1 = data(BATCH, gens["data"])
        if replace:
            t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
        else:
            x0, x1 = fm.ot_sampler.sample_plan(x0, x1, replace=False)
            t, xt, ut = plain.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        opt.step()
        avg.update()
    secs = time.perf_counter() - t0
    LAST_CPU[0] = time.process_time() - c0
    return _TcfmField(avg.network()), secs, float(loss.detach())


def check_same_init(seed: int = 0) -> bool:
    torch.manual_seed(seed)
    a = MLPVectorField(2, hidden=HIDDEN, depth=DEPTH, activation="selu").net.state_dict()
    b = _tcfm_model(seed).net.state_dict()
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def check_same_batches(task: str, seed: int = 0, k: int = 3) -> bool:
    """The batches of otgen's loop (its sampler + streams) are those the TorchCFM loop sees."""
    cfg = _config(task, "cfm", 10, seed, 1.0)
    run = otgen_loop.build_run(cfg)
    g1, g2 = _streams(seed), _streams(seed)
    source, data = _samplers(task)
    return all(torch.equal(run.data(BATCH, g1["data"]), data(BATCH, g2["data"]))
               and torch.equal(run.source(BATCH, g1["source"]), source(BATCH, g2["source"]))
               for _ in range(k))


# --------------------------------------------------------------------------- evaluation


def _eval_generator(seed: int, k: int) -> torch.Generator:
    """Evaluation draw ``k`` of training seed ``seed``: seed ``1000 seed + 99 + k`` (``k = 0``
    is the single draw of earlier versions; ``k < 900`` never meets a training stream,
    whose seeds are ``1000 seed + 0..3``)."""
    return torch.Generator().manual_seed(1000 * seed + 99 + k)


def _w2_draw(field: torch.nn.Module, task: str, seed: int, k: int) -> float:
    """W2 of 2000 generated points (dopri5 1e-4 from fresh noise) to 2000 fresh data points,
    evaluation draw ``k``."""
    source, data = _samplers(task)
    g = _eval_generator(seed, k)
    x0 = source(N_EVAL, g)
    fresh = data(N_EVAL, g)
    with torch.no_grad():
        x1 = integrate(field, x0, method="dopri5", atol=TOL, rtol=TOL).x
    return float(w2(x1, fresh))


def data_floor(task: str, draws: int) -> list[float]:
    """W2 between two independent 2000-point samples of the data (what a perfect model
    scores): the bias and spread of the 2000-vs-2000 estimate."""
    _, data = _samplers(task)
    out = []
    for k in range(draws):
        g = torch.Generator().manual_seed(10**6 + k)
        out.append(float(w2(data(N_EVAL, g), data(N_EVAL, g))))
    return out


def evaluate(field: torch.nn.Module, task: str, seed: int, *, tdq: bool = True,
             draws: int = 1) -> dict[str, Any]:
    """Metrics of a trained field. ``w2`` is evaluation draw 0 (the single-draw figure);
    with ``draws > 1`` also ``w2_draws`` (draws 0..draws-1, each fresh noise and fresh
    data), their mean ``w2_mean`` and standard deviation ``w2_std``: the same draws for
    every library."""
    source, data = _samplers(task)
    g = _eval_generator(seed, 0)
    x0 = source(N_EVAL, g)
    fresh = data(N_EVAL, g)
    field = field.eval()
    with torch.no_grad():
        res = integrate(field, x0, method="dopri5", atol=TOL, rtol=TOL)
    stats = path_energy(field, x0, method="dopri5", atol=TOL, rtol=TOL)
    out: dict[str, Any] = {"w2": float(w2(res.x, fresh)), "nfe": int(res.nfe),
                           "npe": float(stats.npe), "energy": float(stats.energy),
                           "straightness": float(stats.straightness)}
    if tdq:
        from torchdiffeq import odeint

        count = [0]

        def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            count[0] += 1
            return field(t, x)

        with torch.no_grad():
            xt = odeint(f, x0, torch.tensor([0.0, 1.0]), method="dopri5", atol=TOL,
                        rtol=TOL)
        out["nfe_torchdiffeq"] = count[0]
        out["w2_torchdiffeq"] = float(w2(xt[-1], fresh))
    if draws > 1:
        ws = [out["w2"]] + [_w2_draw(field, task, seed, k) for k in range(1, draws)]
        out.update(w2_draws=ws, w2_mean=statistics.fmean(ws), w2_std=statistics.stdev(ws))
    return out
