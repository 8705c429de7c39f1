"""DDP: the global minibatch-OT coupling of 2 CPU processes (gloo) is the single-process
coupling of the concatenated batch, and 2-process training follows the 1-process loss curve
at twice the batch size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from otgen.flows.couplings import ExactOTCoupling
from otgen.train.distributed import DistContext, rank_stream_seed

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", *args]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"torchrun failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def _batches(rank: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(rank_stream_seed(5, 0, rank))
    return torch.randn(b, 2, generator=g, dtype=torch.float64), \
        torch.rand(b, 2, generator=g, dtype=torch.float64) * 4


def test_single_process_context_is_identity():
    ctx = DistContext()
    x = torch.arange(6.0).reshape(3, 2)
    assert ctx.gather(x) is x and ctx.local(x) is x and not ctx.active


def test_global_coupling_equals_coupling_of_concatenated_batch(tmp_path):
    script = tmp_path / "couple.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_distributed import _batches
        from otgen.flows.matchers import make_matcher
        from otgen.train.distributed import context, shutdown
        from otgen.train.loop import _pair_local
        ctx = context("cpu")
        x0, x1 = _batches(ctx.rank, 48)
        m = make_matcher("otcfm")
        p0, p1, j = _pair_local(m, ctx.gather(x0), ctx.gather(x1),
                                torch.Generator().manual_seed(0), ctx)
        json.dump({{"x0": p0.tolist(), "x1": p1.tolist(), "j": j.tolist()}},
                  open({str(tmp_path)!r} + f"/rank{{ctx.rank}}.json", "w"))
        shutdown()
    """))
    _torchrun([str(script)], tmp_path, timeout=300)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    X0 = torch.cat([_batches(0, 48)[0], _batches(1, 48)[0]])
    X1 = torch.cat([_batches(0, 48)[1], _batches(1, 48)[1]])
    ref0, ref1, ref_j = ExactOTCoupling()(X0, X1)
    got0 = torch.tensor(r0["x0"] + r1["x0"], dtype=torch.float64)
    got1 = torch.tensor(r0["x1"] + r1["x1"], dtype=torch.float64)
    # each rank trains on its own noise paired with partners from the *global* data batch
    torch.testing.assert_close(got0, ref0)
    torch.testing.assert_close(got1, ref1)
    assert r0["j"] + r1["j"] == ref_j.tolist()
    assert sorted(r0["j"] + r1["j"]) == list(range(96))  # a permutation: no duplicates
    assert any(j >= 48 for j in r0["j"])  # rank 0 pairs with data drawn by rank 1
    # the global plan is cheaper than coupling each rank's batch on its own
    per_rank = sum(float(((a - b[ExactOTCoupling().pair(a, b, None)]) ** 2).sum())
                   for a, b in (_batches(0, 48), _batches(1, 48)))
    assert float(((ref0 - ref1) ** 2).sum()) < per_rank


@pytest.mark.slow
def test_two_processes_follow_one_process_at_twice_the_batch(tmp_path):
    common = ["--steps", "400", "--hidden", "32", "--depth", "2", "--no-eval",
              "--ema", "0", "--seed", "3"]
    _torchrun(["-m", "otgen", "train", *common, "--batch-size", "64",
               "--out", str(tmp_path / "ddp")], tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, batch in (("single2b", "128"), ("singleb", "64")):
        subprocess.run([sys.executable, "-m", "otgen", "train", *common, "--batch-size",
                        batch, "--out", str(tmp_path / name)], check=True, env=env,
                       capture_output=True, cwd=tmp_path, timeout=600)

    def curve(name: str) -> torch.Tensor:
        state = json.loads((tmp_path / name / "checkpoint" / "state.json").read_text())
        return torch.tensor(state["state"]["loss"]).reshape(-1, 50).mean(1)  # (8,) windows

    ddp, two_b, one_b = curve("ddp"), curve("single2b"), curve("singleb")
    assert ddp.shape == (8,)
    # same curve within noise: per-window means agree to 10 % after the first window
    rel = ((ddp - two_b).abs() / two_b)[1:]
    assert float(rel.max()) < 0.10, (ddp, two_b)
    # and the 2-process run is at least as close to batch 2B as to batch B overall
    assert float((ddp - two_b).abs().mean()) <= float((ddp - one_b).abs().mean()) * 1.5
