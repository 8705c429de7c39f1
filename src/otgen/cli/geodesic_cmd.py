"""``otgen geodesic``: geodesics in the latent space of a trained VAE under its expected
metric :math:`J_\\mu^\\top J_\\mu + J_\\sigma^\\top J_\\sigma`.

Picks ``--pairs`` pairs of encoded test digits of different classes (seeded), computes
their geodesics by energy minimisation (cubic splines, L-BFGS) and refines them by shooting
the geodesic ODE (Newton on the initial velocity, started from the energy solution), and
compares with straight latent lines. Writes to ``--out`` (default ``<run>/geodesic``):
``latent.png`` (codes coloured by label over the log magnification factor, geodesics
solid, straight lines dashed), ``decoded_paths.png`` (decoded means along both paths),
``metrics.json`` (lengths under the expected metric, their ratio, solver times) and
``config.json``. One JSON line with the metrics goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from otgen.cli._common import (
    CLIError,
    jsonable,
    new_run_dir,
    positive_int,
    save_figure,
    write_json,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``otgen geodesic``."""
    p = subparsers.add_parser(
        "geodesic", help="latent geodesics of a trained VAE under its expected metric",
        description="Geodesics between encoded digits by energy minimisation and by "
                    "shooting the geodesic ODE; lengths vs straight latent lines.")
    p.add_argument("--run", required=True, help="run directory of 'otgen train --model vae'")
    p.add_argument("--pairs", type=positive_int, default=6, help="number of digit pairs")
    p.add_argument("--out", default=None, help="output directory (default <run>/geodesic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair choice")
    p.add_argument("--segments", type=positive_int, default=8,
                   help="cubic spline segments of the energy minimiser")
    p.add_argument("--ode-steps", type=positive_int, default=20,
                   help="RK4 steps of the geodesic ODE when shooting")
    p.add_argument("--no-shooting", action="store_true",
                   help="skip the ODE boundary-value refinement")
    p.add_argument("--grid", type=positive_int, default=60,
                   help="heat-map resolution per axis")
    p.set_defaults(func=run)
    return p


