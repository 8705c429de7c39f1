"""Latent geodesics: otgen vs stochman's ``geodesic_minimizing_energy`` on one VAE decoder.

Same decoder (a trained ``otgen train --model vae`` run, float64, expected metric: the
embedding ``z -> [mu(z); sigma(z)]``), same end points (the pairs ``otgen geodesic``
picks), same curve family (cubic spline with K segments, fixed ends). Every resulting
curve is measured the same way: the length of the decoded polyline through 1025 points
(``otgen.geometry.polyline_length``), so the lengths are comparable whatever each
library's own discretisation.

Usage:
    python benchmarks/geodesics.py --run runs/vae-digits-... [--pairs 6] [--segments 8]

Needs the ``bench`` extra (``pip install -e '.[bench]'`` for stochman).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from otgen.cli.geodesic_cmd import _pairs
from otgen.data.digits import load_digits
from otgen.geometry import EnergyMinimizer, ExpectedMetric, Shooting, polyline_length
from otgen.train.vae import load_vae_run


def _stochman_manifold(model):
    from stochman.manifold import EmbeddedManifold

    class VAEManifold(EmbeddedManifold):
        def embed(self, points, jacobian=False):
            shape = points.shape[:-1]
            p = points.reshape(-1, points.shape[-1])
            out = torch.cat([model.mean(p), model.std(p)], dim=-1)
            if jacobian:
                raise NotImplementedError("not needed for energy minimisation")
            return out.reshape(*shape, -1)

    return VAEManifold()


def _dense_length(metric, points):
    return polyline_length(metric, points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from stochman.curves import CubicSpline as SCubic
    from stochman.geodesic import geodesic_minimizing_energy

    model, cfg = load_vae_run(args.run)
    model = model.double().requires_grad_(False)
    metric = ExpectedMetric(model.mean, model.std)
    x, y = load_digits("test", cfg.scale, dtype=torch.float64)  # type: ignore[arg-type]
    with torch.no_grad():
        codes = model.encode(x)[0]
    pairs = _pairs(y, args.pairs, args.seed)
    z0 = codes[torch.tensor([p[0] for p in pairs])]
    z1 = codes[torch.tensor([p[1] for p in pairs])]
    dense = torch.linspace(0, 1, 1025, dtype=torch.float64)
    rows = []

    def record(name, seconds, points, extra=""):
        with torch.no_grad():
            length = _dense_length(metric, points)
        rows.append({"solver": name, "seconds": seconds, "length_mean": float(length.mean()),
                     "lengths": [round(float(v), 5) for v in length], "note": extra})

    # straight line (reference)
    line = z0[:, None] + dense[None, :, None] * (z1 - z0)[:, None]
    record("straight line", 0.0, line)

    # otgen: L-BFGS on the spline, then shooting the geodesic ODE from it
    t0 = time.perf_counter()
    res = EnergyMinimizer(n_segments=args.segments, n_eval=64, max_iter=500)(metric, z0, z1)
    t_energy = time.perf_counter() - t0
    with torch.no_grad():
        record("otgen EnergyMinimizer (L-BFGS, 64-interval energy)", t_energy,
               res.curve(dense), f"converged={res.converged}, iters={res.n_iter}")
    t0 = time.perf_counter()
    shot = Shooting(steps=20, max_iter=10, max_halvings=5)(metric, z0, z1,
                                                           v0=res.velocity0)
    t_shoot = time.perf_counter() - t0
    rows.append({"solver": "otgen Shooting (RK4 20 steps, Newton, from the energy solution)",
                 "seconds": t_shoot, "length_mean": float(shot.length.mean()),
                 "lengths": [round(float(v), 5) for v in shot.length],
                 "note": f"converged={shot.converged}, Newton iters={shot.n_iter}, "
                         f"max end miss={float(shot.endpoint_error.max()):.1e}, "
                         "length by Simpson on the ODE grid"})
    # otgen with Adam, stochman's optimiser settings, for a like-for-like optimiser
    t0 = time.perf_counter()
    res_a = EnergyMinimizer(n_segments=args.segments, n_eval=19, optimizer="adam", lr=0.1,
                            max_iter=150)(metric, z0, z1)
    with torch.no_grad():
        record("otgen EnergyMinimizer (Adam lr 0.1, 150 it, 20-point energy)",
               time.perf_counter() - t0, res_a.curve(dense))

    manifold = _stochman_manifold(model)
    for max_iter, grid in ((150, 20), (1000, 65)):
        curve = SCubic(z0.clone(), z1.clone(), num_nodes=args.segments + 1)
        t0 = time.perf_counter()
        ok = geodesic_minimizing_energy(curve, manifold, max_iter=max_iter, eval_grid=grid)
        secs = time.perf_counter() - t0
        with torch.no_grad():
            pts = curve(dense)
            pts = pts if pts.ndim == 3 else pts[None]
        record(f"stochman geodesic_minimizing_energy (Adam lr 0.1, {max_iter} it, "
               f"eval_grid {grid})", secs, pts, f"converged={bool(ok)}")

    print(json.dumps({"run": args.run, "pairs": [f"{a}->{b}" for a, b in pairs],
                      "torch_threads": args.threads, "rows": rows}, indent=1))
    print("\n| solver | seconds | mean length (dense decoded polyline) | note |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['solver']} | {r['seconds']:.2f} | {r['length_mean']:.4f} | {r['note']} |")


if __name__ == "__main__":
    main()
