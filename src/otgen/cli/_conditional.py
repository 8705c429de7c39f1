"""CLI entry points of the image flows (:mod:`otgen.train.conditional`): ``otgen train
--data digits [--conditional] ...``, ``otgen sample --run DIR --class C --guidance W`` and
``otgen eval --run DIR`` for runs whose ``config.json`` has ``model = "conv"``.

``train_cmd``, ``sample_cmd`` and ``eval_cmd`` route here; nothing else is CLI-only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from otgen.cli._common import (
    CLIError,
    jsonable,
    new_run_dir,
    read_resume_config,
    resume_dir,
    save_figure,
    save_npy,
    write_json,
)

__all__ = ["run_train", "run_sample", "run_eval", "is_conv_run", "wants_conv"]

#: ``otgen train`` flags of the point-cloud flows that the image flow does not take.
_NOT_FOR_IMAGES = ("data_params", "source", "method", "latent_dim", "var_steps", "depth",
                   "activation")


def is_conv_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir/config.json`` belongs to an image flow (``model == "conv"``)."""
    try:
        obj = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and obj.get("model") == "conv"


def wants_conv(args: argparse.Namespace) -> bool:
    """Whether ``otgen train`` arguments ask for the image flow: ``--conditional``,
    ``--coupling``, ``--guidance-dropout`` or image data (``digits``, ``mnist:PATH``)."""
    from otgen.train.conditional import is_image_data

    return bool(getattr(args, "conditional", False) or getattr(args, "coupling", None)
                or getattr(args, "guidance_dropout", None) is not None
                or is_image_data(getattr(args, "data", None)))


def _config(args: argparse.Namespace) -> Any:
    from otgen.train.conditional import ConditionalConfig

    base: dict[str, Any] = ConditionalConfig().to_json()
    if args.config:
        try:
            base = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CLIError(f"--config {args.config}: cannot read a JSON object ({err}).") from err
        if not isinstance(base, dict):
            raise CLIError(f"--config {args.config}: must hold a JSON object.")
        base.setdefault("model", "conv")
    else:
        base["conditional"] = False  # unconditional unless asked
        base["coupling"] = "ot"
    if args.conditional:
        base["conditional"] = True
        if args.coupling is None and not args.config:
            base["coupling"] = "label-ot"
    flags = {"data": args.data, "coupling": args.coupling,
             "guidance_dropout": args.guidance_dropout, "steps": args.steps,
             "batch_size": args.batch_size, "lr": args.lr, "width": args.hidden,
             "ema": args.ema, "solver": args.solver, "seed": args.seed, "sigma": args.sigma,
             "ckpt_every": getattr(args, "ckpt_every", None)}
    base.update({k: v for k, v in flags.items() if v is not None})
    return ConditionalConfig.from_json(base)


def run_train(args: argparse.Namespace) -> int:
    """``otgen train`` for the image flow (``--model conv`` or routed by :func:`wants_conv`)."""
    from otgen.train.conditional import ConditionalConfig, train_conditional
    from otgen.train.conditional_eval import evaluate_conditional

    given = [f"--{f.replace('_', '-')}" for f in _NOT_FOR_IMAGES
             if getattr(args, f, None) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} do not apply to the image flow (--data digits|"
                       "mnist:PATH); its flags are --conditional, --coupling, "
                       "--guidance-dropout, --sigma, --steps, --batch-size, --lr, --hidden "
                       "(U-Net width), --ema, --solver, --seed, --config, --out, --resume, "
                       "--no-eval.")
    if args.resume:
        out = resume_dir(args.out)
        cfg = read_resume_config(out, ConditionalConfig.from_json)
    else:
        cfg = _config(args)
        kind = "cond" if cfg.conditional else "uncond"
        out = new_run_dir(args.out, f"{kind}-{cfg.coupling}-{cfg.data.split(':')[0]}")
        write_json(out / "config.json", cfg.to_json())
    model, state = train_conditional(cfg, out, resume=args.resume)
    metrics: dict[str, Any] = {"steps": state["step"], "train_seconds": state["train_seconds"]}
    if args.no_eval:
        from otgen.viz.flows import plot_loss

        save_figure(out / "loss.png", plot_loss(list(state["loss"])))
    else:
        metrics = evaluate_conditional(model, cfg, out, state)
    print(json.dumps(jsonable({**metrics, "run": str(out)})))
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """``otgen sample --run DIR [--class C] [--guidance W] [--n N]`` for an image flow:
    writes the images ``(N, d)`` as ``.npy`` and an image grid PNG next to it."""
    import torch

    from otgen.train.conditional import load_conditional_run, torch_threads
    from otgen.train.conditional_eval import sample_images
    from otgen.viz.images import plot_image_grid

    model, cfg, _ = load_conditional_run(args.run)
    cls, w = getattr(args, "class_", None), getattr(args, "guidance", None)
    if not cfg.conditional and (cls is not None or w is not None):
        raise CLIError(f"--run {args.run} is unconditional; --class and --guidance need a run "
                       "trained with --conditional.")
    if cls is not None and not 0 <= cls < model.n_classes:
        raise CLIError(f"--class must be in 0..{model.n_classes - 1}, got {cls}.")
    scale = cfg.guidance if w is None else float(w)
    if args.solver is not None or args.steps is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, solver=args.solver or cfg.solver,
                                  solver_steps=args.steps or cfg.solver_steps)
    labels = None
    if cfg.conditional:
        labels = (torch.full((args.n,), cls, dtype=torch.long) if cls is not None
                  else torch.arange(args.n) % model.n_classes)
    dtype = next(model.parameters()).dtype
    x0 = torch.randn(args.n, model.dim, generator=torch.Generator().manual_seed(args.seed),
                     dtype=dtype)
    with torch_threads(cfg.threads):
        x, nfe = sample_images(model, cfg, x0, labels, scale)
    tag = f"-c{cls}" if cls is not None else ""
    tag += f"-g{scale:g}" if cfg.conditional else ""
    out = Path(args.out) if args.out else Path(args.run) / f"samples{tag}-{args.n}.npy"
    save_npy(out, x.detach().cpu().numpy())
    ncol = 10 if cls is None and cfg.conditional else max(1, int(round(args.n ** 0.5)))
    title = (f"class {cls}" if cls is not None else "classes 0-9") + f", guidance w = {scale:g}" \
        if cfg.conditional else cfg.coupling
    png = out.with_suffix(".png")
    save_figure(png, plot_image_grid(x, shape=model.image_shape[1:], ncol=ncol, title=title))
    print(json.dumps({"out": str(out), "png": str(png), "n": args.n, "class": cls,
                      "guidance": scale, "solver": cfg.solver, "nfe": nfe}))
    print(f"otgen: wrote {png}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``otgen eval --run DIR`` for an image flow: recompute ``metrics.json`` and PNGs."""
    from otgen.train.conditional import load_conditional_run
    from otgen.train.conditional_eval import evaluate_conditional

    model, cfg, state = load_conditional_run(args.run)
    metrics = evaluate_conditional(model, cfg, args.run, state)
    print(json.dumps(jsonable({**metrics, "run": str(args.run)})))
    return 0
