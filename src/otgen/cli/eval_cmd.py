"""``otgen eval --run DIR``: recompute ``metrics.json`` (and the figures) of a run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from otgen.cli._common import jsonable

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``otgen eval``."""
    p = subparsers.add_parser("eval", help="recompute a run's metrics.json",
                              description="Re-evaluate a trained run from its weights.")
    p.add_argument("--run", required=True, help="run directory written by 'otgen train'")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``otgen eval``."""
    from otgen.cli._conditional import is_conv_run, run_eval
    from otgen.train import evaluate
    from otgen.train.runs import load_run

    if is_conv_run(args.run):  # image flow: adds digits FD, conditional accuracy, bits/dim
        return run_eval(args)
    run_, state = load_run(args.run)
    metrics = evaluate(run_, args.run, state)
    print(json.dumps(jsonable({**metrics, "run": str(args.run)})))
    return 0
