"""Conditional digits: independent vs OT vs label-aware OT couplings, guidance 0, 1, 2, 4.

For each coupling, one class-conditional image flow (:mod:`otgen.train.conditional`, same
seed, same steps, same network) is trained on scikit-learn's digits and evaluated by
:func:`otgen.train.conditional_eval.evaluate_conditional` at every guidance scale: digits
FD (penultimate features of otgen's cached digits classifier, 360 generated vs the 360
test images), conditional accuracy, NFE of Dopri5 (atol = rtol = 1e-3), plus W2 in pixel
space and dequantised bits/dim at w = 1. It also measures how each coupling biases the
noise given the class: ``noise_bias`` = mean over classes of |E[x0 | c]| over 200 coupled
batches (about 0.1 for an unbiased coupling with these sizes, since each class mean
averages ~2500 noise vectors in 64-d: sqrt(64 / 2500) = 0.16).

Writes ``results.json`` and one PNG per (coupling, scale) (10 classes x 10 samples) to
``--out``, and prints the Markdown table for ``benchmarks/RESULTS.md``.

    python benchmarks/conditional.py --steps 1500 --out runs/bench-conditional
    python benchmarks/conditional.py --markdown runs/bench-conditional/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from otgen.flows.conditional import make_conditional_matcher
from otgen.train.conditional import ConditionalConfig, load_image_data, train_conditional
from otgen.train.conditional_eval import evaluate_conditional, scale_tag


def noise_bias(coupling: str, batches: int = 200, batch_size: int = 128, seed: int = 0) -> float:
    """Mean over classes of |E[x0 | class of the partner]| under ``coupling``."""
    data = load_image_data("digits", "train")
    x, y = data.images(), data.labels
    matcher = make_conditional_matcher(coupling)
    g = torch.Generator().manual_seed(seed)
    sums, counts = torch.zeros(10, x.shape[1], dtype=torch.float64), torch.zeros(10)
    for _ in range(batches):
        idx = torch.randint(x.shape[0], (batch_size,), generator=g)
        x0 = torch.randn(batch_size, x.shape[1], generator=g)
        x0p, _, yp, _ = matcher.pair(x0, x[idx], y[idx], g)
        sums.index_add_(0, yp, x0p.double())
        counts += torch.bincount(yp, minlength=10)
    means = sums / counts[:, None]
    return float(means.norm(dim=1).mean())


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results: dict = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
                     "machine": platform.processor() or platform.machine(),
                     "torch": torch.__version__, "steps": args.steps,
                     "batch_size": args.batch_size, "width": args.width, "rows": []}
    for coupling in args.couplings:
        cfg = ConditionalConfig(conditional=True, coupling=coupling, steps=args.steps,
                                batch_size=args.batch_size, width=args.width, seed=args.seed,
                                eval_guidance=tuple(args.scales), guidance=1.0,
                                ckpt_every=0, n_nll=args.n_nll)
        run_dir = out / coupling
        t0 = time.perf_counter()
        model, state = train_conditional(cfg, run_dir)
        t1 = time.perf_counter()
        metrics = evaluate_conditional(model, cfg, run_dir, state)
        t2 = time.perf_counter()
        bias = noise_bias(coupling, seed=args.seed)
        for w in args.scales:
            tag = scale_tag(w)
            results["rows"].append({
                "coupling": coupling, "guidance": w, "digits_fd": metrics[f"digits_fd_{tag}"],
                "cond_acc": metrics[f"cond_acc_{tag}"], "nfe": metrics[f"nfe_{tag}"],
                "network_rows_per_sample": metrics[f"nfe_{tag}"] * (1 if w in (0, 1) else 2),
                "png": f"{coupling}_{tag}.png"})
            shutil.copyfile(run_dir / f"samples_{tag}.png", out / f"{coupling}_{tag}.png")
        results.setdefault("per_coupling", {})[coupling] = {
            "train_seconds": t1 - t0, "eval_seconds": t2 - t1, "noise_bias": bias,
            "w2": metrics["w2"], "w2_floor": metrics["w2_floor"],
            "sinkhorn_div": metrics["sinkhorn_div"], "bpd": metrics["bpd"],
            "bpd_uncond": metrics["bpd_uncond"], "digits_fd_floor": metrics["digits_fd_floor"],
            "final_loss": sum(state["loss"][-100:]) / min(100, len(state["loss"])),
            "classifier_test_accuracy": metrics["classifier_test_accuracy"]}
        print(json.dumps({"coupling": coupling, **results["per_coupling"][coupling]}),
              flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def markdown(results: dict, fig_prefix: str = "") -> str:
    lines = ["| coupling | w | digits FD | cond. acc. | NFE | network rows / sample | samples |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['coupling']} | {r['guidance']:g} | {r['digits_fd']:.2f} | "
                     f"{r['cond_acc']:.3f} | {r['nfe']} | {r['network_rows_per_sample']} | "
                     f"![]({fig_prefix}{r['png']}) |")
    lines += ["", "| coupling | noise bias | train s | W2 (w=1) | Sinkhorn div. | bits/dim "
              "cond. | bits/dim uncond. | final loss |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c, p in results["per_coupling"].items():
        lines.append(f"| {c} | {p['noise_bias']:.3f} | {p['train_seconds']:.0f} | "
                     f"{p['w2']:.3f} | {p['sinkhorn_div']:.3f} | {p['bpd']:.3f} | "
                     f"{p['bpd_uncond']:.3f} | {p['final_loss']:.2f} |")
    p0 = next(iter(results["per_coupling"].values()))
    lines += ["", f"Floors (real training images vs the test images, same sizes): digits FD "
              f"{p0['digits_fd_floor']:.2f}, W2 {p0['w2_floor']:.3f}; classifier test "
              f"accuracy {p0['classifier_test_accuracy']:.3f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-nll", type=int, default=100)
    ap.add_argument("--couplings", nargs="+", default=["independent", "ot", "label-ot"])
    ap.add_argument("--scales", nargs="+", type=float, default=[0.0, 1.0, 2.0, 4.0])
    ap.add_argument("--out", default="runs/bench-conditional")
    ap.add_argument("--markdown", nargs="+", default=None,
                    help="print the tables of one or more results.json (merged in order)")
    ap.add_argument("--fig-prefix", default="figures/conditional/")
    args = ap.parse_args()
    if args.markdown:
        merged: dict = {"rows": [], "per_coupling": {}}
        for path in args.markdown:
            res = json.loads(Path(path).read_text())
            merged["rows"] += res["rows"]
            merged["per_coupling"].update(res["per_coupling"])
        print(markdown(merged, args.fig_prefix))
        return
    print(markdown(run(args), args.fig_prefix))


if __name__ == "__main__":
    main()
