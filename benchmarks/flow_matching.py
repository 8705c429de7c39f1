#!/usr/bin/env python
"""Flow-matching benchmark: otgen against TorchCFM on the same toy tasks, in one process.

Setup (the issue's spec):

* model: the MLP of TorchCFM's examples, 3 hidden layers of 64 SELU units, input
  ``[x, t]`` (otgen ``MLPVectorField(2, hidden=64, depth=3, activation="selu")``, TorchCFM
  ``torchcfm.models.models.MLP(dim=2, w=64, time_varying=True)``: the same layers and the
  same ``state_dict`` keys; both are initialised under ``torch.manual_seed(seed)`` and the
  script checks that the initial weights are identical);
* batch 256, Adam lr 1e-3, sigma = 0 (OT-CFM, I-CFM), ``--steps`` steps (10k), seeds 0-2;
* tasks: N(0, I) -> ``moons`` (``make_moons(noise=0.05) * 2``, then ``x[:, 0] -= 1``:
  ``sample_moons(n, noise=0.05, noise_kind="gaussian", scale=2.0, shift=(-1.0, 0.0))``)
  and N(0, I) -> ``8gaussians`` (``sample_8gaussians(n, radius=5.0, std=0.1 ** 0.5)``);
* methods: ``otcfm`` (exact minibatch OT), ``cfm`` (I-CFM), ``sbcfm`` (entropic OT with
  eps = 2 sigma^2 and the Brownian-bridge path, sigma = ``--sb-sigma``, default 1.0 =
  TorchCFM's default). TorchCFM's ``SchrodingerBridgeConditionalFlowMatcher`` defaults to
  ``ot_method="exact"`` (its docstring: exact works better at moderate batch sizes); to
  compare the same objective we pass ``ot_method="sinkhorn"`` (``reg = 2 sigma^2``, POT's
  ``ot.sinkhorn``) unless ``--sb-ot exact``.

Libraries:

* ``otgen``: otgen's own training loop ``otgen.train.train(TrainConfig(...))`` (the
  coupling of batch k+1 is computed in a worker thread while the model steps on batch k).
* ``torchcfm``: the hand-written loop of TorchCFM's README: ``t, xt, ut =
  FM.sample_location_and_conditional_flow(x0, x1)``, ``vt = model(cat[xt, t])``,
  ``loss = mean((vt - ut)^2)``, Adam. TorchCFM's loss is a per-coordinate mean, otgen's
  sums over the d = 2 coordinates and averages over the batch: the gradients differ by the
  factor d = 2, to which Adam is invariant (up to its eps = 1e-8).
* ``otgen-sync`` (throughput only): the same otgen objective in a plain synchronous loop
  like TorchCFM's (``matcher.loss(model, x0, x1)``), to show what the worker thread buys.
* ``otgen-emd`` (throughput only, diagnostic): otgen's loop with the batch assignment sent
  to the network simplex (``emd_numpy``) instead of scipy's ``linear_sum_assignment``.
* ``LIB+ema`` (grid): the same loop, but the model evaluated is the exponential moving
  average of the weights (decay ``--ema``, default 0.999 = otgen's ``TrainConfig.ema``,
  warmed up as ``min(ema, (1 + k) / (10 + k))``; the same rule in every loop).
  ``otgen+ema`` is what ``otgen train`` delivers by default; the issue's spec (plain Adam)
  is the label without ``+ema``. The report judges the W2/NFE/NPE targets for three
  pairs: otgen vs torchcfm (last iterate in both), otgen+ema vs torchcfm (each library's
  default loop), otgen+ema vs torchcfm+ema (the same averaging in both).

Both libraries see *identical* batches: the TorchCFM loop draws x0 and x1 from otgen's
samplers with the generators otgen's loop uses (``otgen.train.loop._streams(seed)``:
``source`` and ``data``). Times, path noise and the pairing draws come from each library's
own RNG (TorchCFM: the global torch RNG and NumPy's, seeded with ``seed``).

Evaluation (identical for both models, otgen's tools): 2000 points x0 ~ N(0, I) and 2000
fresh data points from ``Generator().manual_seed(1000 * seed + 99)``; ``otgen.ode.integrate``
(dopri5, atol = rtol = 1e-4) gives the samples and NFE; ``otgen.metrics.w2`` (exact W2,
2000 vs 2000) and ``otgen.metrics.path_energy`` (NPE, same solver). The NFE of the same
solve with ``torchdiffeq.odeint`` (dopri5, 1e-4, what TorchCFM reports) is recorded too.
A single 2000-vs-2000 W2 of a fixed model varies from draw to draw by 0.02-0.05 (moons)
and 0.12-0.17 (8gaussians, where the number of points per mode fluctuates: data against
data scores 0.63 ± 0.10) — as much as or more than the differences between the libraries.
So each model is also evaluated on ``--eval-draws`` (default 10) independent draws (seeds
``1000 * seed + 99 + k``; draw 0 is the single draw above) and the W2 target is judged on
the mean over draws; both figures are reported, with the per-model standard deviation over
draws, the per-draw paired difference to TorchCFM's model of the same seed (same draws:
the noise common to both cancels) and the W2 of data against data (the floor). ``torchcfm-perm``
(diagnostic) is TorchCFM with its exact plan sampled without replacement, i.e. a
permutation like otgen's coupling.

Training throughput = steps / time of the training loop (otgen: its ``train_seconds``,
which excludes model construction and the final checkpoint; TorchCFM: the loop only).

Other measurements:

* ``--overhead``: otgen's ``ExactOTCoupling()(x0, x1)`` minus the bare assignment solver
  call it makes (``scipy.optimize.linear_sum_assignment`` or POT's compiled ``emd_c`` via
  ``otgen.ot.exact._emd_plan``, per ``otgen.ot.exact.prefer_assignment``) on the matrix the
  coupling hands it (``otgen.flows.couplings.assignment_cost``: -2 <x0_i, x1_j>, built
  outside the timing), per batch, medians; the two timings alternate their order between
  batches. Also the same solver on the full squared-distance matrix (to show the cheaper
  matrix does not shift work into the solver), TorchCFM's ``ot_sampler.sample_plan`` and
  POT's ``ot.emd`` on the same batches.
* ``--throughput``: steps/s of torchcfm / otgen / otgen-sync (/ otgen-emd) with
  torch.set_num_threads(1) and (2), round-robin, ``--tp-steps`` steps, ``--tp-reps``
  repetitions, medians; also process-CPU ms per step.
* ``--cpu-breakdown``: thread-CPU ms of the model step and of the couplings of both
  libraries on the same batches (robust-ish to other load on a shared machine).

Every finished run is appended to ``--out`` (JSON, rewritten atomically after each run);
``--resume`` skips runs already there; ``--report`` only prints the tables.

Usage::

    python benchmarks/flow_matching.py --quick                 # 1k steps, seed 0, moons
    python benchmarks/flow_matching.py --methods otcfm --tasks moons 8gaussians \\
        --seeds 0 1 2 --steps 10000 --eval-draws 10 --out /tmp/fm.json --resume \\
        --libs otgen torchcfm otgen+ema torchcfm+ema
    python benchmarks/flow_matching.py --overhead --throughput --out /tmp/fm.json
    python benchmarks/flow_matching.py --report --out /tmp/fm.json --merge /tmp/other.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _fm_report import load, median, report
from _fm_runs import (
    BATCH,
    DEPTH,
    HIDDEN,
    LAST_CPU,
    LIBS,
    LR,
    METHODS,
    TASKS,
    _loadavg,
    _samplers,
    _save,
    _sigma,
    _tcfm_matcher,
    _tcfm_model,
    check_same_batches,
    check_same_init,
    data_floor,
    evaluate,
    train_otgen,
    train_otgen_emd,
    train_otgen_sync,
    train_torchcfm,
)

from otgen.flows.couplings import ExactOTCoupling, assignment_cost
from otgen.flows.matchers import make_matcher
from otgen.models import MLPVectorField
from otgen.ot.exact import _emd_plan, prefer_assignment
from otgen.ot.problem import LinearProblem

# --------------------------------------------------------------------------- commands


def _meta(args: argparse.Namespace, what: str) -> dict[str, Any]:
    import torchcfm

    try:
        import torchdiffeq
        tdq_v = torchdiffeq.__version__
    except Exception:  # pragma: no cover
        tdq_v = "n/a"
    return {"what": what, "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "argv": " ".join(sys.argv), "load_start": _loadavg(),
            "torch": torch.__version__, "torchcfm": torchcfm.__version__,
            "torchdiffeq": tdq_v, "numpy": np.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "threads": args.threads}


def run_grid(args: argparse.Namespace, out: Path) -> None:
    res = load(out)
    meta = _meta(args, "grid")
    meta["same_init"] = check_same_init()
    meta["same_batches"] = {t: check_same_batches(t) for t in args.tasks}
    print(f"# same initial weights: {meta['same_init']}; same batches: {meta['same_batches']}")
    if args.eval_draws > 1:
        meta["data_floor_w2"] = {t: data_floor(t, args.eval_draws) for t in args.tasks}
        for t, v in meta["data_floor_w2"].items():
            print(f"# W2 floor (data vs data, 2000 vs 2000, {len(v)} draws) {t}: "
                  f"{statistics.fmean(v):.4f} ± {statistics.stdev(v):.4f}", flush=True)
    res["meta"].append(meta)
    _save(out, res)
    torch.set_num_threads(args.threads)
    done = {(r["task"], r["method"], r["lib"], r["seed"], r["steps"]) for r in res["runs"]}
    for method in args.methods:
        for task in args.tasks:
            for seed in args.seeds:
                for lib in args.libs:
                    base, _, suffix = lib.partition("+")
                    ema = args.ema if suffix == "ema" else 0.0
                    key = (task, method, lib, seed, args.steps)
                    if args.resume and key in done:
                        continue
                    load0 = _loadavg()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if base == "otgen":
                            field, secs, last = train_otgen(task, method, args.steps, seed,
                                                            args.sb_sigma, ema)
                        elif base == "otgen-sync":
                            field, secs, last = train_otgen_sync(task, method, args.steps,
                                                                 seed, args.sb_sigma, ema)
                        else:
                            field, secs, last = train_torchcfm(
                                task, method, args.steps, seed, args.sb_sigma, args.sb_ot,
                                replace=base != "torchcfm-perm", ema=ema)
                        t_ev = time.perf_counter()
                        ev = evaluate(field, task, seed, draws=args.eval_draws)
                        t_ev = time.perf_counter() - t_ev
                    if args.save_models is not None:
                        args.save_models.mkdir(parents=True, exist_ok=True)
                        torch.save(field.state_dict(), args.save_models
                                   / f"{task}_{method}_{lib}_{seed}_{args.steps}.pt")
                    rec = {"task": task, "method": method, "lib": lib, "seed": seed,
                           "steps": args.steps, "threads": args.threads, "ema": ema,
                           "sigma": _sigma(method, args.sb_sigma),
                           "sb_ot": args.sb_ot if lib == "torchcfm" and method == "sbcfm"
                           else None,
                           "train_seconds": secs, "steps_per_s": args.steps / secs,
                           "cpu_ms_per_step": 1e3 * LAST_CPU[0] / args.steps,
                           "last_loss": last, "eval_seconds": t_ev, "load_before": load0,
                           "load_after": _loadavg(),
                           "time": _dt.datetime.now().isoformat(timespec="seconds"), **ev}
                    mean_w2 = (f" (mean of {args.eval_draws} draws {ev['w2_mean']:.4f} ± "
                               f"{ev['w2_std']:.4f})" if "w2_mean" in ev else "")
                    print(f"{task:10s} {method:6s} {lib:9s} seed {seed} "
                          f"{rec['steps_per_s']:7.1f} steps/s  W2 {ev['w2']:.4f}{mean_w2}  "
                          f"NFE {ev['nfe']} (tdq {ev.get('nfe_torchdiffeq')})  "
                          f"NPE {ev['npe']:.4f}  loss {last:.3f}  load {rec['load_after']}",
                          flush=True)
                    res = load(out)
                    res["runs"].append(rec)
                    _save(out, res)


def run_overhead(args: argparse.Namespace, out: Path) -> None:
    """Coupling overhead beyond the bare solver at batch 256, medians over batches."""
    import ot as pot
    import scipy.optimize
    from torchcfm.optimal_transport import OTPlanSampler

    torch.set_num_threads(args.threads)
    rows: dict[str, Any] = {"load_before": _loadavg(), "batch": BATCH, "n": args.oh_batches,
                            "threads": args.threads,
                            "prefer_assignment": prefer_assignment(BATCH, 2)}
    coupling = ExactOTCoupling()
    sampler = OTPlanSampler(method="exact")
    use_lsa = rows["prefer_assignment"]
    w = np.full(BATCH, 1.0 / BATCH)
    max_iter = max(10**7, 400 * BATCH * BATCH)

    def solver(C: np.ndarray) -> None:
        """The compiled call the coupling makes, and only that."""
        if use_lsa:
            scipy.optimize.linear_sum_assignment(C)
        else:
            _emd_plan(w, C, max_iter)

    for task in args.tasks:
        source, data = _samplers(task)
        g = torch.Generator().manual_seed(7)
        tot, bare, bare_full, lsa, emd, tcfm = [], [], [], [], [], []
        ctot, cbare = [], []  # thread CPU time (robust to other processes on the machine)
        for i in range(args.oh_batches + 10):
            x0, x1 = source(BATCH, g), data(BATCH, g)
            with torch.no_grad():
                C = LinearProblem(x0, x1).cost(x0, x1)
            C64 = np.ascontiguousarray(C.to(torch.float64).numpy())  # |x0_i - x1_j|^2
            # the matrix the coupling hands to the solver (-2 <x0_i, x1_j>, same optimum),
            # built outside the timings: the bare solver gets exactly what the coupling's
            # solver call gets; the order of the two timings alternates between batches so
            # that cache warmth favours neither
            Cs = assignment_cost(x0, x1)
            if i % 2 == 0:
                c0, t = time.thread_time(), time.perf_counter()
                coupling(x0, x1)
                c1, t1 = time.thread_time(), time.perf_counter()
                solver(Cs)
                c2, t2 = time.thread_time(), time.perf_counter()
                dt_c, dt_s, dc_c, dc_s = t1 - t, t2 - t1, c1 - c0, c2 - c1
            else:
                c0, t = time.thread_time(), time.perf_counter()
                solver(Cs)
                c1, t1 = time.thread_time(), time.perf_counter()
                coupling(x0, x1)
                c2, t2 = time.thread_time(), time.perf_counter()
                dt_s, dt_c, dc_s, dc_c = t1 - t, t2 - t1, c1 - c0, c2 - c1
            t2 = time.perf_counter()
            solver(C64)
            t3 = time.perf_counter()
            scipy.optimize.linear_sum_assignment(C64)
            t3b = time.perf_counter()
            pot.emd(w, w, C64)
            t4 = time.perf_counter()
            sampler.sample_plan(x0, x1)
            t5 = time.perf_counter()
            if i < 10:  # warm-up
                continue
            tot.append(dt_c)
            bare.append(dt_s)
            bare_full.append(t3 - t2)
            lsa.append(t3b - t3)
            emd.append(t4 - t3b)
            tcfm.append(t5 - t4)
            ctot.append(dc_c)
            cbare.append(dc_s)
        diffs = [a - b for a, b in zip(tot, bare, strict=True)]
        cdiffs = [a - b for a, b in zip(ctot, cbare, strict=True)]
        rows[task] = {
            "coupling_ms": 1e3 * median(tot), "bare_solver_ms": 1e3 * median(bare),
            "overhead_ms": 1e3 * (median(tot) - median(bare)),
            "overhead_paired_median_ms": 1e3 * median(diffs),
            "cpu_coupling_ms": 1e3 * median(ctot), "cpu_bare_solver_ms": 1e3 * median(cbare),
            "cpu_overhead_ms": 1e3 * (median(ctot) - median(cbare)),
            "cpu_overhead_paired_median_ms": 1e3 * median(cdiffs),
            "bare_solver_full_cost_ms": 1e3 * median(bare_full),
            "scipy_lsa_ms": 1e3 * median(lsa), "pot_emd_ms": 1e3 * median(emd),
            "torchcfm_sample_plan_ms": 1e3 * median(tcfm),
        }
        print(f"# overhead {task}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[task].items()),
              flush=True)
    rows["load_after"] = _loadavg()
    rows["time"] = _dt.datetime.now().isoformat(timespec="seconds")
    res = load(out)
    res["overhead"].append(rows)
    _save(out, res)


def run_throughput(args: argparse.Namespace, out: Path) -> None:
    trainers = {
        "otgen": lambda t, m: train_otgen(t, m, args.tp_steps, 0, args.sb_sigma),
        "otgen-sync": lambda t, m: train_otgen_sync(t, m, args.tp_steps, 0, args.sb_sigma),
        "otgen-emd": lambda t, m: train_otgen_emd(t, m, args.tp_steps, 0, args.sb_sigma),
        "torchcfm": lambda t, m: train_torchcfm(t, m, args.tp_steps, 0, args.sb_sigma,
                                                args.sb_ot),
    }
    for rep in range(args.tp_reps):
        for task in args.tasks:
            for method in args.methods:
                for nth in args.tp_threads:
                    for lib in args.tp_libs:
                        torch.set_num_threads(nth)
                        load0 = _loadavg()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            _, secs, _ = trainers[lib](task, method)
                        rec = {"task": task, "method": method, "lib": lib, "threads": nth,
                               "rep": rep, "steps": args.tp_steps,
                               "steps_per_s": args.tp_steps / secs,
                               "cpu_ms_per_step": 1e3 * LAST_CPU[0] / args.tp_steps,
                               "load_before": load0,
                               "load_after": _loadavg()}
                        print(f"# throughput rep {rep} {task} {method} threads {nth} "
                              f"{lib:10s} {rec['steps_per_s']:7.1f} steps/s  "
                              f"CPU {rec['cpu_ms_per_step']:.2f} ms/step  "
                              f"load {rec['load_after']}", flush=True)
                        res = load(out)
                        res["throughput"].append(rec)
                        _save(out, res)
    torch.set_num_threads(args.threads)


def run_cpu_breakdown(args: argparse.Namespace, out: Path) -> None:
    """Thread-CPU milliseconds of the pieces of one OT-CFM step (robust to other load):
    the model step (I-CFM objective: sampling the path, forward, backward, Adam) of each
    library, and each library's exact-OT coupling (otgen: ExactOTCoupling with scipy LSA
    and with the network simplex; TorchCFM: ot_sampler.sample_plan)."""
    from torchcfm.optimal_transport import OTPlanSampler

    import otgen.ot.exact as exact

    torch.set_num_threads(1)
    rows: dict[str, Any] = {"load_before": _loadavg(), "n": args.oh_batches}
    for task in args.tasks:
        source, data = _samplers(task)
        g = torch.Generator().manual_seed(11)
        torch.manual_seed(0)
        om = MLPVectorField(2, hidden=HIDDEN, depth=DEPTH, activation="selu")
        oo = torch.optim.Adam(om.parameters(), lr=LR)
        matcher = make_matcher("cfm", sigma=0.0)
        tm = _tcfm_model(0)
        to = torch.optim.Adam(tm.parameters(), lr=LR)
        tfm = _tcfm_matcher("cfm", 1.0, "exact")
        coupling, sampler = ExactOTCoupling(), OTPlanSampler(method="exact")
        acc: dict[str, list[float]] = {k: [] for k in (
            "otgen_model_step", "torchcfm_model_step", "otgen_coupling_lsa",
            "otgen_coupling_emd", "torchcfm_sample_plan", "draw_batches")}
        saved = exact.prefer_assignment
        for i in range(args.oh_batches + 10):
            c = [time.thread_time()]
            x0, x1 = source(BATCH, g), data(BATCH, g)
            c.append(time.thread_time())
            loss = matcher.loss(om, x0, x1, generator=g)
            oo.zero_grad(set_to_none=True)
            loss.backward()
            oo.step()
            c.append(time.thread_time())
            to.zero_grad()
            t, xt, ut = tfm.sample_location_and_conditional_flow(x0, x1)
            lt = torch.mean((tm(torch.cat([xt, t[:, None]], dim=-1)) - ut) ** 2)
            lt.backward()
            to.step()
            c.append(time.thread_time())
            coupling(x0, x1)
            c.append(time.thread_time())
            exact.prefer_assignment = lambda n, d: False
            try:
                coupling(x0, x1)
            finally:
                exact.prefer_assignment = saved
            c.append(time.thread_time())
            sampler.sample_plan(x0, x1)
            c.append(time.thread_time())
            if i >= 10:
                for k, a, b in (("draw_batches", 0, 1), ("otgen_model_step", 1, 2),
                                ("torchcfm_model_step", 2, 3), ("otgen_coupling_lsa", 3, 4),
                                ("otgen_coupling_emd", 4, 5), ("torchcfm_sample_plan", 5, 6)):
                    acc[k].append(c[b] - c[a])
        rows[task] = {k: 1e3 * median(v) for k, v in acc.items()}
        print(f"# cpu breakdown {task} (ms): "
              + ", ".join(f"{k} {v:.3f}" for k, v in rows[task].items()), flush=True)
    rows["load_after"] = _loadavg()
    res = load(out)
    res.setdefault("cpu_breakdown", []).append(rows)
    _save(out, res)


# --------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1k steps, seed 0, moons, otcfm")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--libs", nargs="+", default=list(LIBS),
                   choices=[v + e for v in (*LIBS, "otgen-sync", "torchcfm-perm")
                            for e in ("", "+ema")],
                   help="LIB+ema: the same loop, evaluating the EMA of the weights (decay "
                   "--ema); torchcfm-perm (OT-CFM diagnostic): TorchCFM with its plan sampled "
                   "without replacement, i.e. a permutation like otgen's coupling")
    p.add_argument("--ema", type=float, default=0.999,
                   help="EMA decay of the evaluated weights for the LIB+ema variants, the same "
                   "rule for every library (otgen's: min(ema, (1+k)/(10+k)))")
    p.add_argument("--eval-draws", type=int, default=10,
                   help="independent 2000-vs-2000 evaluation draws per model for the W2 "
                   "mean (draw 0 is the single-draw W2)")
    p.add_argument("--save-models", type=Path, default=None,
                   help="directory for the trained weights (state_dict per run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the grid")
    p.add_argument("--sb-sigma", type=float, default=1.0)
    p.add_argument("--sb-ot", default="sinkhorn", choices=["sinkhorn", "exact"],
                   help="TorchCFM SB-CFM plan (its default is exact)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "otgen_fm.json")
    p.add_argument("--resume", action="store_true", help="skip runs already in --out")
    p.add_argument("--no-grid", action="store_true")
    p.add_argument("--overhead", action="store_true")
    p.add_argument("--oh-batches", type=int, default=300)
    p.add_argument("--cpu-breakdown", action="store_true",
                   help="thread-CPU ms of model step and couplings (OT-CFM pieces)")
    p.add_argument("--throughput", action="store_true")
    p.add_argument("--tp-steps", type=int, default=2000)
    p.add_argument("--tp-reps", type=int, default=3)
    p.add_argument("--tp-libs", nargs="+", default=["torchcfm", "otgen", "otgen-sync"],
                   choices=["torchcfm", "otgen", "otgen-sync", "otgen-emd"])
    p.add_argument("--tp-threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--report", action="store_true", help="only print the tables")
    p.add_argument("--merge", type=Path, nargs="*", default=[],
                   help="more JSON files to include in the printed tables")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.tasks, args.methods = 1000, [0], ["moons"], ["otcfm"]
        args.tp_steps, args.tp_reps, args.oh_batches = 300, 1, 50
    print(f"# {_dt.datetime.now().isoformat(timespec='seconds')}  load {_loadavg()}  "
          f"torch {torch.__version__}  threads {args.threads}  out {args.out}", flush=True)
    if not args.report:
        if not args.no_grid:
            run_grid(args, args.out)
        if args.overhead:
            run_overhead(args, args.out)
        if args.cpu_breakdown:
            run_cpu_breakdown(args, args.out)
        if args.throughput:
            run_throughput(args, args.out)
    print(report([args.out, *args.merge], steps=None))


if __name__ == "__main__":
    main()
