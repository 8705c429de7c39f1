"""``otgen train``: train a generator end to end and evaluate it.

With no arguments this is the main job: OT-CFM from N(0, I) to two moons on the CPU. The
run directory gets ``config.json``, ``metrics.json`` (``w2``, ``nfe``, ``path_energy``,
``npe``, ``nll``, ``train_seconds``, ...), ``samples.png``, ``trajectories.png``,
``loss.png``, ``model.safetensors`` and a resumable ``checkpoint/``. One JSON line with
the metrics is printed to stdout.

``--model`` picks the trainer from :data:`TRAINERS` (``"mlp"``: the flow-matching vector
field; ``"vae"``: the Gaussian VAE of :mod:`otgen.train.vae`); another model family adds
one entry there. ``--resume`` reads the model name from the run's ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otgen.cli._common import (
    CLIError,
    jsonable,
    new_run_dir,
    positive_float,
    positive_int,
    read_resume_config,
    resume_dir,
    save_figure,
    write_json,
)

__all__ = ["add_parser", "run", "TRAINERS"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``otgen train``."""
    from otgen.flows.matchers import METHODS
    from otgen.train.config import SOLVERS

    p = subparsers.add_parser(
        "train", help="train a flow-matching generator (default: OT-CFM, N(0, I) -> moons)",
        description="Train a transport-based generator and write a run directory.")
    p.add_argument("--data", default=None, help="target: moons, 8gaussians, checkerboard, "
                   "circles, swissroll, scurve, spirals, pinwheel, gaussian:D, FILE.npy/.csv")
    p.add_argument("--data-params", default=None,
                   help="JSON object of sampler parameters, e.g. '{\"noise\": 0.1}'")
    p.add_argument("--source", default=None, help="source: gaussian (default) or a toy name")
    p.add_argument("--method", choices=METHODS, default=None, help="objective (default otcfm)")
    p.add_argument("--model", choices=tuple(TRAINERS), default="mlp",
                   help="mlp: flow-matching vector field (default); vae: Gaussian VAE "
                   "(--data digits); wgan, semidiscrete, sinkhorn-gen, wae, vae-elbo: OT "
                   "views of GAN and VAE (any data; more settings via --config JSON)")
    p.add_argument("--latent-dim", type=positive_int, default=None,
                   help="latent dimension (latent-variable models such as --model vae)")
    p.add_argument("--var-steps", type=int, default=None,
                   help="--model vae: steps of the variance (RBF) phase")
    p.add_argument("--sigma", type=float, default=None, help="path noise sigma")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--hidden", type=positive_int, default=None, help="MLP width")
    p.add_argument("--depth", type=positive_int, default=None, help="MLP hidden layers")
    p.add_argument("--activation", default=None, help="selu, silu, relu, gelu, tanh, elu")
    p.add_argument("--ema", type=float, default=None, help="EMA decay (0 disables)")
    p.add_argument("--solver", choices=SOLVERS, default=None, help="sampling solver")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ckpt-every", type=int, default=None,
                   help="steps between checkpoints (0: only at the end; default 2000)")
    p.add_argument("--config", default=None, help="config.json to start from (flags win)")
    p.add_argument("--out", default=None, help="run directory (default runs/<method>-<data>-"
                   "<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation")
    p.add_argument("--conditional", action="store_true",
                   help="class-conditional image flow (with --data digits or mnist:PATH)")
    p.add_argument("--coupling", choices=("independent", "ot", "label-ot", "label-penalty"),
                   default=None, help="image flow coupling (default label-ot if "
                   "--conditional, else ot); label-ot: exact OT within each class")
    p.add_argument("--guidance-dropout", type=float, default=None,
                   help="label-dropout probability for classifier-free guidance (default 0.1)")
    p.set_defaults(func=run)
    return p


_FLAGS = {"data": "data", "source": "source", "method": "method", "sigma": "sigma",
          "steps": "steps", "batch_size": "batch_size", "lr": "lr", "hidden": "hidden",
          "depth": "depth", "activation": "activation", "ema": "ema", "solver": "solver",
          "seed": "seed", "ckpt_every": "ckpt_every"}


def _config(args: argparse.Namespace) -> Any:
    from otgen.train.config import TrainConfig, load_config

    base = load_config(args.config).to_json() if args.config else TrainConfig().to_json()
    if args.data is not None and args.data != base["data"] and args.data_params is None:
        base["data_params"] = {}  # the default moons parameters belong to the default data
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            base[key] = value
    if args.data_params is not None:
        try:
            params = json.loads(args.data_params)
        except json.JSONDecodeError as err:
            raise CLIError(f"--data-params is not valid JSON: {err}") from err
        if not isinstance(params, dict):
            raise CLIError("--data-params must be a JSON object, e.g. '{\"noise\": 0.1}'.")
        base["data_params"] = params
    return TrainConfig.from_json(base)


def _run_flow(args: argparse.Namespace) -> int:
    """``--model mlp``: flow matching (the main job)."""
    if args.latent_dim is not None or args.var_steps is not None:
        raise CLIError("--latent-dim and --var-steps apply to --model vae, not to --model "
                       "mlp.")
    from otgen.train import evaluate, load_config, train
    from otgen.train.distributed import context, shutdown
    from otgen.train.evaluate import write_json_atomic

    if args.resume:
        out = resume_dir(args.out)
        cfg = load_config(out)
    else:
        cfg = _config(args)
    ctx = context(cfg.resolved_device())  # torchrun: join the process group
    try:
        if not args.resume:
            if ctx.active and not args.out:
                raise CLIError("under torchrun pass --out DIR, the one run directory every "
                               "rank uses.")
            if ctx.is_main:
                out = new_run_dir(args.out, f"{cfg.method}-{Path(cfg.data).stem}")
                write_json_atomic(out / "config.json", cfg.to_json())
            ctx.barrier()
            out = Path(args.out) if not ctx.is_main else out
        run_, state = train(cfg, out, resume=args.resume)
        if not ctx.is_main:  # rank 0 evaluates and reports
            return 0
        metrics: dict[str, Any] = {"steps": state["step"],
                                   "train_seconds": state["train_seconds"]}
        if ctx.active:
            metrics["world_size"] = ctx.world
        if not args.no_eval:
            metrics = evaluate(run_, out, state)
        print(json.dumps(jsonable({**metrics, "run": str(out)})))
        print(f"otgen: wrote {out}", file=sys.stderr)
        return 0
    finally:
        shutdown()


