"""Scale and robustness measurements (issue "Scale and robustness"): DDP throughput on 1 vs
2 CPU processes, the global coupling's cost under all-gather, checkpoint/resume overhead,
and metrics on 10^5-point clouds with their peak memory.

Each part runs in fresh subprocesses (peak RSS is per process) and prints one JSON line per
measurement; ``--out FILE`` also appends them to a JSON list.

    python benchmarks/scale.py --ddp --steps 1500          # torchrun 2 x B vs 1 x 2B vs 1 x B
    python benchmarks/scale.py --coupling                   # all-gather + global coupling
    python benchmarks/scale.py --resume                     # checkpoint write / load cost
    python benchmarks/scale.py --large --n 100000           # sliced W, online Sinkhorn div.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _emit(rec: dict[str, Any], out: Path | None) -> None:
    rec = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "load": os.getloadavg()[0], **rec}
    print(json.dumps(rec), flush=True)
    if out is not None:
        old = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps(old + [rec], indent=1))


def _train_seconds(run: Path) -> tuple[float, int]:
    state = json.loads((run / "checkpoint" / "state.json").read_text())["state"]
    return float(state["train_seconds"]), int(state["step"])


def ddp(args: argparse.Namespace, out: Path | None) -> None:
    """Steps/s and samples/s: torchrun 2 processes x B, one process x 2B, one process x B."""
    common = ["--steps", str(args.steps), "--no-eval", "--seed", "0", "--ckpt-every", "0"]
    b = args.batch
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            f"2 procs x {b}": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node=2", "-m", "otgen", "train", *common,
                               "--batch-size", str(b)],
            f"1 proc x {2 * b}": [sys.executable, "-m", "otgen", "train", *common,
                                  "--batch-size", str(2 * b)],
            f"1 proc x {b}": [sys.executable, "-m", "otgen", "train", *common,
                              "--batch-size", str(b)],
        }
        for name, cmd in runs.items():
            run = Path(tmp) / name.replace(" ", "_")
            subprocess.run([*cmd, "--out", str(run)], check=True, env=ENV,
                           capture_output=True)
            sec, steps = _train_seconds(run)
            per_step = 2 * b if name.startswith("2") or "x " + str(2 * b) in name else b
            _emit({"part": "ddp", "run": name, "steps": steps, "train_seconds": sec,
                   "steps_per_s": steps / sec, "samples_per_s": steps * per_step / sec}, out)


_COUPLING = """
import json, time, torch
from otgen.flows.couplings import ExactOTCoupling
from otgen.train.distributed import context, shutdown
torch.set_num_threads(1)
ctx = context("cpu")
g = torch.Generator().manual_seed(ctx.rank)
B, reps = {b}, {reps}
gather, glob, local = [], [], []
for k in range(reps + 5):
    x0, x1 = torch.randn(B, 2, generator=g), torch.rand(B, 2, generator=g) * 4
    ctx.barrier()
    t0 = time.perf_counter(); X0, X1 = ctx.gather(x0), ctx.gather(x1)
    t1 = time.perf_counter(); ExactOTCoupling()(X0, X1)
    t2 = time.perf_counter(); ExactOTCoupling()(x0, x1)
    t3 = time.perf_counter()
    if k >= 5:
        gather.append(t1 - t0); glob.append(t2 - t1); local.append(t3 - t2)
med = lambda v: sorted(v)[len(v) // 2] * 1e3
if ctx.rank == 0:
    print(json.dumps({{"all_gather_ms": med(gather), "global_coupling_ms": med(glob),
                      "per_rank_coupling_ms": med(local), "batch_per_rank": B,
                      "world": ctx.world}}))
shutdown()
"""


def coupling(args: argparse.Namespace, out: Path | None) -> None:
    """Medians of all-gather of two (B, 2) batches, the global (2B) exact coupling and the
    per-rank (B) coupling TorchCFM would use, inside a 2-process gloo job."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "couple.py"
        script.write_text(textwrap.dedent(_COUPLING.format(b=args.batch, reps=args.reps)))
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              "--nproc_per_node=2", str(script)], check=True, env=ENV,
                             capture_output=True, text=True)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1]
        _emit({"part": "coupling", **json.loads(line)}, out)


