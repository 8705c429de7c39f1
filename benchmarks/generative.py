"""OT views of GAN and VAE vs OT-CFM at equal training wall time, on moons and digits.

For every data set and model: train for ``--seconds`` of wall time (``max_seconds`` of
:class:`otgen.train.generative.GenerativeConfig`; OT-CFM through ``otgen train --model mlp``
with a step count calibrated to the same time), then compare ``n_eval`` generated points
with the same held-out set (moons: 2000 fresh draws with a fixed seed; digits: the 360-image
test split): exact W2, sliced W2, Sinkhorn divergence (eps = 5 % of the mean cost), and the
training seconds. Each run directory keeps its ``samples.png``.

    python benchmarks/generative.py --seconds 60 --out runs/bench-generative
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from otgen.cli.main import main as otgen_main
from otgen.data.digits import load_digits
from otgen.metrics import sliced_w2, w2
from otgen.ode import integrate
from otgen.ot import sinkhorn_divergence
from otgen.train.generative import (
    config_from,
    evaluate_generative,
    load_data,
    train_generative,
)
from otgen.train.runs import load_run

MODELS = ("wgan", "semidiscrete", "sinkhorn-gen", "wae", "vae-elbo")


def _metrics(x: torch.Tensor, held: torch.Tensor) -> dict[str, float]:
    x, held = x.detach().double(), held.double()
    return {"w2": float(w2(x, held)),
            "sliced_w2": float(sliced_w2(x, held, generator=torch.Generator().manual_seed(0))),
            "sinkhorn": float(sinkhorn_divergence(x, held, eps_rel=0.05))}


def _otcfm_figure(x: torch.Tensor, held: torch.Tensor, run_dir: Path) -> None:
    from otgen.viz import plot_samples
    from otgen.viz.generative import plot_image_grid

    if x.shape[1] == 2:
        fig = plot_samples(x, held, title="OT-CFM")
    else:
        fig = plot_image_grid(x[:100].reshape(-1, 8, 8), title="OT-CFM", vmin=0.0, vmax=1.0)
    fig.savefig(run_dir / "samples.png")


def _otcfm(data: str, seconds: float, out: Path, held: torch.Tensor, n_eval: int
           ) -> dict[str, float]:
    """OT-CFM via ``otgen train``; steps calibrated on a short run to take ``seconds``."""
    args = ["--data", data] if data == "moons" else ["--data", data, "--source", "gaussian:64"]
    calib = out / "calib"
    otgen_main(["train", *args, "--steps", "300", "--out", str(calib), "--no-eval"])
    rate = 300 / json.loads((calib / "checkpoint" / "state.json").read_text()
                            )["state"]["train_seconds"]
    steps = max(100, int(rate * seconds))
    run_dir = out / "run"
    otgen_main(["train", *args, "--steps", str(steps), "--out", str(run_dir), "--no-eval"])
    run, state = load_run(run_dir)
    x0 = run.source(n_eval, torch.Generator().manual_seed(99))
    with torch.no_grad():
        res = integrate(run.eval_model().eval(), x0, method="dopri5", atol=1e-4, rtol=1e-4)
    x = res.x if isinstance(res.x, torch.Tensor) else res.x[0]
    _otcfm_figure(x, held, run_dir)
    return {**_metrics(x, held), "train_seconds": float(state["train_seconds"]),
            "steps": int(state["step"]), "nfe": int(res.nfe)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--data", nargs="+", default=["moons", "digits"])
    p.add_argument("--models", nargs="+", default=[*MODELS, "otcfm"])
    p.add_argument("--out", default="runs/bench-generative")
    args = p.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, object]] = []
    for data in args.data:
        for model in args.models:
            out = root / f"{data}-{model}"
            t0 = time.perf_counter()
            load = float(np.loadtxt("/proc/loadavg", usecols=0))
            if model == "otcfm":
                cfg = config_from("wae", {"data": data})
                _, held = load_data(cfg)
                spec = data
                if data == "digits":
                    spec = str(root / "digits_train.npy")
                    np.save(spec, load_digits("train")[0].numpy())
                row: dict[str, object] = _otcfm(spec, args.seconds, out, held, cfg.n_eval)
            else:
                cfg = config_from(model, {"data": data, "steps": 10**7})
                cfg = type(cfg).from_json({**cfg.to_json(), "max_seconds": args.seconds,
                                           "ckpt_every": 0})
                net, state = train_generative(cfg, out, progress=False)
                m = evaluate_generative(net, cfg, state, out)
                row = {k: m[k] for k in ("w2", "w2_init", "sliced_w2", "sinkhorn",
                                         "train_seconds", "steps")}
            row.update(data=data, model=model, load=load,
                       wall=time.perf_counter() - t0)
            results.append(row)
            print(json.dumps(row), flush=True)
            (root / "results.json").write_text(json.dumps(results, indent=1))
    print("\n| data | model | W2 | sliced W2 | Sinkhorn div. | train s | steps |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['data']} | {r['model']} | {r['w2']:.3f} | {r['sliced_w2']:.3f} | "
              f"{r['sinkhorn']:.3f} | {r['train_seconds']:.1f} | {r['steps']} |")


if __name__ == "__main__":
    main()
