#!/usr/bin/env python
"""Benchmark of otgen's static OT layer against POT and GeomLoss, in one process.

Every solver gets the *same* tensors (uniform weights, ``x ~ U[0,1]^d``,
``y ~ U[0,1]^d + 0.1``, seeded) and, for the entropic solvers, the *same absolute* ε
(``ε = rel * mean(C)``, ``C = |x - y|^2``, rel in {5 %, 0.5 %}). Every returned plan is
scored the same way, in float64, against a float64 cost matrix:

* marginal error ``||P 1 - a||_1 + ||P^T 1 - b||_1``;
* transport cost ``<C, P>`` (the same quantity in every library, whatever the entropic
  convention; for the squared Euclidean cost it is W2^2 for an exact plan);
* accuracy ``|<C, P> - W2^2_exact| / W2^2_exact`` where POT's ``ot.emd`` is run;
* failure: a non-finite plan or a plan whose mass is off by more than 0.5.

Solvers and how they are made comparable (see benchmarks/README.md and RESULTS.md):

* ``otgen-sinkhorn``: ``otgen.ot.solve(x, y, method="sinkhorn", eps=eps, tol=TOL)``
  (TOL = 1e-3, the L1 marginal error above).
* ``pot-sinkhorn`` / ``pot-sinkhorn-log``: ``ot.sinkhorn(a, b, ot.dist(x, y), eps,
  method="sinkhorn" | "sinkhorn_log")`` on the torch tensors. POT's ``stopThr`` bounds the
  *L2* norm of the column-marginal violation (rows are exact after its last update), so
  ``stopThr = TOL / sqrt(m)`` guarantees the same L1 error ``<= TOL``. ``numItermax`` is
  chosen from a 1- and 11-iteration probe so that one run takes at most ``--time-cap`` seconds;
  a run stopped by that cap is marked ``capped`` and its time to reach ``stopThr`` is
  extrapolated from the observed linear rate of POT's own error log over its last 20
  iterations (marked ``~``; "no est." when that rate is not below 1).
  POT regularises with the entropy ``H(P)``; for fixed marginals ``-H(P)`` and
  ``KL(P | a b^T)`` differ by a constant, so the plans are the same as otgen's.
* ``geomloss``: ``SamplesLoss("sinkhorn", p=2, blur=sqrt(eps / 2), scaling=0.5,
  debias=False, backend="tensorized", potentials=True)``. GeomLoss uses the cost
  ``|x - y|^2 / 2`` and ``eps' = blur^2``; ``C'/eps' = C/eps`` needs ``blur = sqrt(eps/2)``
  (checked by ``--check-geomloss``). Its plan is rebuilt (untimed) from its potentials as
  ``P = a b exp((F + G - C/2) / (eps/2))``. GeomLoss has no stopping tolerance: it runs a
  fixed ε-scaling schedule, so its marginal error is whatever that schedule gives.
* ``otgen-exact`` / ``pot-emd``: ``solve(x, y, method="exact")`` and
  ``ot.emd(a, b, ot.dist(x, y), numItermax=10**8)`` (time includes ``ot.dist``).

Each timed call includes building the cost matrix. Times are medians over ``--repeats``
runs after one untimed warm-up of every solver at n = 200; a run longer than
``--long-run`` seconds is not repeated.

Usage::

    python benchmarks/ot_solvers.py --quick
    python benchmarks/ot_solvers.py --sizes 1000 5000 10000 --dims 2 64 --repeats 3 \
        --out results.json
    python benchmarks/ot_solvers.py --large        # 50 000 x 50 000 online Sinkhorn only
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

TOL = 1e-3
SHIFT = 0.1
RELS = (0.05, 0.005)


# ----------------------------------------------------------------------------- problems
def make_problem(n: int, d: int, seed: int, dtype: torch.dtype) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed + 7919 * n + 31 * d)
    x64 = torch.rand(n, d, generator=gen, dtype=torch.float64)
    y64 = torch.rand(n, d, generator=gen, dtype=torch.float64) + SHIFT
    x, y = x64.to(dtype), y64.to(dtype)
    a = torch.full((n,), 1.0 / n, dtype=dtype)
    b = torch.full((n,), 1.0 / n, dtype=dtype)
    return dict(n=n, d=d, x=x, y=y, a=a, b=b, x64=x.double(), y64=y.double())


def cost64(prob: dict[str, Any]) -> torch.Tensor:
    """Float64 |x - y|^2 of the (rounded) benchmark points, for scoring only."""
    if "C64" not in prob:
        x, y = prob["x64"], prob["y64"]
        prob["C64"] = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square_() \
            if x.shape[0] * y.shape[0] * x.shape[1] <= 2e8 else _sq64(x, y)
        prob["mean_cost"] = float(prob["C64"].mean())
    return prob["C64"]


def _sq64(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xc, yc = x - y.mean(0), y - y.mean(0)  # centred expansion, float64: error ~1e-16 * |x|^2
    return ((xc * xc).sum(1)[:, None] + (yc * yc).sum(1)[None, :] - 2.0 * xc @ yc.T).clamp_min_(0)


def score(prob: dict[str, Any], plan: torch.Tensor, *, tol: float) -> dict[str, Any]:
    C = cost64(prob)
    P = plan.detach().to(torch.float64)
    out: dict[str, Any] = {}
    finite = bool(torch.isfinite(P).all())
    mass = float(P.sum()) if finite else float("nan")
    if finite:
        a, b = prob["a"].double(), prob["b"].double()
        out["err"] = float((P.sum(1) - a).abs().sum() + (P.sum(0) - b).abs().sum())
        out["cost"] = float((P * C).sum())
    else:
        out["err"], out["cost"] = float("nan"), float("nan")
    out["mass"] = mass
    out["failed"] = (not finite) or abs(mass - 1.0) > 0.5
    out["converged"] = (not out["failed"]) and out["err"] <= tol
    return out


# ------------------------------------------------------------------------------ solvers
def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_otgen_sinkhorn(prob, eps, tol, multiscale=None, **_):
    from otgen.ot import solve

    def call():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            res = solve(prob["x"], prob["y"], method="sinkhorn", eps=eps, tol=tol,
                        progress=False, multiscale=multiscale)
        return res, [str(x.message)[:120] for x in w]

    def finish(out):
        res, warns = out
        return res.plan, dict(n_iter=res.n_iter, self_converged=res.converged,
                              self_err=res.marginal_error, warnings=warns,
                              engine=res.method)
    return call, finish


def run_otgen_exact(prob, tol, **_):
    from otgen.ot import solve

    def call():
        return solve(prob["x"], prob["y"], method="exact")

    def finish(res):
        return res.plan, dict(self_converged=res.converged)
    return call, finish


def run_pot_emd(prob, **_):
    import ot

    def call():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            M = ot.dist(prob["x"], prob["y"])
            P, log = ot.emd(prob["a"], prob["b"], M, numItermax=10**8, log=True)
        return P, log, [str(x.message)[:120] for x in w]

    def finish(out):
        P, log, warns = out
        return P, dict(result_code=int(log.get("result_code", -1)),
                       self_converged=int(log.get("result_code", -1)) == 1, warnings=warns)
    return call, finish


def run_pot_emd_samecost(prob, **_):
    """``ot.emd`` on otgen's own float32 cost matrix (built inside the timing): separates
    the wrapper's overhead from the network simplex's sensitivity to the rounding of C."""
    import ot

    from otgen.ot.costs import SqEuclidean

    def call():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with torch.no_grad():
                M = SqEuclidean()(prob["x"], prob["y"])
            P, log = ot.emd(prob["a"], prob["b"], M, numItermax=10**8, log=True)
        return P, log, [str(x.message)[:120] for x in w]

    def finish(out):
        P, log, warns = out
        return P, dict(result_code=int(log.get("result_code", -1)),
                       self_converged=int(log.get("result_code", -1)) == 1, warnings=warns)
    return call, finish


def _pot_sinkhorn_factory(method: str):
    def factory(prob, eps, tol, time_cap, **_):
        import ot

        m = prob["y"].shape[0]
        stop = tol / math.sqrt(m)  # ||e||_1 <= sqrt(m) ||e||_2

        def solve_k(k: int):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                M = ot.dist(prob["x"], prob["y"])
                P, log = ot.sinkhorn(prob["a"], prob["b"], M, eps, method=method,
                                     numItermax=k, stopThr=stop, log=True, warn=True)
            return P, log, [str(x.message)[:120] for x in w]

        # probe: setup (+ 1 iteration) from a 1-iteration run, time per iteration from the
        # difference with an 11-iteration run (floored against timer noise at a fifth of
        # the 11-iteration average); the cap leaves room for the setup
        t1, _ = _timed(lambda: solve_k(1))
        t11, _ = _timed(lambda: solve_k(11))
        per_it = max((t11 - t1) / 10.0, t11 / 55.0)
        k = int(min(100_000, max(11, (time_cap - t1) / per_it)))
        k = 10 * (k // 10) + 1  # POT checks its error when ii % 10 == 0: end on a check

        def call():
            return solve_k(k)

        def finish(out):
            P, log, warns = out
            errs = [float(e) for e in log["err"]]
            niter = int(log["niter"]) + 1
            numerr = any("numerical errors" in s for s in warns)
            reached = bool(errs) and errs[-1] < stop
            info = dict(n_iter=niter, numItermax=k, stopThr=stop, pot_err_l2=errs[-1] if errs
                        else float("nan"), probe_s_per_iter=per_it, probe_setup_s=t1,
                        warnings=warns[:3],
                        numerical_errors=numerr, self_converged=reached and not numerr)
            info["capped"] = (not reached) and (not numerr) and niter >= k
            if info["capped"]:
                info.update(_extrapolate(errs, stop, niter))
            return P, info
        return call, finish
    return factory


def _extrapolate(errs: list[float], stop: float, niter: int) -> dict[str, Any]:
    """Iterations POT would need to reach ``stop``, from the linear rate of its error log
    (one entry every 10 iterations) over the last 20 iterations."""
    if len(errs) < 3 or not all(math.isfinite(e) and e > 0 for e in errs[-3:]):
        return dict(extrapolated=False)
    rate10 = math.sqrt(errs[-1] / errs[-3])  # per 10 iterations
    if rate10 >= 0.9999:
        return dict(extrapolated=False, rate_per_10=rate10)
    extra = 10.0 * math.log(stop / errs[-1]) / math.log(rate10)
    return dict(extrapolated=True, rate_per_10=rate10, est_iters=niter + max(0.0, extra))


def run_geomloss(prob, eps, scaling, **_):
    from geomloss import SamplesLoss
    from geomloss._legacy.sinkhorn_divergence import scaling_parameters

    blur = math.sqrt(eps / 2.0)
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=False,
                       backend="tensorized", potentials=True)
    n_iter = len(scaling_parameters(prob["x"], prob["y"], 2, blur, None, None, scaling)[2])

    def call():
        return loss(prob["a"], prob["x"], prob["b"], prob["y"])

    def finish(out):
        F, G = (t.reshape(-1).double() for t in out)
        C = cost64(prob)
        a, b = prob["a"].double(), prob["b"].double()
        P = ((F[:, None] + G[None, :] - C / 2.0) / (eps / 2.0)).exp_()
        P.mul_(a[:, None]).mul_(b[None, :])
        return P, dict(n_iter=n_iter + 1, blur=blur, scaling=scaling)
    return call, finish


def _timed_group(entries: list[tuple[str, Callable, dict[str, Any]]], prob: dict[str, Any],
                 repeats: int, long_run: float, tol: float) -> dict[str, dict[str, Any]]:
    """Time several solvers on one problem, round-robin (repeat r of every solver before
    repeat r + 1 of any), so that load drifts on the machine hit all of them alike.

    Returns per solver: median time of its repeats, the first call's scores and info. A
    solver whose call takes longer than ``long_run`` seconds is not repeated.
    """
    state: dict[str, dict[str, Any]] = {}
    for name, factory, kw in entries:
        st: dict[str, Any] = dict(rec={}, times=[], active=True)
        try:
            st["call"], st["finish"] = factory(prob, tol=tol, **kw)
        except Exception as exc:  # a crashed peer is a result, not the end of the benchmark
            st["active"] = False
            st["rec"].update(_crash(exc))
        state[name] = st
    for r in range(repeats):
        for st in state.values():
            if not st["active"]:
                continue
            try:
                t, out = _timed(st["call"])
                st["times"].append(t)
                if r == 0:
                    plan, info = st["finish"](out)
                    st["rec"].update(info)
                    st["rec"].update(score(prob, plan, tol=tol))
                    del plan
                del out
            except Exception as exc:
                st["active"] = False
                st["rec"].update(_crash(exc))
                continue
            if t > long_run:
                st["active"] = False
    out_recs = {}
    for name, st in state.items():
        rec = st["rec"]
        rec["times"] = st["times"]
        rec["time"] = statistics.median(st["times"]) if st["times"] else float("nan")
        rec["time_min"] = min(st["times"]) if st["times"] else float("nan")
        if rec.get("capped") and rec.get("extrapolated"):
            # setup (from the probe) + measured time per iteration x iterations needed
            setup = min(rec.get("probe_setup_s", 0.0), rec["time"])
            rec["time_est"] = setup + (rec["time"] - setup) * rec["est_iters"] / rec["n_iter"]
        out_recs[name] = rec
    return out_recs


def _crash(exc: BaseException) -> dict[str, Any]:
    return dict(failed=True, converged=False, error=f"{type(exc).__name__}: {exc}"[:200],
                err=float("nan"), cost=float("nan"))


SINKHORN_SOLVERS: dict[str, Callable] = {
    "otgen-sinkhorn": run_otgen_sinkhorn,
    # the same solver with the multiscale engine off (dense kernel-domain engine only)
    "otgen-dense": lambda prob, eps, tol, **kw: run_otgen_sinkhorn(
        prob, eps, tol, multiscale=False, **kw),
    "pot-sinkhorn": _pot_sinkhorn_factory("sinkhorn"),
    "pot-sinkhorn-log": _pot_sinkhorn_factory("sinkhorn_log"),
}
EXACT_SOLVERS: dict[str, Callable] = {"otgen-exact": run_otgen_exact, "pot-emd": run_pot_emd,
                                      "pot-emd-samecost": run_pot_emd_samecost}


# ------------------------------------------------------------------------------ printing
def _fmt_time(rec: dict[str, Any]) -> str:
    if not rec.get("times"):
        return "crash"
    s = f"{rec['time']:.3f}"
    if rec.get("capped"):
        s = f">{s}" + (f" (~{rec['time_est']:.1f})" if "time_est" in rec else " (no est.)")
    return s


def _status(rec: dict[str, Any]) -> str:
    if "error" in rec:
        return "CRASH"
    if rec.get("failed"):
        return "FAIL"
    if rec.get("capped"):
        return "capped"
    if rec.get("numerical_errors"):
        return "numerr"
    return "ok" if rec.get("converged") else "not-conv"


def _eff_time(rec: dict[str, Any]) -> float:
    return rec.get("time_est", rec.get("time", float("nan")))


HEADER = (f"{'n':>6} {'d':>3} {'rel':>6} {'eps':>9} {'solver':<18} {'time_s':>18} {'iters':>6} "
          f"{'L1 err':>9} {'status':>8} {'<C,P>':>11} {'rel.acc':>9} {'otgen/peer':>10}")


def print_row(r: dict[str, Any], ratio: str = "") -> None:
    acc = f"{r['acc']:.2e}" if r.get("acc") is not None else "-"
    eps = f"{r['eps']:.3e}" if r.get("eps") else "-"
    rel = f"{r['rel']:.3f}" if r.get("rel") else "exact"
    it = r.get("n_iter")
    print(f"{r['n']:>6} {r['d']:>3} {rel:>6} {eps:>9} {r['solver']:<18} {_fmt_time(r):>18} "
          f"{'-' if it is None else it:>6} {r.get('err', float('nan')):>9.2e} {_status(r):>8} "
          f"{r.get('cost', float('nan')):>11.5e} {acc:>9} {ratio:>10}", flush=True)


def ratio_str(otgen: dict[str, Any], peer: dict[str, Any]) -> str:
    if not otgen.get("times") or not peer.get("times"):
        return "-"
    q = otgen["time"] / _eff_time(peer)
    if peer.get("capped") and "time_est" not in peer:
        return f"<{q:.2f}"
    return ("~" if "time_est" in peer else "") + f"{q:.2f}"


# ---------------------------------------------------------------------------- benchmark
def sinkhorn_entries(eps: float, args: argparse.Namespace) -> list[tuple[str, Callable, dict]]:
    entries = [(name, fac, dict(eps=eps, time_cap=args.time_cap))
               for name, fac in SINKHORN_SOLVERS.items()]
    entries += [(f"geomloss-s{s:g}", run_geomloss, dict(eps=eps, scaling=s))
                for s in args.geomloss_scaling]
    return [e for e in entries if _wanted(e[0], args)]


def _wanted(name: str, args: argparse.Namespace) -> bool:
    """``--solvers`` filter (``otgen-sinkhorn`` and ``otgen-exact`` always run: the ratios
    are taken against them)."""
    keep = getattr(args, "solvers", None)
    return not keep or name in ("otgen-sinkhorn", "otgen-exact") or any(
        name.startswith(k) for k in keep)


def warm_up(args: argparse.Namespace, dtype: torch.dtype) -> None:
    prob = make_problem(200, 2, 0, dtype)
    cost64(prob)
    _timed_group(sinkhorn_entries(0.05 * prob["mean_cost"], args), prob, 1, 1e9, args.tol)
    _timed_group([(k, f, {}) for k, f in EXACT_SOLVERS.items()], prob, 1, 1e9, args.tol)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    dtype = getattr(torch, args.dtype)
    records: list[dict[str, Any]] = []
    print("warm-up (n = 200, every solver once) ...", flush=True)
    warm_up(args, dtype)
    print(HEADER)
    main_cfg = [(n, d) for d in args.dims for n in args.sizes]
    configs = list(main_cfg)
    if args.exact_target and (2000, 2) not in configs:
        configs.append((2000, 2))
    for n, d in configs:
        prob = make_problem(n, d, args.seed, dtype)
        cost64(prob)
        mc = prob["mean_cost"]
        w2 = None
        base = dict(n=n, d=d, dtype=args.dtype, mean_cost=mc)
        # exact solvers (independent of eps)
        if n <= (args.exact_max_n if d <= 2 else args.exact_max_n_hd):
            reps = max(args.repeats, args.exact_target_repeats) if (n, d) == (2000, 2) \
                else args.repeats
            load = _load()
            ex = _timed_group([(k, f, {}) for k, f in EXACT_SOLVERS.items()
                               if _wanted(k, args)], prob, reps,
                              args.long_run, args.tol)
            w2 = ex["pot-emd"].get("cost") if "pot-emd" in ex else ex["otgen-exact"].get("cost")
            for name in ex:
                ex[name] = dict(base, solver=name, rel=None, eps=None, load=load, **ex[name])
                rec = ex[name]
                rec["w2_exact"] = w2
                rec["acc"] = abs(rec["cost"] - w2) / w2 if (w2 and math.isfinite(
                    rec.get("cost", float("nan")))) else None
            ex["otgen-exact"]["ratio_vs"] = {}
            for name, rec in ex.items():
                if name != "otgen-exact":
                    rec["ratio_str"] = ratio_str(ex["otgen-exact"], rec)
                    ex["otgen-exact"]["ratio_vs"][name] = rec["ratio_str"]
                print_row(rec, rec.get("ratio_str", ""))
            records += ex.values()
        if (n, d) not in main_cfg or args.exact_only:
            del prob
            continue
        for rel in args.rels:
            eps = rel * mc
            load = _load()
            rows = _timed_group(sinkhorn_entries(eps, args), prob, args.repeats,
                                args.long_run, args.tol)
            for name in rows:
                rows[name] = dict(base, solver=name, rel=rel, eps=eps, load=load, **rows[name])
            og = rows["otgen-sinkhorn"]
            og["ratio_vs"] = {}
            for name, rec in rows.items():
                rec["w2_exact"] = w2
                rec["acc"] = abs(rec["cost"] - w2) / w2 if (w2 and math.isfinite(
                    rec.get("cost", float("nan")))) else None
                if name != "otgen-sinkhorn":
                    rs = ratio_str(og, rec)
                    og["ratio_vs"][name] = rs
                    rec["ratio_str"] = rs
            for rec in rows.values():
                print_row(rec, rec.get("ratio_str", ""))
            records += rows.values()
        del prob
        gc.collect()
    return dict(records=records)


def _load() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _cpu_times() -> list[int] | None:
    """Aggregate /proc/stat jiffies (user nice system idle iowait irq softirq steal)."""
    try:
        with open("/proc/stat") as fh:
            return [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- large mode
def large_child(n: int, d: int, rel: float, tol: float, dtype_name: str, seed: int) -> None:
    """Runs in a fresh process: online Sinkhorn at n = m, prints one JSON line."""
    from otgen.ot import solve

    dtype = getattr(torch, dtype_name)
    prob = make_problem(n, d, seed, dtype)
    x, y = prob["x"], prob["y"]
    # mean |x_i - y_j|^2 = mean|x|^2 + mean|y|^2 - 2 xbar . ybar (exact, float64)
    x64, y64 = prob.pop("x64"), prob.pop("y64")
    mc = float((x64 * x64).sum(1).mean() + (y64 * y64).sum(1).mean()
               - 2.0 * x64.mean(0) @ y64.mean(0))
    del x64, y64
    eps = rel * mc
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = solve(x, y, method="sinkhorn", eps=eps, tol=tol, online=True, progress=False)
    wall = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # independent check of both marginals, blockwise (after the RSS reading)
    f, g = res.f.double(), res.g.double()
    row = torch.zeros(n, dtype=torch.float64)
    col = torch.zeros(n, dtype=torch.float64)
    la = math.log(1.0 / n)
    xd, yd = x.double(), y.double()
    for s in range(0, n, 500):
        c = _sq64(xd[s:s + 500], yd)
        p = ((f[s:s + 500, None] + g[None, :] - c) / eps + 2 * la).exp_()
        row[s:s + 500] = p.sum(1)
        col += p.sum(0)
    err = float((row - 1.0 / n).abs().sum() + (col - 1.0 / n).abs().sum())
    print(json.dumps(dict(
        threads=torch.get_num_threads(), n=n, d=d, rel=rel, eps=eps, mean_cost=mc, tol=tol,
        dtype=dtype_name,
        method=res.method, wall_s=wall, n_iter=res.n_iter, self_converged=res.converged,
        self_err=res.marginal_error, err=err, cost=float(res.cost),
        maxrss_before_solve_mib=rss0 / 1024, maxrss_peak_mib=rss1 / 1024,
        warnings=[str(x.message)[:160] for x in w])), flush=True)


def run_large(args: argparse.Namespace) -> dict[str, Any]:
    n = args.large_n
    print(f"large: online Sinkhorn n = m = {n}, d = 2, eps = 5 % mean cost, tol = {args.tol} "
          "(fresh subprocess) ...", flush=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--_large-child", str(n), "2", "0.05",
           str(args.tol), args.dtype, str(args.seed), str(args.threads or 0)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        return dict(error=proc.stderr[-2000:], returncode=proc.returncode)
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["subprocess_total_s"] = total
    print(f"  wall {rec['wall_s']:.1f} s, {rec['n_iter']} iterations, L1 marginal error "
          f"{rec['err']:.2e} (otgen reports {rec['self_err']:.2e}), <C,P> = {rec['cost']:.5e}, "
          f"peak RSS {rec['maxrss_peak_mib']:.0f} MiB (before solve "
          f"{rec['maxrss_before_solve_mib']:.0f} MiB)", flush=True)
    return rec


# ---------------------------------------------------------------------------- targets
def targets(records: list[dict[str, Any]], large: dict[str, Any] | None,
            dtype: str) -> list[dict[str, Any]]:
    def find(solver, n, d, rel):
        for r in records:
            if r["solver"] == solver and r["n"] == n and r["d"] == d and r["rel"] == rel:
                return r
        return None

    out = []
    r = find("otgen-sinkhorn", 10000, 2, 0.005)
    t = dict(name="(1) n=1e4, d=2, eps=0.5% mean cost, float32: otgen converges "
                  "(L1 <= 1e-3), no failure, <= 2 s")
    if r is None or dtype != "float32":
        t.update(verdict="NOT RUN")
    else:
        ok = r.get("converged") and not r.get("failed") and r["time"] <= 2.0
        t.update(verdict="PASS" if ok else "FAIL",
                 detail=f"{r['time']:.3f} s, L1 err {r['err']:.2e}, {r.get('n_iter')} its")
    out.append(t)

    r, p = find("otgen-sinkhorn", 5000, 2, 0.05), find("pot-sinkhorn", 5000, 2, 0.05)
    t = dict(name="(2) n=5000, d=2, eps=5%: otgen no slower than POT plain sinkhorn (torch)")
    if r is None or p is None:
        t.update(verdict="NOT RUN")
    else:
        q = r["time"] / _eff_time(p)
        t.update(verdict="PASS" if q <= 1.0 and r.get("converged") else "FAIL",
                 detail=f"otgen {r['time']:.3f} s vs POT {_fmt_time(p)} s "
                        f"(ratio {q:.2f}; POT status {_status(p)})")
    out.append(t)

    t = dict(name="(3) n=m=50000, d=2, online Sinkhorn completes with peak RSS < 2 GiB")
    if not large or large.get("n", 50000) != 50000:
        t.update(verdict="NOT RUN" if not large else f"NOT RUN (n = {large['n']})")
    elif "error" in large:
        t.update(verdict="FAIL", detail="crashed")
    else:
        ok = large["maxrss_peak_mib"] < 2048 and large["err"] <= 1e-2
        t.update(verdict="PASS" if ok else "FAIL",
                 detail=f"peak RSS {large['maxrss_peak_mib']:.0f} MiB, {large['wall_s']:.1f} s, "
                        f"L1 err {large['err']:.2e}")
    out.append(t)

    r, p = find("otgen-exact", 2000, 2, None), find("pot-emd", 2000, 2, None)
    t = dict(name="(4) exact, uniform 2-D, n=2000: otgen within 1.1x of ot.emd")
    if r is None or p is None:
        t.update(verdict="NOT RUN")
    else:
        q = r["time"] / p["time"]
        same = abs(r["cost"] - p["cost"]) <= 1e-6 * abs(p["cost"])
        sc = find("pot-emd-samecost", 2000, 2, None)
        extra = (f"; ot.emd on otgen's own cost matrix {sc['time']:.3f} s (ratio "
                 f"{r['time'] / sc['time']:.2f})") if sc and sc.get("times") else ""
        if "time_min" in r and "time_min" in p:
            extra += (f"; fastest of {len(r['times'])} runs: otgen {r['time_min']:.3f} s, ot.emd "
                      f"{p['time_min']:.3f} s (ratio {r['time_min'] / p['time_min']:.2f})")
        t.update(verdict="PASS" if q <= 1.1 and same else "FAIL",
                 detail=f"otgen {r['time']:.3f} s vs ot.emd {p['time']:.3f} s (ratio {q:.2f}), "
                        f"same cost: {same}{extra}")
    out.append(t)
    return out


# ---------------------------------------------------------------------------- markdown
def markdown(path: str) -> str:
    """Markdown tables of a ``--out`` JSON file (for RESULTS.md)."""
    with open(path) as fh:
        res = json.load(fh)
    info, lines = res["info"], []
    share = info.get("cpu_share_during_run", {})
    lines.append(f"Run {info['date']} (otgen {info.get('otgen', '?')}), "
                 f"`{' '.join(info['argv'])}`; torch threads {info['torch_threads']}; "
                 f"load avg at start {_fmt_load(info.get('loadavg_start'))}, "
                 f"at end {_fmt_load(info.get('loadavg_end'))}; machine CPU busy "
                 f"{100 * share.get('busy', float('nan')):.0f} %, "
                 f"steal {100 * share.get('steal', float('nan')):.1f} %.")
    lines.append("")
    recs = res.get("records", [])
    if recs:
        lines.append("| n | d | ε (rel) | solver | time s | iters | L1 err | status | <C,P> "
                     "| rel. err vs W2² | otgen / peer |")
        lines.append("|---:|---:|---|---|---:|---:|---:|---|---:|---:|---:|")
        for r in recs:
            rel = "exact" if r.get("rel") is None else f"{r['eps']:.3g} ({100 * r['rel']:g} %)"
            acc = "-" if r.get("acc") is None else f"{r['acc']:.1e}"
            it = r.get("n_iter")
            err = r.get("err", float("nan"))
            lines.append(
                f"| {r['n']} | {r['d']} | {rel} | {r['solver']} | {_fmt_time(r)} | "
                f"{'-' if it is None else it} | {err:.1e} | {_status(r)} | "
                f"{r.get('cost', float('nan')):.5g} | {acc} | {r.get('ratio_str', '')} |")
        lines.append("")
    lg = res.get("large")
    if lg and "error" not in lg:
        lines.append(f"Large: n = m = {lg['n']}, d = {lg['d']}, ε = {lg['eps']:.4g} (5 % of mean "
                     f"cost {lg['mean_cost']:.4g}), tol {lg['tol']}, {lg['dtype']}, threads "
                     f"{lg.get('threads')}: engine `{lg['method']}`, wall {lg['wall_s']:.1f} s, "
                     f"{lg['n_iter']} iterations, L1 marginal error {lg['err']:.2e} (otgen: "
                     f"{lg['self_err']:.2e}, converged={lg['self_converged']}), <C,P> = "
                     f"{lg['cost']:.5g}, peak RSS {lg['maxrss_peak_mib']:.0f} MiB (RSS before "
                     f"the solve {lg['maxrss_before_solve_mib']:.0f} MiB).")
        lines.append("")
    for t in res.get("targets", []):
        lines.append(f"* **{t['verdict']}** {t['name']}" + (f" — {t['detail']}" if "detail" in t
                                                             else ""))
    return "\n".join(lines)


def _fmt_load(load: Any) -> str:
    return "-" if not load else "/".join(f"{v:.2f}" for v in load)


# ---------------------------------------------------------------------------- geomloss check
def check_geomloss() -> None:
    """Numerical check of the GeomLoss <-> otgen/POT convention mapping (float64)."""
    import ot
    from geomloss import SamplesLoss

    from otgen.ot import solve

    prob = make_problem(300, 2, 0, torch.float64)
    C = cost64(prob)
    x, y, a, b = prob["x"], prob["y"], prob["a"], prob["b"]
    for rel in RELS:
        eps = rel * prob["mean_cost"]
        r = solve(x, y, method="sinkhorn", eps=eps, tol=1e-10)
        P_pot = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-13,
                            numItermax=100000)
        for s in (0.5, 0.99):
            loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=s,
                               debias=False, backend="tensorized", potentials=True)
            F, G = (t.reshape(-1) for t in loss(a, x, b, y))
            P = a[:, None] * b[None] * torch.exp((F[:, None] + G[None] - C / 2) / (eps / 2))
            val = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=s,
                              debias=False, backend="tensorized")(a, x, b, y)
            print(f"rel={rel} scaling={s}: <C,P> otgen {float(r.cost):.8f} POT "
                  f"{float((P_pot * C).sum()):.8f} GeomLoss {float((P * C).sum()):.8f}; "
                  f"max|P_gl - P_otgen| {float((P - r.plan).abs().max()):.1e} "
                  f"(max P {float(r.plan.max()):.1e}); GeomLoss value {float(val):.8f} vs "
                  f"otgen objective / 2 {float(r.objective) / 2:.8f}")


# ---------------------------------------------------------------------------- main
def machine_info() -> dict[str, Any]:
    import geomloss
    import numpy
    import ot
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "../src"],
                               capture_output=True, text=True).stdout.strip()
        commit += " (+ uncommitted changes under src/)" if dirty else ""
    except OSError:
        commit = "?"
    return dict(date=_dt.datetime.now().isoformat(timespec="seconds"), cpu=cpu, otgen=commit,
                cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                python=platform.python_version(), torch=torch.__version__,
                numpy=numpy.__version__, pot=ot.__version__, geomloss=geomloss.__version__,
                loadavg_start=load, argv=sys.argv)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n in {500, 1000}: smoke test")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="default 1000 5000 10000 (500 1000 with --quick)")
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 64])
    ap.add_argument("--rels", type=float, nargs="+", default=list(RELS),
                    help="eps as fractions of the mean cost")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--tol", type=float, default=TOL, help="L1 marginal tolerance")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--time-cap", type=float, default=40.0,
                    help="max seconds of one POT Sinkhorn run (longer runs are capped and "
                         "extrapolated)")
    ap.add_argument("--long-run", type=float, default=10.0,
                    help="a run longer than this is not repeated")
    ap.add_argument("--exact-max-n", type=int, default=5000, help="largest n for exact, d <= 2")
    ap.add_argument("--exact-max-n-hd", type=int, default=5000, help="same for d > 2")
    ap.add_argument("--exact-only", action="store_true", help="only the exact solvers")
    ap.add_argument("--exact-target-repeats", type=int, default=7,
                    help="repeats of the exact n=2000, d=2 comparison (target 4)")
    ap.add_argument("--no-exact-target", dest="exact_target", action="store_false",
                    help="skip the extra exact n=2000, d=2 row")
    ap.add_argument("--geomloss-scaling", type=float, nargs="+", default=[0.5])
    ap.add_argument("--solvers", nargs="+", default=None,
                    help="only solvers whose name starts with one of these (plus otgen's)")
    ap.add_argument("--large", action="store_true",
                    help="only the n=m=50000 online Sinkhorn memory/time run")
    ap.add_argument("--large-n", type=int, default=50000)
    ap.add_argument("--check-geomloss", action="store_true",
                    help="only check the GeomLoss convention mapping")
    ap.add_argument("--out", default=None, help="write all records as JSON")
    ap.add_argument("--markdown", metavar="JSON", default=None,
                    help="print the markdown tables of a --out file and exit")
    ap.add_argument("--_large-child", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._large_child:
        n, d, rel, tol, dt, seed, threads = args._large_child
        if int(threads):
            torch.set_num_threads(int(threads))
        large_child(int(n), int(d), float(rel), float(tol), dt, int(seed))
        return
    if args.check_geomloss:
        check_geomloss()
        return
    if args.markdown:
        print(markdown(args.markdown))
        return
    if args.sizes is None:
        args.sizes = [500, 1000] if args.quick else [1000, 5000, 10000]
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.time_cap = min(args.time_cap, 3.0)
        args.long_run = min(args.long_run, 2.0)
        args.exact_target_repeats = min(args.exact_target_repeats, 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu0 = _cpu_times()
    info = machine_info()
    print(f"{info['date']}  otgen {info['otgen']}  {info['cpu']}  cores={info['cores']} "
          f"torch threads={info['torch_threads']}  torch {info['torch']}  POT {info['pot']}  "
          f"GeomLoss {info['geomloss']}  load avg {info['loadavg_start']}", flush=True)
    print(f"dtype {args.dtype}, tol (L1 marginal) {args.tol}, x ~ U[0,1]^d, y ~ U[0,1]^d + "
          f"{SHIFT}, uniform weights, seed {args.seed}", flush=True)
    result: dict[str, Any] = dict(info=info, args={k: v for k, v in vars(args).items()
                                                   if not k.startswith("_")})
    records: list[dict[str, Any]] = []
    large = None
    if args.large:
        large = run_large(args)
        result["large"] = large
    else:
        result.update(bench(args))
        records = result["records"]
    result["targets"] = targets(records, large, args.dtype)
    result["info"]["loadavg_end"] = _load()
    cpu1 = _cpu_times()
    if cpu0 and cpu1:
        dt = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
        tot = sum(dt) or 1
        result["info"]["cpu_share_during_run"] = dict(busy=1 - (dt[3] + dt[4]) / tot,
                                                       steal=dt[7] / tot)
        print(f"machine CPU during the run: busy {100 * (1 - (dt[3] + dt[4]) / tot):.0f} %, "
              f"steal {100 * dt[7] / tot:.1f} %; load avg at end {result['info']['loadavg_end']}")
    print("\ntargets:")
    for t in result["targets"]:
        print(f"  [{t['verdict']}] {t['name']}" + (f": {t['detail']}" if "detail" in t else ""))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
