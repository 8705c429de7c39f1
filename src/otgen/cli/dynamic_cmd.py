r"""``otgen dynamic``: dynamic optimal transport between two data specs.

``--source`` and ``--target`` are data specs (a toy name, ``gaussian[:D]``, or a ``.npy`` /
``.csv`` cloud; see :func:`otgen.data.get_sampler`). ``--method`` picks

* ``action``: least action with particles (:class:`otgen.ot.dynamic.LeastAction`);
* ``grid``: Benamou--Brenier on a grid by proximal splitting (1-D / 2-D; the densities are
  histograms of samples on a common box, :class:`otgen.ot.bb_grid.BenamouBrenier`);
* ``mccann``: displacement interpolation of the exact coupling of two samples.

The run directory gets ``config.json``, ``metrics.json`` (``action``, ``w2_squared``
= 2 x action, ``w2_squared_static`` from exact static OT, ``hj_residual``, ``curl``, ...),
``paths.png`` (trajectories or density frames), ``velocity.png`` (quivers at several t),
``interpolation.gif`` and, for ``action``, ``field.safetensors``. One JSON line with the
metrics is printed to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from otgen.cli._common import (
    CLIError,
    atomic_write,
    jsonable,
    new_run_dir,
    positive_float,
    positive_int,
    save_figure,
    write_json,
)

__all__ = ["add_parser", "run"]

NAME = "dynamic"
_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``otgen dynamic`` and its flags on ``subparsers``."""
    p = subparsers.add_parser(
        NAME, help="dynamic OT: least action, Benamou-Brenier grid, McCann interpolation",
        description="Dynamic optimal transport between --source and --target; writes "
        "metrics.json, paths.png, velocity.png and interpolation.gif to a run directory.")
    p.add_argument("--source", default="gaussian", help="source spec (default gaussian)")
    p.add_argument("--target", default="8gaussians", help="target spec (default 8gaussians)")
    p.add_argument("--method", choices=("action", "grid", "mccann"), default="action",
                   help="least action (default), grid Benamou-Brenier, or McCann")
    p.add_argument("--n", type=positive_int, default=256,
                   help="particles / sample size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="run directory (default runs/dynamic-<time>)")
    g = p.add_argument_group("least action")
    g.add_argument("--parametrisation", choices=("free", "gradient"), default="free",
                   help="velocity u(x, t) or gradient of a potential (default free)")
    g.add_argument("--divergence", choices=("sinkhorn", "exact"), default="exact",
                   help="terminal mismatch (default exact W2^2)")
    g.add_argument("--iterations", type=positive_int, default=None,
                   help="training / splitting iterations (default: the solver's)")
    g.add_argument("--penalty", type=positive_float, default=None, help="terminal weight")
    g.add_argument("--steps", type=positive_int, default=None, help="time steps of the paths")
    h = p.add_argument_group("grid")
    h.add_argument("--grid", type=positive_int, default=None,
                   help="cells per axis (default 32 in 2-D, 128 in 1-D)")
    h.add_argument("--time-steps", type=positive_int, default=None,
                   help="time cells (default grid / 2)")
    h.add_argument("--samples", type=positive_int, default=20000,
                   help="samples per density histogram (default 20000)")
    p.add_argument("--frames", type=positive_int, default=21,
                   help="frames of interpolation.gif (default 21)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``otgen dynamic``; returns the exit code."""
    import torch

    from otgen.data import get_sampler

    try:
        src = get_sampler(args.source, dtype=torch.float64)
        tgt = get_sampler(args.target, dtype=torch.float64)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--source/--target: {e}") from None
    gen = torch.Generator().manual_seed(args.seed)
    d0, d1 = src(2, torch.Generator()).shape[1], tgt(2, torch.Generator()).shape[1]
    if d0 != d1:
        raise CLIError(f"--source has dimension {d0} but --target has {d1}; both must live "
                       "in the same space")
    if args.method == "grid" and d0 > 2:
        raise CLIError(f"--method grid works in 1-D or 2-D, got dimension {d0}; use "
                       "--method action or mccann")
    out = new_run_dir(args.out, NAME)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = {"action": _run_action, "grid": _run_grid, "mccann": _run_mccann}
        metrics = runner[args.method](args, src, tgt, gen, out)
    metrics.update(method=args.method, source=args.source, target=args.target, dim=d0,
                   seconds=time.perf_counter() - t0)
    for w in caught:
        print(f"otgen: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(command=NAME, out=str(out))
    write_json(out / "config.json", config)
    write_json(out / "metrics.json", metrics)
    print(json.dumps(jsonable(metrics), allow_nan=False), flush=True)
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- methods


def _static_w2(x: Any, y: Any, a: Any = None, b: Any = None) -> float:
    from otgen.ot import solve

    return float(solve(x, y, a, b, method="exact").cost)


def _run_action(args: argparse.Namespace, src: Any, tgt: Any, gen: Any, out: Path
                ) -> dict[str, Any]:
    import torch
    from safetensors.torch import save

    from otgen.ot.dynamic import DynamicProblem, LeastAction
    from otgen.viz.dynamic import animate_points, plot_paths, plot_quivers

    opts: dict[str, Any] = dict(parametrisation=args.parametrisation,
                                divergence=args.divergence, n_particles=args.n,
                                progress=sys.stderr.isatty())
    for key in ("iterations", "penalty", "steps"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    solver = LeastAction(**opts)
    res = solver(DynamicProblem(src, tgt), generator=gen)
    y = tgt(args.n, gen)
    _, _, xs = res.transport(res.x0, steps=max(args.frames - 1, 1), record=True)
    if xs is None:  # pragma: no cover - record=True always returns the path
        raise RuntimeError("no path recorded")
    tensors = {k: v.detach().cpu().contiguous() for k, v in res.field.state_dict().items()}
    atomic_write(out / "field.safetensors", lambda fh: fh.write(save(tensors)))
    save_figure(out / "paths.png", plot_paths(res.paths, res.ts, target=y,
                                              title="least-action paths"))
    frames = []
    lo = torch.minimum(res.paths.amin((0, 1)), y.amin(0))
    hi = torch.maximum(res.paths.amax((0, 1)), y.amax(0))
    pts = _grid_points(lo, hi, 15)
    for t in _TIMES:
        with torch.enable_grad():
            v = res.field(torch.tensor(t, dtype=pts.dtype), pts).detach()
        frames.append((t, pts, v))
    save_figure(out / "velocity.png", plot_quivers(frames, title="learned velocity u(x, t)"))
    ts = torch.linspace(0.0, 1.0, xs.shape[0], dtype=xs.dtype)
    _save_gif(out / "interpolation.gif", *animate_points(xs, ts, target=y))
    return {
        "action": float(res.action), "w2_squared": 2.0 * float(res.action),
        "w2_squared_static": _static_w2(res.x0, y), "mismatch": float(res.mismatch),
        "hj_residual": res.hj_residual, "curl": res.curl, "curl_rel": res.curl_rel,
        "straightness": res.straightness, "converged": res.converged, "n_iter": res.n_iter,
        "parametrisation": args.parametrisation, "divergence": args.divergence,
    }


def _grid_points(lo: Any, hi: Any, k: int) -> Any:
    """``k`` points per axis over the box ``[lo, hi]`` (1-D or 2-D), shape ``(k^d, d)``."""
    import torch

    axes = [torch.linspace(float(a), float(b), k, dtype=torch.float64) for a, b in
            zip(lo.tolist(), hi.tolist(), strict=True)][:2]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], 1)


def _run_grid(args: argparse.Namespace, src: Any, tgt: Any, gen: Any, out: Path
              ) -> dict[str, Any]:
    import torch

    from otgen.ot.bb_grid import BenamouBrenier, GridProblem
    from otgen.viz.dynamic import animate_densities, plot_density_frames, plot_quivers

    xs, ys = src(args.samples, gen), tgt(args.samples, gen)
    d = xs.shape[1]
    N = args.grid or (128 if d == 1 else 32)
    both = torch.cat([xs, ys])
    lo, hi = both.amin(0), both.amax(0)
    pad = 0.1 * (hi - lo).clamp_min(1e-6)
    lo, hi = lo - pad, hi + pad
    edges = [torch.linspace(float(a), float(b), N + 1, dtype=torch.float64)
             for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
    h0 = torch.histogramdd(xs, bins=edges).hist
    h1 = torch.histogramdd(ys, bins=edges).hist
    opts: dict[str, Any] = dict(time_steps=args.time_steps or max(8, N // 2),
                                progress=sys.stderr.isatty())
    if args.iterations is not None:
        opts["iterations"] = args.iterations
    prob = GridProblem(h0, h1, extent=tuple((hi - lo).tolist()), origin=tuple(lo.tolist()))
    res = BenamouBrenier(**opts)(prob)
    cells = torch.stack([m.reshape(-1) for m in torch.meshgrid(*res.coords, indexing="ij")],
                        1)  # (N^d, d)
    vol = float(torch.prod(hi - lo)) / N**d
    w2_static = _static_w2(cells, cells, (prob.rho0 * vol).reshape(-1),
                           (prob.rho1 * vol).reshape(-1))
    save_figure(out / "paths.png", plot_density_frames(res.rho, res.ts, res.coords,
                                                       title="Benamou-Brenier density path"))
    vel = res.velocity()
    P = vel.shape[0]
    frames = []
    stride = max(1, N // 16)
    sub = tuple(slice(None, None, stride) for _ in range(d))
    pts = torch.stack([m[sub].reshape(-1) for m in torch.meshgrid(*res.coords,
                                                                  indexing="ij")], 1)
    for t in _TIMES:
        i = min(P - 1, int(t * P))
        frames.append((t, pts, vel[i][sub].reshape(-1, d)))
    save_figure(out / "velocity.png", plot_quivers(frames, title="grid velocity m / rho"))
    _save_gif(out / "interpolation.gif", *animate_densities(res.rho, res.ts, res.coords))
    return {
        "action": float(res.action), "w2_squared": float(res.w2_squared),
        "w2_squared_static": w2_static, "hj_residual": None, "curl": res.curl(),
        "converged": res.converged, "n_iter": res.n_iter, "grid": N,
        "time_steps": opts["time_steps"], "constraint_error": res.constraint_error,
    }


def _run_mccann(args: argparse.Namespace, src: Any, tgt: Any, gen: Any, out: Path
                ) -> dict[str, Any]:
    import torch

    from otgen.ot.mccann import mccann_interpolation
    from otgen.viz.dynamic import animate_points, plot_paths, plot_quivers

    x, y = src(args.n, gen), tgt(args.n, gen)
    ts = torch.linspace(0.0, 1.0, args.frames, dtype=torch.float64)
    path = mccann_interpolation(x, y, ts)
    save_figure(out / "paths.png", plot_paths(path.points, ts, target=y,
                                              title="McCann displacement interpolation"))
    frames = [(t, path.at(t), path.velocity) for t in _TIMES]
    save_figure(out / "velocity.png", plot_quivers(frames, title="McCann velocity y - x"))
    _save_gif(out / "interpolation.gif", *animate_points(path.points, ts, target=y,
                                                        weights=path.weights))
    action = float(path.action)
    return {
        "action": action, "w2_squared": 2.0 * action,
        "w2_squared_static": float(path.result.cost), "hj_residual": None, "curl": None,
        "straightness": 0.0, "converged": bool(path.result.converged),
        "n_iter": int(path.result.n_iter), "atoms": int(path.weights.shape[0]),
    }


# --------------------------------------------------------------------------- outputs


def _save_gif(path: Path, fig: Any, anim: Any, fps: int = 10) -> None:
    """Save a matplotlib animation as a GIF with PillowWriter, atomically."""
    from matplotlib.animation import PillowWriter

    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
    try:
        anim.save(str(tmp), writer=PillowWriter(fps=fps), dpi=80)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