#: Flags of the flow-matching trainer that other models do not take.
_FLOW_ONLY = ("data_params", "source", "method", "sigma", "ema", "solver", "config",
              "ckpt_every")


def _run_vae(args: argparse.Namespace) -> int:
    """``--model vae``: Gaussian VAE with an RBF variance network on digits."""
    from otgen.train.vae import VAEConfig, evaluate_vae, train_vae
    from otgen.viz.geometry import plot_vae_loss

    given = [f"--{f.replace('_', '-')}" for f in _FLOW_ONLY if getattr(args, f) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} do not apply to --model vae; its flags are "
                       "--data digits, --latent-dim, --steps, --var-steps, --batch-size, --lr, "
                       "--hidden, --depth, --activation, --seed, --out, --resume, --no-eval.")
    if args.resume:
        out = resume_dir(args.out)
        cfg = read_resume_config(out, VAEConfig.from_json)
    else:
        overrides = {"data": args.data, "latent_dim": args.latent_dim, "steps": args.steps,
                     "var_steps": args.var_steps,
                     "batch_size": args.batch_size, "lr": args.lr, "hidden": args.hidden,
                     "depth": args.depth, "activation": args.activation, "seed": args.seed}
        if args.data is not None and args.data != "digits":
            raise CLIError(f"--model vae trains on --data digits, got --data {args.data!r}.")
        cfg = VAEConfig(**{k: v for k, v in overrides.items() if v is not None})
        out = new_run_dir(args.out, f"vae-{cfg.data}")
        write_json(out / "config.json", cfg.to_json())
    model, state = train_vae(cfg, out, resume=args.resume)
    save_figure(out / "loss.png", plot_vae_loss(state["loss"], phase_switch=cfg.steps))
    metrics: dict[str, Any] = {"steps": state["step"], "train_seconds": state["train_seconds"]}
    if not args.no_eval:
        metrics.update(evaluate_vae(model, cfg))
    write_json(out / "metrics.json", metrics)
    print(json.dumps(jsonable({**metrics, "run": str(out)})))
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0


def _run_generative(args: argparse.Namespace) -> int:
    """``--model wgan|semidiscrete|sinkhorn-gen|wae|vae-elbo``: the OT views of GAN and VAE
    (:mod:`otgen.train.generative`); further settings through ``--config FILE.json``."""
    from otgen.train.generative import config_from, evaluate_generative, train_generative

    given = [f"--{f}" for f in ("source", "method", "sigma", "ema", "solver")
             if getattr(args, f) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} do not apply to --model {args.model}; its flags are "
                       "--data, --data-params, --latent-dim, --steps, --batch-size, --lr, "
                       "--hidden, --depth, --activation, --seed, --config, --out, --resume, "
                       "--no-eval.")
    if args.resume:
        out = resume_dir(args.out)
        model = _model_of_run(out)
        cfg = config_from(model, {}, out / "config.json")
    else:
        params = json.loads(args.data_params) if args.data_params is not None else None
        flags = {"data": args.data, "data_params": params, "latent_dim": args.latent_dim,
                 "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "hidden": args.hidden, "depth": args.depth, "activation": args.activation,
                 "seed": args.seed}
        cfg = config_from(args.model, flags, args.config)
        out = new_run_dir(args.out, f"{cfg.model}-{Path(cfg.data).stem}")
        write_json(out / "config.json", cfg.to_json())
    model_, state = train_generative(cfg, out, resume=args.resume)
    metrics: dict[str, Any] = {"steps": state["step"], "train_seconds": state["train_seconds"]}
    if not args.no_eval:
        metrics = evaluate_generative(model_, cfg, state, out)
    print(json.dumps(jsonable({**metrics, "run": str(out)})))
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0


#: ``--model`` name -> trainer entry point ``run(args) -> exit code``.
TRAINERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "mlp": _run_flow, "vae": _run_vae, "wgan": _run_generative,
    "semidiscrete": _run_generative, "sinkhorn-gen": _run_generative,
    "wae": _run_generative, "vae-elbo": _run_generative}


def _run_conv(args: argparse.Namespace) -> int:
    """Image flows (digits, MNIST; conditional with guidance): :mod:`otgen.cli._conditional`."""
    from otgen.cli._conditional import run_train

    return run_train(args)


TRAINERS["conv"] = _run_conv


def _model_of_run(out: Path) -> str:
    """The ``model`` recorded in a run's ``config.json`` (``"mlp"`` when absent)."""
    try:
        obj = json.loads((out / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "mlp"  # the flow trainer reports the missing/broken run itself
    model = obj.get("model", "mlp") if isinstance(obj, dict) else "mlp"
    return model if model in TRAINERS else "mlp"


def run(args: argparse.Namespace) -> int:
    """Execute ``otgen train``: dispatch on ``--model`` (or the resumed run's model)."""
    model = args.model
    if args.resume and args.out:
        model = _model_of_run(Path(args.out))
    elif model == "mlp":
        from otgen.cli._conditional import wants_conv

        model = "conv" if wants_conv(args) else model
    return TRAINERS[model](args)