def resume(args: argparse.Namespace, out: Path | None) -> None:
    """Seconds per checkpoint (training with a checkpoint every 100 steps vs only at the end)
    and the time to resume (load) the default model."""
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "otgen", "train", "--steps", str(args.steps), "--no-eval",
                "--seed", "0"]
        secs = {}
        for every in (0, 100):
            run = Path(tmp) / f"ck{every}"
            subprocess.run([*base, "--ckpt-every", str(every), "--out", str(run)], check=True,
                           env=ENV, capture_output=True)
            secs[every] = _train_seconds(run)[0]
        n_ck = args.steps // 100
        load = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import time, torch
            from otgen.train.checkpoint import load_checkpoint
            from otgen.train.config import load_config
            from otgen.train.loop import build_run, _streams
            run = build_run(load_config({str(Path(tmp) / 'ck100')!r}))
            opt = torch.optim.Adam(run.model.parameters())
            t = time.perf_counter()
            load_checkpoint({str(Path(tmp) / 'ck100')!r}, model=run.model, optimizer=opt,
                            generators=_streams(0), ema=run.ema)
            print(time.perf_counter() - t)
        """)], check=True, env=ENV, capture_output=True, text=True)
        _emit({"part": "resume", "steps": args.steps, "train_s_no_ckpt": secs[0],
               "train_s_ckpt_every_100": secs[100],
               "ms_per_checkpoint": 1e3 * (secs[100] - secs[0]) / max(1, n_ck),
               "overhead_pct": 100 * (secs[100] - secs[0]) / secs[0],
               "load_ms": 1e3 * float(load.stdout.strip().splitlines()[-1])}, out)


_LARGE = """
import json, resource, time, torch
from otgen.data.registry import get_sampler
from otgen.metrics import sliced_w2
from otgen.ot import sinkhorn_divergence
torch.set_num_threads({threads})
g = torch.Generator().manual_seed(0)
n = {n}
x = get_sampler("moons")(n, g); y = get_sampler("moons")(n, g) + 0.05
t = time.perf_counter()
if "{what}" == "sliced":
    v = float(sliced_w2(x, y, n_projections=200, generator=g))
else:
    v = float(sinkhorn_divergence(x, y, eps={eps}))
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"metric": "{what}", "n": n, "value": v, "seconds": dt,
                  "peak_rss_mib": rss}}))
"""


def large(args: argparse.Namespace, out: Path | None) -> None:
    """Sliced W2 and the (online) Sinkhorn divergence on n-point clouds: value, seconds,
    peak resident memory of the process."""
    for what in args.metrics:
        code = textwrap.dedent(_LARGE.format(n=args.n, what=what, eps=args.eps,
                                             threads=args.threads))
        res = subprocess.run([sys.executable, "-c", code], check=True, env=ENV,
                             capture_output=True, text=True)
        _emit({"part": "large", **json.loads(res.stdout.strip().splitlines()[-1])}, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ddp", action="store_true")
    p.add_argument("--coupling", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--large", action="store_true")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=128, help="batch per rank")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--eps", type=float, default=0.05, help="absolute eps of the divergence")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--metrics", nargs="+", default=["sliced", "sinkhorn"])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not (args.ddp or args.coupling or args.resume or args.large):
        p.error("choose at least one of --ddp, --coupling, --resume, --large")
    for flag, fn in (("ddp", ddp), ("coupling", coupling), ("resume", resume),
                     ("large", large)):
        if getattr(args, flag):
            fn(args, args.out)


if __name__ == "__main__":
    main()
