"""Evaluation of a trained flow: samples, metrics.json and figures in the run directory.

Metrics (all computed on fresh samples from a dedicated seeded stream):

* ``w2``: exact :math:`W_2` between ``n_eval`` generated samples and ``n_eval`` fresh data;
* ``nfe``: field evaluations of the sampling solve (dopri5 at the config's tolerances);
* ``path_energy``: :math:`\\mathbb E\\int_0^1 |v|^2 dt`; ``npe``: normalised path energy;
  ``straightness``; ``w2sq_flow``: :math:`W_2^2` between the flow's start and end points;
* ``nll``: mean negative log-likelihood (nats) of ``n_nll`` fresh data points, exact
  divergence; ``bpd``: the same in bits per dimension;
* ``sliced_w2``, ``mmd``; ``train_seconds`` and ``steps`` from training.

For ``method="diffusion"`` the flow is the probability-flow ODE of the score model (see
:meth:`otgen.train.loop.Run.eval_model`), so ``w2``, ``nfe``, ``nll`` and the path metrics
above are those of the PF-ODE sampler; in addition ``w2_sde`` / ``nfe_sde`` are the W2 and
score evaluations of the reverse-SDE sampler (``sde_steps`` Euler--Maruyama steps, same
noise draws ``x0``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from otgen.flows.diffusion import DiffusionMatcher, reverse_sde_sample
from otgen.flows.likelihood import log_likelihood
from otgen.metrics import mmd, path_energy, sliced_w2, w2
from otgen.ode import integrate
from otgen.train.loop import Run

__all__ = ["evaluate", "write_json_atomic"]


def write_json_atomic(path: str | os.PathLike[str], obj: dict[str, Any]) -> None:
    """Write flat JSON to ``path`` through a temporary file and ``os.replace``."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in obj.items()}
    tmp.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)


def _single(state: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    if isinstance(state, tuple):
        raise TypeError("internal: expected a single-tensor ODE state")
    return state


def _solver_kwargs(run: Run) -> dict[str, Any]:
    cfg = run.config
    if cfg.solver == "dopri5":
        return {"method": "dopri5", "atol": cfg.atol, "rtol": cfg.rtol}
    return {"method": cfg.solver, "steps": cfg.solver_steps}


def evaluate(run: Run, run_dir: str | os.PathLike[str], state: dict[str, Any], *,
             figures: bool = True) -> dict[str, Any]:
    """Compute the metrics of ``run`` and write ``metrics.json`` (+ PNGs) to ``run_dir``."""
    cfg, out = run.config, Path(run_dir)
    model = run.eval_model().eval()
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 99)
    x0 = run.source(cfg.n_eval, g)
    fresh = run.data(cfg.n_eval, g)
    kw = _solver_kwargs(run)
    ts = torch.linspace(0.0, 1.0, 41, dtype=run.dtype)
    with torch.no_grad():
        sample = integrate(model, x0, **kw)  # NFE of plain sampling (no output times)
        paths = integrate(model, x0[:300], t_eval=ts, **kw) if figures else None
    gen = _single(sample.x)
    xs = paths.xs if paths is not None else None
    stats = path_energy(model, x0, **kw)
    nll_x = run.data(cfg.n_nll, g)
    like = log_likelihood(model, nll_x, divergence="exact",
                          method=kw["method"], steps=kw.get("steps"),
                          atol=kw.get("atol", 1e-5), rtol=kw.get("rtol", 1e-5))
    nll = float(-like.logp.detach().double().mean())
    metrics: dict[str, Any] = {
        "w2": float(w2(gen, fresh)),
        "nfe": int(sample.nfe),
        "path_energy": stats.energy,
        "npe": stats.npe,
        "straightness": stats.straightness,
        "w2sq_flow": stats.w2sq,
        "nll": nll,
        "bpd": nll / (run.dim * math.log(2.0)),
        "sliced_w2": float(sliced_w2(gen, fresh, generator=torch.Generator().manual_seed(0))),
        "mmd": float(mmd(gen, fresh)),
        "train_seconds": float(state.get("train_seconds", float("nan"))),
        "steps": int(state.get("step", 0)),
        "method": cfg.method,
        "solver": cfg.solver,
        "n_eval": cfg.n_eval,
    }
    if isinstance(run.matcher, DiffusionMatcher):
        with torch.no_grad():
            rev = reverse_sde_sample(run.matcher.score(run.network().eval()), x0,
                                     sde=run.matcher.sde, steps=cfg.sde_steps,
                                     t_eps=run.matcher.t_eps,
                                     generator=torch.Generator().manual_seed(cfg.seed * 1000 + 98))
        metrics["w2_sde"] = float(w2(rev.x, fresh))
        metrics["nfe_sde"] = int(rev.nfe)
    write_json_atomic(out / "metrics.json", metrics)
    if figures and run.dim == 2:
        from otgen.viz import plot_loss, plot_samples, plot_trajectories

        plot_samples(gen, fresh, title=f"{cfg.method}: W2 = {metrics['w2']:.3f}").savefig(
            out / "samples.png")
        if xs is not None:
            plot_trajectories(_single(xs)).savefig(out / "trajectories.png")
        plot_loss(list(state.get("loss", []))).savefig(out / "loss.png")
    elif figures:
        from otgen.viz import plot_loss

        plot_loss(list(state.get("loss", []))).savefig(out / "loss.png")
    return metrics
