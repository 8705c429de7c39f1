"""``otgen sample --run DIR``: draw samples from a trained flow (``.npy`` + PNG).

Image-flow runs (``model = "conv"``) go to :func:`otgen.cli._conditional.run_sample`:
``--class C --guidance W`` pick the class and the classifier-free guidance scale, and
the PNG is an image grid."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from otgen.cli._common import CLIError, positive_int, save_figure, save_npy

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``otgen sample``."""
    from otgen.train.config import SOLVERS

    p = subparsers.add_parser("sample", help="sample from a trained run",
                              description="Integrate the trained flow from fresh noise.")
    p.add_argument("--run", required=True, help="run directory written by 'otgen train'")
    p.add_argument("--n", type=positive_int, default=1000, help="number of samples")
    p.add_argument("--solver", choices=SOLVERS, default=None, help="default: the run's")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps of a fixed-step solver (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output .npy (default DIR/samples-N.npy)")
    p.add_argument("--class", dest="class_", type=int, default=None,
                   help="conditional image runs: class to generate (default: all, cyclically)")
    p.add_argument("--guidance", type=float, default=None,
                   help="conditional image runs: classifier-free guidance scale w (0: "
                   "unconditional, 1: conditional; default: the run's)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``otgen sample``."""
    import torch

    from otgen.cli._conditional import is_conv_run, run_sample
    from otgen.ode import integrate
    from otgen.train.runs import load_run

    if is_conv_run(args.run):
        return run_sample(args)
    if args.class_ is not None or args.guidance is not None:
        raise CLIError("--class and --guidance apply to conditional image runs (otgen train "
                       f"--data digits --conditional); {args.run} is not one.")
    run_, _ = load_run(args.run)
    cfg = run_.config
    solver = args.solver or cfg.solver
    kw: dict[str, Any] = ({"atol": cfg.atol, "rtol": cfg.rtol} if solver == "dopri5"
                          else {"steps": args.steps or cfg.solver_steps})
    x0 = run_.source(args.n, torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        res = integrate(run_.eval_model().eval(), x0, method=solver, **kw)
    x = res.x
    if isinstance(x, tuple):
        raise TypeError("internal: sampling state must be a tensor")
    out = Path(args.out) if args.out else Path(args.run) / f"samples-{args.n}.npy"
    save_npy(out, x.detach().cpu().numpy())
    if x.shape[1] == 2:
        from otgen.viz import plot_samples

        data = run_.data(args.n, torch.Generator().manual_seed(args.seed + 1))
        save_figure(out.with_suffix(".png"), plot_samples(x, data, title=f"{cfg.method} "
                                                          f"samples ({solver})"))
    print(json.dumps({"out": str(out), "n": args.n, "solver": solver, "nfe": res.nfe}))
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0
