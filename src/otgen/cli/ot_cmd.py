r"""``otgen ot X Y``: optimal transport between two point clouds on disk.

Loads ``X`` and ``Y`` (``.npy`` or ``.csv``, see :mod:`otgen.data.io`) in float64,
normalises their weights to mass 1 each, calls :func:`otgen.ot.solve`, prints one line of
JSON to stdout and writes a run directory::

    DIR/config.json      every argument (the run is reproducible from it)
    DIR/metrics.json     the printed summary: cost, distance, converged, n_iter, seconds, ...
    DIR/plan.npy         dense plan (n, m), or
    DIR/plan_sparse.npy  (k, 3) float array of (i, j, mass) triplets for sparse plans
    DIR/coupling.png     the coupling (2-D clouds and matching lines; plan image otherwise)

``distance`` is ``cost ** (1 / p)`` for a cost ``|x - y|^p`` (``sqeuclidean``: W_2,
``euclidean``: W_1, ``pnorm:P``: W_P) and ``cost`` otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

from otgen.cli._common import (
    CLIError,
    jsonable,
    new_run_dir,
    positive_float,
    positive_int,
    save_figure,
    save_npy,
    write_json,
)

__all__ = ["add_parser", "run"]

NAME = "ot"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``otgen ot`` and its flags on ``subparsers``."""
    p = subparsers.add_parser(
        NAME,
        help="optimal transport between two point clouds (.npy / .csv)",
        description=(
            "Solve the OT problem between point clouds X and Y, print a one-line JSON summary "
            "and write config.json, metrics.json, the plan and coupling.png to a run directory."
        ),
    )
    p.add_argument("x", metavar="X", help="source cloud, .npy (n, d) or .csv")
    p.add_argument("y", metavar="Y", help="target cloud, .npy (m, d) or .csv")
    p.add_argument(
        "--method", choices=("exact", "sinkhorn"), default="exact", help="solver (default exact)"
    )
    eps = p.add_mutually_exclusive_group()
    eps.add_argument(
        "--eps", type=positive_float, default=None, help="entropic regularisation (sinkhorn)"
    )
    eps.add_argument(
        "--eps-rel",
        type=positive_float,
        default=None,
        help="entropic regularisation relative to the cost scale (sinkhorn)",
    )
    p.add_argument(
        "--cost",
        default="sqeuclidean",
        help="ground cost: sqeuclidean (default), euclidean or pnorm:P",
    )
    p.add_argument("--tol", type=positive_float, default=None, help="stopping tolerance")
    p.add_argument("--max-iter", type=positive_int, default=None, help="iteration cap")
    p.add_argument("--out", default=None, help="run directory (default runs/ot-<timestamp>)")
    p.add_argument("--x-weights", default=None, help="weights of X, .npy (n,) or .csv")
    p.add_argument("--y-weights", default=None, help="weights of Y, .npy (m,) or .csv")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``otgen ot`` with parsed ``args``; returns the exit code."""
    import torch

    from otgen.data.io import load_cloud
    from otgen.ot.costs import get_cost

    if args.method != "sinkhorn" and (args.eps is not None or args.eps_rel is not None):
        raise CLIError(f"--eps/--eps-rel only apply to --method sinkhorn, not {args.method!r}")
    try:
        cost = get_cost(args.cost)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--cost {args.cost!r}: {e}") from None

    x, wa = load_cloud(args.x, weights_path=args.x_weights, dtype=torch.float64)
    y, wb = load_cloud(args.y, weights_path=args.y_weights, dtype=torch.float64)
    if x.shape[1] != y.shape[1]:
        raise CLIError(
            f"X ({args.x}) has dimension {x.shape[1]} but Y ({args.y}) has dimension "
            f"{y.shape[1]}; both clouds must live in the same space"
        )
    a = _normalise(wa, x.shape[0], x)
    b = _normalise(wb, y.shape[0], y)

    from otgen.ot import solve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        res = solve(
            x,
            y,
            a,
            b,
            method=args.method,
            cost=args.cost,
            eps=args.eps,
            eps_rel=args.eps_rel,
            tol=args.tol,
            max_iter=args.max_iter,
        )
        seconds = time.perf_counter() - t0
    for w in caught:
        print(f"otgen: warning: {' '.join(str(w.message).split())}", file=sys.stderr)

    cost_value = float(res.cost)
    p = getattr(cost, "p", None)
    distance = max(cost_value, 0.0) ** (1.0 / float(p)) if p else cost_value
    metrics: dict[str, Any] = {
        "cost": cost_value,
        "distance": distance,
        "converged": bool(res.converged),
        "n_iter": int(res.n_iter),
        "seconds": seconds,
        "method": res.method or args.method,
        "n": int(x.shape[0]),
        "m": int(y.shape[0]),
        "marginal_error": res.marginal_error,
    }

    out = new_run_dir(args.out, "ot")
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(command=NAME, out=str(out))
    write_json(out / "config.json", config)
    write_json(out / "metrics.json", metrics)
    _save_plan_and_figure(out, res, x, y, a, b)

    print(json.dumps(jsonable(metrics), allow_nan=False), flush=True)  # strict JSON
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0


def _normalise(w: Any, n: int, like: Any) -> Any:
    """Weights scaled to mass 1 (uniform ``1/n`` when the file carried none)."""
    import torch

    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    return w / w.sum()


def _save_plan_and_figure(out: Any, res: Any, x: Any, y: Any, a: Any, b: Any) -> None:
    import numpy as np

    from otgen.viz.coupling import plot_coupling

    if res.plan_indices is not None and res.plan_values is not None:
        ij = res.plan_indices.detach().cpu().numpy()
        v = res.plan_values.detach().cpu().double().numpy()
        triplets = np.column_stack([ij[0], ij[1], v]).astype(np.float64)  # (k, 3)
        save_npy(out / "plan_sparse.npy", triplets)
        fig = plot_coupling(
            x, y, plan_indices=res.plan_indices, plan_values=res.plan_values, a=a, b=b
        )
    elif res.plan is not None:
        save_npy(out / "plan.npy", res.plan.detach().cpu().numpy())
        fig = plot_coupling(x, y, plan=res.plan, a=a, b=b)
    else:  # online solvers keep no plan: the figure shows the clouds only
        fig = plot_coupling(x, y, a=a, b=b)
    save_figure(out / "coupling.png", fig)
