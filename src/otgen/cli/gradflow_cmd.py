"""``otgen gradflow``: run a Wasserstein gradient flow and compare it with its closed form.

    otgen gradflow --energy kl|entropy|porous|interaction --scheme jko|langevin|particles
                   [--potential quadratic|double-well|none] [--kernel quadratic|...]
                   [--init gaussian|bimodal|barenblatt] [--dim 1|2] [--tau T] [--steps K]
                   [--out DIR]

Writes ``config.json``, ``metrics.json`` (flat: ``energy_<k>`` per step, ``w2_<k>`` to the
closed form at the snapshot steps where one exists, ``w2_closed_form`` at the end, ...),
``frames.png`` (snapshots), ``energy.png`` and an animated ``flow.gif``. Closed forms:
heat (entropy, Gaussian start), OU (KL with the quadratic potential, Gaussian start),
aggregation (interaction with the quadratic kernel, no potential, Gaussian start) and
Barenblatt (porous medium, Barenblatt start).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from otgen.cli._common import (
    CLIError,
    jsonable,
    new_run_dir,
    positive_float,
    positive_int,
    save_figure,
    write_json,
)

__all__ = ["add_parser", "run"]

_DEFAULTS = {  # scheme -> (tau, steps)
    "jko": (0.1, 10), "langevin": (0.01, 300), "particles": (0.01, 100)}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``otgen gradflow``."""
    p = subparsers.add_parser(
        "gradflow", help="Wasserstein gradient flows: JKO, Langevin and particle schemes",
        description="Run a Wasserstein gradient flow, compare with closed forms, plot it.")
    p.add_argument("--energy", choices=("kl", "entropy", "porous", "interaction"),
                   default="kl")
    p.add_argument("--scheme", choices=("jko", "langevin", "particles"), default="jko")
    p.add_argument("--potential", choices=("quadratic", "double-well", "none"), default=None,
                   help="V of the KL target e^{-V} (or an added potential energy); default "
                   "quadratic for kl, none otherwise")
    p.add_argument("--kernel", choices=("quadratic", "attractive-repulsive"),
                   default="quadratic", help="interaction kernel W")
    p.add_argument("--init", choices=("gaussian", "bimodal", "barenblatt"), default=None,
                   help="initial law (default gaussian; barenblatt for porous)")
    p.add_argument("--dim", type=int, choices=(1, 2), default=1)
    p.add_argument("--tau", type=positive_float, default=None, help="time step")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--n", type=positive_int, default=None,
                   help="particles / quantiles (default 500 / 200)")
    p.add_argument("--grid", type=positive_int, default=None,
                   help="cells per axis of the JKO grid (default 201 in 1-D, 48 in 2-D)")
    p.add_argument("--extent", type=positive_float, default=5.0, help="grid is [-L, L]^d")
    p.add_argument("--m", type=float, default=2.0, help="porous-medium exponent (> 1)")
    p.add_argument("--gamma", type=positive_float, default=None,
                   help="entropic JKO regularisation (default max(tau^2, dx^2))")
    p.add_argument("--jko-method", choices=("entropic", "quantile"), default="entropic",
                   help="quantile: exact 1-D JKO on quantiles")
    p.add_argument("--frames", type=positive_int, default=5, help="snapshots in frames.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gif", action="store_true", help="skip flow.gif")
    p.add_argument("--out", default=None, help="run directory (default runs/gradflow-...)")
    p.set_defaults(func=run)
    return p


# ------------------------------------------------------------------------ construction