def _pairs(labels: Any, k: int, seed: int) -> list[tuple[int, int]]:
    """``k`` distinct index pairs ``(i, j)`` with different labels, seeded."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = int(labels.shape[0])
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(out) < k:
        i, j = (int(v) for v in torch.randint(n, (2,), generator=g))
        if labels[i] == labels[j] or (i, j) in seen:
            continue
        seen.add((i, j))
        out.append((i, j))
    return out


def run(args: argparse.Namespace) -> int:
    """Execute ``otgen geodesic``."""
    import torch

    from otgen.data.digits import load_digits, to_images
    from otgen.geometry import (
        CubicSpline,
        EnergyMinimizer,
        ExpectedMetric,
        Shooting,
        curve_length,
    )
    from otgen.train.vae import load_vae_run
    from otgen.viz.geometry import plot_decoded_paths, plot_latent_geometry

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise CLIError(f"--run {run_dir}: not a directory; pass a directory written by "
                       "'otgen train --model vae'.")
    model, cfg = load_vae_run(run_dir)
    if cfg.latent_dim != 2:
        raise CLIError(f"--run {run_dir}: latent dimension is {cfg.latent_dim}; the "
                       "figures need a 2-D latent (train with --latent-dim 2).")
    out = new_run_dir(args.out if args.out is not None else run_dir / "geodesic", "geodesic")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and the CPU is shared
    try:
        model = model.double().requires_grad_(False)
        metric = ExpectedMetric(model.mean, model.std)
        x, y = load_digits("test", cfg.scale, dtype=torch.float64)  # type: ignore[arg-type]
        with torch.no_grad():
            codes = model.encode(x)[0]
        pairs = _pairs(y, args.pairs, args.seed)
        i0 = torch.tensor([p[0] for p in pairs])
        i1 = torch.tensor([p[1] for p in pairs])
        z0, z1 = codes[i0], codes[i1]

        t0 = time.perf_counter()
        energy = EnergyMinimizer(n_segments=args.segments, n_eval=64, max_iter=500)(
            metric, z0, z1)
        energy_seconds = time.perf_counter() - t0
        line = CubicSpline(z0, z1, args.segments).requires_grad_(False)
        nq = args.segments * max(1, -(-64 // args.segments))
        with torch.no_grad():
            straight_len = curve_length(metric, line, n=nq)
        metrics: dict[str, Any] = {
            "pairs": len(pairs),
            "geodesic_length_mean": float(energy.length.mean()),
            "straight_length_mean": float(straight_len.mean()),
            "length_ratio_mean": float((energy.length / straight_len).mean()),
            "length_ratio_min": float((energy.length / straight_len).min()),
            "energy_seconds": energy_seconds,
            "energy_converged": bool(energy.converged),
            "energy_iterations": energy.n_iter,
        }
        if not args.no_shooting:
            t0 = time.perf_counter()
            shot = Shooting(steps=args.ode_steps, max_iter=10, max_halvings=5)(
                metric, z0, z1, v0=energy.velocity0)
            metrics.update({
                "shooting_seconds": time.perf_counter() - t0,
                "shooting_converged": bool(shot.converged),
                "shooting_iterations": shot.n_iter,
                "shooting_nfe": shot.nfe,
                "shooting_length_mean": float(shot.length.mean()),
                "shooting_endpoint_error_max": float(shot.endpoint_error.max()),
                "shooting_vs_energy_length_rel_diff_max": float(
                    ((shot.length - energy.length) / energy.length).abs().max()),
            })
        for k, (a, b) in enumerate(pairs):
            metrics[f"pair_{k}"] = f"test[{a}] ({int(y[a])}) -> test[{b}] ({int(y[b])})"
            metrics[f"geodesic_length_{k}"] = float(energy.length[k])
            metrics[f"straight_length_{k}"] = float(straight_len[k])
            if not args.no_shooting:
                metrics[f"shooting_length_{k}"] = float(shot.length[k])

        # figures
        lo = torch.minimum(codes.min(0).values, torch.minimum(z0, z1).min(0).values)
        hi = torch.maximum(codes.max(0).values, torch.maximum(z0, z1).max(0).values)
        pad = 0.15 * (hi - lo)
        xs = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), args.grid,
                            dtype=torch.float64)
        ys = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), args.grid,
                            dtype=torch.float64)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        with torch.no_grad():
            logmag = torch.cat([metric.log_magnification(c) for c in grid.split(1200)])
        straight_pts = line(65).detach()
        fig = plot_latent_geometry(xs, ys, logmag.reshape(args.grid, args.grid), codes, y,
                                   energy.points, straight_pts)
        save_figure(out / "latent.png", fig)
        t = torch.linspace(0, 1, 10, dtype=torch.float64)
        with torch.no_grad():
            geo_img = model.mean(energy.curve(t).reshape(-1, 2)) if energy.curve else None
            st_img = model.mean(line(t).reshape(-1, 2))
        if geo_img is None:
            raise RuntimeError("internal: energy minimiser returned no curve")
        shown = min(len(pairs), 6)
        fig = plot_decoded_paths(
            to_images(geo_img).reshape(len(pairs), 10, 8, 8)[:shown],
            to_images(st_img).reshape(len(pairs), 10, 8, 8)[:shown],
            titles=[f"{int(y[a])}->{int(y[b])}" for a, b in pairs[:shown]])
        save_figure(out / "decoded_paths.png", fig)
    finally:
        torch.set_num_threads(threads)
    write_json(out / "config.json", {"run": str(run_dir), "pairs": args.pairs,
                                     "seed": args.seed, "segments": args.segments,
                                     "ode_steps": args.ode_steps,
                                     "shooting": not args.no_shooting, "grid": args.grid})
    write_json(out / "metrics.json", metrics)
    print(json.dumps(jsonable({**metrics, "out": str(out)})))
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0
