"""Diffusion (VP-SDE score model; PF-ODE and reverse-SDE samplers) vs OT-CFM on N(0, I) -> moons.

Both models are the main job's MLP (width 128, depth 3, EMA 0.999, batch 256, Adam 1e-3)
trained for the same number of steps with ``otgen.train``; each is then evaluated by
``otgen.train.evaluate`` (W2 of 2000 samples vs 2000 fresh data points, exact network
simplex; NFE of Dopri5 at atol = rtol = 1e-4; NLL through the (PF-)ODE). The diffusion
model is also sampled by the reverse SDE (Euler--Maruyama, several step counts, same noise
draws). ``w2_floor`` is W2 between two fresh data samples of the same size.

Run (CPU, a few minutes):

    python benchmarks/diffusion_vs_cfm.py --steps 4000 --seeds 0 1 --out runs/bench-diffusion
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from otgen.flows.diffusion import DiffusionMatcher, reverse_sde_sample
from otgen.metrics import w2
from otgen.train import TrainConfig, evaluate, train


def _one(method: str, steps: int, seed: int, out: Path, sde_steps: list[int]) -> dict:
    cfg = TrainConfig(method=method, steps=steps, seed=seed, ckpt_every=0)
    t0 = time.perf_counter()
    run, state = train(cfg, out / f"{method}-s{seed}", progress=False)
    row = {"method": method, "seed": seed, "steps": steps,
           "train_seconds": time.perf_counter() - t0}
    m = evaluate(run, out / f"{method}-s{seed}", state, figures=False)
    row |= {"w2_ode": m["w2"], "nfe_ode": m["nfe"], "nll": m["nll"]}
    if isinstance(run.matcher, DiffusionMatcher):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + 99)  # the evaluation's draws
        x0, fresh = run.source(cfg.n_eval, g), run.data(cfg.n_eval, g)
        score = run.matcher.score(run.network().eval())
        for k in sde_steps:
            with torch.no_grad():
                rev = reverse_sde_sample(score, x0, sde=run.matcher.sde, steps=k,
                                         generator=torch.Generator().manual_seed(seed))
            row[f"w2_sde_{k}"] = float(w2(rev.x, fresh))
    g = torch.Generator().manual_seed(12345 + seed)
    row["w2_floor"] = float(w2(run.data(cfg.n_eval, g), run.data(cfg.n_eval, g)))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sde-steps", type=int, nargs="+", default=[100, 500, 1000])
    p.add_argument("--out", default="runs/bench-diffusion")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for method in ("otcfm", "diffusion"):
            rows.append(_one(method, args.steps, seed, out, args.sde_steps))
            print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
