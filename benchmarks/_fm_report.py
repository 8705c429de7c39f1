"""Tables and target verdicts of ``benchmarks/flow_matching.py`` (read from its JSON files).

Library labels: ``otgen``, ``torchcfm`` (plain Adam iterate evaluated), ``LIB+ema`` (the
same loop, the EMA of the weights evaluated), diagnostics ``otgen-sync`` and
``torchcfm-perm``. The W2/NFE/NPE targets are judged for each comparison in
:data:`COMPARISONS` whose two labels are both present.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

#: (otgen label, TorchCFM label, what the comparison is)
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("otgen", "torchcfm", "both loops evaluate the last Adam iterate"),
    ("otgen+ema", "torchcfm", "otgen's default trainer (EMA of the weights, 0.999) vs "
     "TorchCFM's README loop"),
    ("otgen+ema", "torchcfm+ema", "both loops evaluate the same EMA of the weights"),
)
METHOD_ORDER = ("otcfm", "cfm", "sbcfm")
TASK_NAMES = ("moons", "8gaussians")


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"runs": [], "throughput": [], "overhead": [], "meta": []}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _ms(xs: list[float], nd: int = 3) -> str:
    if not xs:
        return "-"
    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.{nd}f} ± {s:.{nd}f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and math.isfinite(a) and math.isfinite(b) else "-"


def _no_worse(a: list[float], b: list[float]) -> tuple[bool, bool]:
    """(strict: mean(a) <= mean(b), within noise: mean(a) <= mean(b) + max(std))."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    sd = max(statistics.stdev(a) if len(a) > 1 else 0.0,
             statistics.stdev(b) if len(b) > 1 else 0.0)
    return ma <= mb, ma <= mb + sd