def _check(args: argparse.Namespace) -> None:
    if args.scheme == "langevin" and args.energy not in ("kl", "entropy"):
        raise CLIError(f"--scheme langevin simulates KL / entropy flows (Fokker-Planck), not "
                       f"--energy {args.energy}; use --scheme particles or jko.")
    if args.init == "barenblatt" and args.energy != "porous":
        raise CLIError("--init barenblatt is the porous-medium profile; use it with "
                       "--energy porous.")
    if args.jko_method == "quantile" and (args.scheme != "jko" or args.dim != 1):
        raise CLIError("--jko-method quantile is the exact 1-D JKO: use --scheme jko --dim 1.")
    if not (math.isfinite(args.m) and args.m > 1):
        raise CLIError(f"--m must be a number > 1, got {args.m}.")
    if args.energy == "porous" and args.potential not in (None, "none") and \
            args.init == "barenblatt":
        raise CLIError("the Barenblatt closed form has no potential; drop --potential.")


def _energy(args: argparse.Namespace) -> Any:
    from otgen.gradflows import (
        KL,
        InteractionEnergy,
        NegEntropy,
        PorousMedium,
        PotentialEnergy,
        get_kernel,
        get_potential,
    )

    pot = args.potential or ("quadratic" if args.energy == "kl" else "none")
    V = get_potential(pot)
    if args.energy == "kl":
        log_z = 0.5 * args.dim * math.log(2 * math.pi) if pot == "quadratic" else None
        return KL(V, log_z=log_z), pot
    base = {"entropy": lambda: NegEntropy(), "porous": lambda: PorousMedium(args.m),
            "interaction": lambda: InteractionEnergy(get_kernel(args.kernel))}[args.energy]()
    return (base if pot == "none" else base + PotentialEnergy(V)), pot


def _closed_form(args: argparse.Namespace, pot: str) -> Any:
    """``t -> log-density (B, d) -> (B,)`` of the exact solution, or ``None``."""
    import torch

    from otgen.gradflows import aggregation_gaussian, barenblatt, heat_gaussian, ou_gaussian

    m0, S0 = _gaussian0(args.dim)
    if args.init == "barenblatt":
        return lambda t: (lambda x: torch.log(barenblatt(x, _T0 + t, args.m)))
    if args.init != "gaussian":
        return None
    law: Any = None
    if args.energy == "entropy" and pot == "none":
        law = heat_gaussian
    elif args.energy == "kl" and pot == "quadratic":
        law = ou_gaussian
    elif args.energy == "interaction" and pot == "none" and args.kernel == "quadratic":
        law = aggregation_gaussian
    if law is None:
        return None

    def at(t: float) -> Any:
        m, S = law(m0, S0, t)
        dist = torch.distributions.MultivariateNormal(m, S)
        return dist.log_prob

    return at


_T0 = 0.05  # Barenblatt start time


def _init_logdensity(args: argparse.Namespace) -> Any:
    import torch

    from otgen.gradflows import barenblatt

    if args.init == "barenblatt":
        return lambda x: torch.log(barenblatt(x, _T0, args.m))
    if args.init == "bimodal":
        def bimodal(x: torch.Tensor) -> torch.Tensor:
            a = -((x - _shift(x, 1.5)) ** 2).sum(-1) / (2 * 0.16)
            b = -((x - _shift(x, -1.5)) ** 2).sum(-1) / (2 * 0.16)
            return torch.logaddexp(a, b) - math.log(2) - 0.5 * x.shape[-1] * math.log(
                2 * math.pi * 0.16)
        return bimodal
    m0, S0 = _gaussian0(args.dim)
    return torch.distributions.MultivariateNormal(m0, S0).log_prob


def _gaussian0(d: int) -> tuple[Any, Any]:
    """The Gaussian start :math:`N(e_1, 0.25 I)`."""
    import torch

    m0 = torch.zeros(d, dtype=torch.float64)
    m0[0] = 1.0
    return m0, 0.25 * torch.eye(d, dtype=torch.float64)


def _shift(x: Any, c: float) -> Any:
    s = x.new_zeros(x.shape[-1])
    s[0] = c
    return s