def _paired(a: list[float], b: list[float]) -> str:
    """Mean ± standard error of the per-draw differences ``a - b`` (same draws)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    if not any(d):
        return "0"
    return f"{statistics.fmean(d):+.4f} ± {statistics.stdev(d) / math.sqrt(len(d)):.4f}"


def _mean(rs: list[dict[str, Any]], k: str) -> float:
    return statistics.fmean(float(r[k]) for r in rs)


def _library_rows(task: str, method: str, st: int,
                  by_lib: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = []
    for lib in sorted(by_lib, key=lambda x: (not x.startswith("otgen"), x)):
        rs = sorted(by_lib[lib], key=lambda r: r["seed"])
        drawn = all("w2_mean" in r for r in rs)
        rows.append(
            f"| {task} | {method} | {st} | {lib} | {','.join(str(r['seed']) for r in rs)} "
            f"| {median([r['steps_per_s'] for r in rs]):.1f} "
            f"| {_ms([r['w2'] for r in rs])} "
            f"| {_ms([r['w2_mean'] for r in rs]) if drawn else '-'} "
            f"| {statistics.fmean(r['w2_std'] for r in rs) if drawn else math.nan:.3f} "
            f"| {_ms([float(r['nfe']) for r in rs], 1)} "
            f"| {_ms([float(r.get('nfe_torchdiffeq', float('nan'))) for r in rs], 1)} "
            f"| {_ms([r['npe'] for r in rs], 4)} |")
    return rows


def _compare(task: str, method: str, st: int, by_lib: dict[str, list[dict[str, Any]]],
             pair: tuple[str, str, str], ratio_lines: list[str], verdicts: list[str],
             seed_lines: list[str]) -> None:
    """Ratio row, OT-CFM verdicts and per-seed rows of ``pair[0]`` against ``pair[1]``."""
    la, lb, what = pair
    so = {r["seed"]: r for r in by_lib[la]}
    sb = {r["seed"]: r for r in by_lib[lb]}
    common = sorted(set(so) & set(sb))
    if not common:
        return
    a, b = [so[s] for s in common], [sb[s] for s in common]
    sp = median([r["steps_per_s"] for r in a]) / median([r["steps_per_s"] for r in b])
    drawn = all("w2_mean" in r for r in a + b)
    ratio_lines.append(
        f"| {task} | {method} | {st} | {la} / {lb} | {','.join(map(str, common))} "
        f"| {sp:.2f} | {_ratio(_mean(a, 'w2'), _mean(b, 'w2'))} "
        f"| {_ratio(_mean(a, 'w2_mean'), _mean(b, 'w2_mean')) if drawn else '-'} "
        f"| {_ratio(_mean(a, 'nfe'), _mean(b, 'nfe'))} "
        f"| {_ratio(_mean(a, 'npe'), _mean(b, 'npe'))} |")
    if method != "otcfm":
        return
    if (la, lb) == ("otgen", "torchcfm"):
        verdicts.append(
            f"- OT-CFM throughput ≥ 1.3× TorchCFM, {task} ({st} steps, seeds {common}, "
            f"threads {a[0].get('threads')}): ratio {sp:.2f} → "
            f"**{'PASS' if sp >= 1.3 else 'FAIL'}**")
    for k in ("w2", "w2_mean", "nfe", "npe"):
        if k == "w2_mean" and not drawn:
            continue
        strict, noisy = _no_worse([float(r[k]) for r in a], [float(r[k]) for r in b])
        verdict = "PASS" if strict else ("PASS (within seed std)" if noisy else "FAIL")
        name = {"w2": "W2 (draw 0)", "w2_mean": "W2 (mean of draws)"}.get(k, k.upper())
        diffs = [float(x[k]) - float(y[k]) for x, y in zip(a, b, strict=True)]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
        wins = sum(d <= 0 for d in diffs)
        verdicts.append(
            f"- OT-CFM {name}, {task}, {la} vs {lb} ({what}): {_mean(a, k):.4g} vs "
            f"{_mean(b, k):.4g}, paired difference {statistics.fmean(diffs):+.4g} ± {se:.2g} "
            f"s.e., no worse on {wins}/{len(diffs)} seeds → **{verdict}**")
    if not drawn:
        return
    if not seed_lines:
        seed_lines += ["| task | method | seed | library | W2 draw 0 | W2 mean ± eval std "
                       "| reference | per-draw difference to the reference (same draws): "
                       "mean ± s.e. |", "|---|---|---|---|---|---|---|---|"]
    for sd in common:
        for lib in (la, lb):
            r = {x["seed"]: x for x in by_lib[lib]}[sd]
            seed_lines.append(
                f"| {task} | {method} | {sd} | {lib} | {r['w2']:.4f} "
                f"| {r['w2_mean']:.4f} ± {r['w2_std']:.4f} | {lb} "
                f"| {_paired(r['w2_draws'], sb[sd]['w2_draws'])} |")


def _grid_text(runs: list[dict[str, Any]], verdicts: list[str]) -> str:
    keys = sorted({(r["task"], r["method"], r["steps"]) for r in runs},
                  key=lambda k: (METHOD_ORDER.index(k[1]) if k[1] in METHOD_ORDER else 9,
                                 k[0], k[2]))
    lines = ["| task | method | steps | library | seeds | steps/s (median) | W2 (draw 0) "
             "| W2 (mean of draws) | eval std | NFE | NFE torchdiffeq | NPE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratio_lines = ["| task | method | steps | otgen / TorchCFM | common seeds | steps/s ratio "
                   "| W2 ratio (draw 0) | W2 ratio (mean of draws) | NFE ratio | NPE ratio |",
                   "|---|---|---|---|---|---|---|---|---|---|"]
    seed_lines: list[str] = []
    for task, method, st in keys:
        by_lib: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            if (r["task"], r["method"], r["steps"]) == (task, method, st):
                by_lib.setdefault(r["lib"], []).append(r)
        lines += _library_rows(task, method, st, by_lib)
        for pair in COMPARISONS:
            if pair[0] in by_lib and pair[1] in by_lib:
                _compare(task, method, st, by_lib, pair, ratio_lines, verdicts, seed_lines)
    text = "\n".join(lines) + "\n\notgen / TorchCFM ratios (steps/s: higher is better; W2, " \
        "NFE, NPE: lower is better):\n\n" + "\n".join(ratio_lines) + "\n"
    if seed_lines:
        text += ("\nPer seed (W2 mean and standard deviation over the evaluation draws of "
                 "each model; the same draws for every library):\n\n"
                 + "\n".join(seed_lines) + "\n")
    return text


def _throughput_text(rows: list[dict[str, Any]], verdicts: list[str]) -> str:
    tl = ["| task | method | threads | library | reps | steps/s (median) | ratio to "
          "torchcfm |", "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"], r["threads"]), {}).setdefault(
            r["lib"], []).append(r["steps_per_s"])
    for (task, method, nth), libs in sorted(groups.items()):
        base = median(libs.get("torchcfm", []))
        for lib in ("torchcfm", "otgen", "otgen-sync", "otgen-emd"):
            if lib in libs:
                m = median(libs[lib])
                tl.append(f"| {task} | {method} | {nth} | {lib} | {len(libs[lib])} "
                          f"| {m:.1f} | {_ratio(m, base)} |")
                if lib == "otgen" and method == "otcfm":
                    verdicts.append(
                        f"- OT-CFM throughput ≥ 1.3× TorchCFM (throughput sweep), {task}, "
                        f"{nth} thread(s): ratio {m / base:.2f} → "
                        f"**{'PASS' if m / base >= 1.3 else 'FAIL'}**")
    return "\nThroughput sweep (seed 0, round-robin):\n\n" + "\n".join(tl) + "\n"


def _overhead_text(rows: list[dict[str, Any]], verdicts: list[str]) -> str:
    ol = ["| task | load | otgen coupling ms | bare solver ms | overhead ms (diff of "
          "medians) | overhead ms (median of paired diffs) | CPU: coupling / solver / "
          "overhead (diff of medians) / overhead (paired) ms | solver on |x0 - x1|² ms "
          "| scipy LSA ms | POT emd ms | TorchCFM sample_plan ms |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in rows:
        for task in TASK_NAMES:
            if task not in o:
                continue
            r = o[task]
            cpu = (f"{r['cpu_coupling_ms']:.3f} / {r['cpu_bare_solver_ms']:.3f} / "
                   f"{r['cpu_overhead_ms']:.3f} / {r['cpu_overhead_paired_median_ms']:.3f}"
                   if "cpu_overhead_ms" in r else "-")
            ol.append(f"| {task} | {o['load_before']} | {r['coupling_ms']:.3f} "
                      f"| {r['bare_solver_ms']:.3f} "
                      f"| {r['overhead_ms']:.3f} | {r['overhead_paired_median_ms']:.3f} "
                      f"| {cpu} | {r.get('bare_solver_full_cost_ms', math.nan):.3f} "
                      f"| {r['scipy_lsa_ms']:.3f} | {r['pot_emd_ms']:.3f} "
                      f"| {r['torchcfm_sample_plan_ms']:.3f} |")
            for kind, key in (("wall", "overhead_ms"), ("CPU", "cpu_overhead_ms")):
                if key in r:
                    verdicts.append(
                        f"- Coupling overhead beyond the solver ≤ 0.3 ms, {task} "
                        f"({kind} time, load {o['load_before']}): {r[key]:.3f} ms → "
                        f"**{'PASS' if r[key] <= 0.3 else 'FAIL'}**")
    return ("\nExact-OT coupling at batch 256 (medians over "
            f"{rows[-1]['n']} batches; bare solver = the call otgen makes, "
            f"prefer_assignment(256, 2) = {rows[-1]['prefer_assignment']}):\n\n"
            + "\n".join(ol) + "\n")


def _cpu_text(rows: list[dict[str, Any]]) -> str:
    names = ("draw_batches", "otgen_model_step", "torchcfm_model_step",
             "otgen_coupling_lsa", "otgen_coupling_emd", "torchcfm_sample_plan")
    cl = ["| task | load | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for o in rows:
        for task in TASK_NAMES:
            if task in o:
                cl.append(f"| {task} | {o['load_before']} | "
                          + " | ".join(f"{o[task][k]:.3f}" for k in names) + " |")
    return ("\nThread-CPU ms per batch of 256 (medians over "
            f"{rows[-1]['n']} batches, 1 torch thread):\n\n" + "\n".join(cl) + "\n")


def report(paths: list[Path], steps: int | None = None) -> str:
    """Markdown tables and verdicts of every run in the JSON files ``paths``."""
    res: dict[str, Any] = {"runs": [], "throughput": [], "overhead": [], "meta": []}
    for path in paths:
        for k, v in load(path).items():
            res.setdefault(k, []).extend(v)
    runs = [r for r in res["runs"] if steps is None or r["steps"] == steps]
    verdicts: list[str] = []
    text = _grid_text(runs, verdicts)
    floors = [m["data_floor_w2"] for m in res["meta"] if "data_floor_w2" in m]
    if floors:
        text += "\nW2 floor, data vs data (2000 vs 2000): " + "; ".join(
            f"{t} {statistics.fmean(v):.4f} ± {statistics.stdev(v):.4f} ({len(v)} draws)"
            for t, v in floors[-1].items()) + "\n"
    if res["throughput"]:
        text += _throughput_text(res["throughput"], verdicts)
    if res["overhead"]:
        text += _overhead_text(res["overhead"], verdicts)
    if res.get("cpu_breakdown"):
        text += _cpu_text(res["cpu_breakdown"])
    return text + "\nTargets:\n\n" + "\n".join(verdicts) + "\n"