def _sample(logp: Any, n: int, d: int, g: Any) -> Any:
    """Exact-enough samples of a log-density by inverse CDF on a fine grid (per point:
    a grid cell drawn by mass, then uniform inside it)."""
    import torch

    from otgen.gradflows import Grid

    grid = Grid.regular(-6.0, 6.0, 601 if d == 1 else 241, dim=d)
    lp = logp(grid.points())
    probs = torch.softmax(torch.nan_to_num(lp, nan=-math.inf), 0)
    idx = torch.multinomial(probs, n, replacement=True, generator=g)
    jitter = (torch.rand(n, d, generator=g, dtype=torch.float64) - 0.5) * grid.spacing[0]
    return grid.points()[idx] + jitter


# ------------------------------------------------------------------------------- runs


def run(args: argparse.Namespace) -> int:
    """Execute ``otgen gradflow``."""
    import torch

    from otgen.gradflows import Grid

    if args.init is None:
        args.init = "barenblatt" if args.energy == "porous" else "gaussian"
    _check(args)
    energy, pot = _energy(args)
    tau0, steps0 = _DEFAULTS[args.scheme]
    tau, steps = args.tau or tau0, args.steps or steps0
    d = args.dim
    exact = _closed_form(args, pot)
    init = _init_logdensity(args)
    g = torch.Generator().manual_seed(args.seed)
    out = new_run_dir(args.out, f"gradflow-{args.energy}-{args.scheme}")
    config = {k: v for k, v in vars(args).items() if k != "func"} | {
        "tau": tau, "steps": steps, "potential": pot}
    write_json(out / "config.json", config)
    t_start = time.perf_counter()

    grid: Grid | None = None
    frame_times: list[float] | None = None
    if args.scheme == "jko" and args.jko_method == "entropic":
        n_cells = args.grid or (201 if d == 1 else 48)
        grid = Grid.regular(-args.extent, args.extent, n_cells, dim=d)
        rho0 = grid.density(torch.nan_to_num(grid.evaluate(init), nan=-math.inf))
        from otgen.gradflows import EntropicJKO

        res = EntropicJKO(tau, args.gamma)(energy, rho0, grid, steps, progress=True)
        states, energies = res.states, res.energies  # type: Any, Any
        kind, extra = "grid", {"converged": int(res.converged),
                               "inner_iterations": int(res.n_iter.sum()),
                               "gamma": EntropicJKO(tau, args.gamma).resolved_gamma(grid)}
    elif args.scheme == "jko":
        from otgen.gradflows import QuantileJKO

        n = args.n or 200
        x0 = _quantiles(init, n)
        res = QuantileJKO(tau)(energy, x0, steps, progress=True)
        states, energies = res.states[..., None], res.energies
        kind, extra = "particles", {"converged": int(res.converged)}
    else:
        from otgen.gradflows import langevin, particle_flow

        n = args.n or 500
        x0 = _sample(init, n, d, g)
        if args.scheme == "particles":
            pf = particle_flow(energy, x0, tau=tau, steps=steps, save_every=1, progress=True)
        else:
            V = energy.V if hasattr(energy, "V") else (lambda x: x.new_zeros(x.shape[0]))
            pf = langevin(V, x0, tau=tau, steps=steps, generator=g,
                          save_every=max(1, steps // 60),
                          energy=energy, progress=True)
        states, energies, frame_times = pf.xs, pf.energies, pf.times.tolist()
        kind, extra = "particles", {"nfe": pf.nfe}
    if energies is None:
        raise CLIError("internal: the scheme returned no energies")
    times = frame_times if frame_times is not None else [tau * k for k in
                                                         range(states.shape[0])]
    snap = sorted({round(k * (len(times) - 1) / max(1, args.frames - 1))
                   for k in range(args.frames)})
    metrics: dict[str, Any] = {
        "energy": args.energy, "scheme": args.scheme, "dim": d, "tau": tau, "steps": steps,
        "time": times[-1], "energy_initial": float(energies[0]),
        "energy_final": float(energies[-1]),
        "energy_monotone": int(bool((energies[1:] <= energies[:-1] + 1e-12).all())),
        "seconds": time.perf_counter() - t_start, **extra}
    for k, e in enumerate(energies.tolist()):  # k: frame index (= step unless strided)
        metrics[f"energy_{k:04d}"] = e
    ref_curves = None
    if exact is not None:
        w2s = {k: _w2(states[k], kind, grid, exact(times[k]), d) for k in snap}
        for k, v in w2s.items():
            metrics[f"w2_{k:04d}"] = v
        metrics["w2_closed_form"] = w2s[snap[-1]]
        if kind == "grid" and d == 1 and grid is not None:
            ref_curves = torch.stack([grid.density(exact(times[k])(grid.points()))
                                      for k in snap])
    write_json(out / "metrics.json", metrics)
    _figures(out, states, times, snap, kind, grid, ref_curves, energies, args)
    print(json.dumps(jsonable({k: v for k, v in metrics.items()
                               if not k.startswith(("energy_0", "w2_0"))} | {"run": str(out)})))
    print(f"otgen: wrote {out}", file=sys.stderr)
    return 0


def _quantiles(logp: Any, n: int) -> Any:
    import torch

    from otgen.gradflows import Grid

    grid = Grid.regular(-8.0, 8.0, 20001)
    lp = torch.nan_to_num(logp(grid.points()), nan=-math.inf)
    cdf = torch.cumsum(torch.softmax(lp, 0), 0)
    s = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    idx = torch.searchsorted(cdf, s).clamp(1, grid.shape[0] - 1)
    c0, c1 = cdf[idx - 1], cdf[idx]
    x = grid.axes[0]
    return x[idx - 1] + (s - c0) / (c1 - c0).clamp_min(1e-300) * (x[idx] - x[idx - 1])


def _w2(state: Any, kind: str, grid: Any, logp: Any, d: int) -> float:
    """W2 between a state and the closed-form law (discretised on a grid)."""
    import torch

    from otgen.gradflows import Grid
    from otgen.ot import wasserstein, wasserstein_1d

    ref_grid = grid if grid is not None else Grid.regular(-6.0, 6.0, 2001 if d == 1 else 61,
                                                         dim=d)
    pts = ref_grid.points()
    b = torch.softmax(torch.nan_to_num(logp(pts), nan=-math.inf), 0)
    if kind == "grid":
        x, a = pts, (state.reshape(-1) / state.sum()).clamp_min(0)
    else:
        x, a = state, None
    if d == 1:
        return float(wasserstein_1d(x[:, 0], pts[:, 0], a, b, p=2.0))
    keep = b > 1e-12 * float(b.max())
    b = b[keep] / b[keep].sum()
    if a is not None:
        ka = a > 1e-12 * float(a.max())
        x, a = x[ka], a[ka] / a[ka].sum()
    return float(wasserstein(x, pts[keep], a, b))


def _figures(out: Path, states: Any, times: list[float], snap: list[int], kind: str,
             grid: Any, ref: Any, energies: Any, args: argparse.Namespace) -> None:
    from otgen.viz.gradflows import flow_animation, plot_energy, plot_frames, save_gif

    axes = list(grid.axes) if grid is not None else None
    title = f"{args.energy} / {args.scheme}"
    fig = plot_frames(states[snap], [times[k] for k in snap], kind=kind, axes=axes,
                      reference=ref, title=title)
    save_figure(out / "frames.png", fig)
    save_figure(out / "energy.png", plot_energy(times, energies.tolist(),
                                                label=f"F ({args.energy})"))
    if not args.no_gif:
        stride = max(1, (len(times) - 1) // 40)
        idx = list(range(0, len(times), stride))
        save_gif(flow_animation(states[idx], [times[k] for k in idx], kind=kind, axes=axes,
                                title=title), out / "flow.gif", fps=8)
