"""Training loop: bit-for-bit resume, safe checkpoints, config validation, evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from otgen.train import CheckpointError, TrainConfig, build_run, evaluate, load_checkpoint, train

SMALL = dict(steps=40, ckpt_every=10, batch_size=64, hidden=16, depth=2, n_eval=200, n_nll=50)


def _weights_equal(a, b):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(("method", "reflow"),
                         [("otcfm", 0), ("sbcfm", 0), ("cfm", 0), ("rectified", 1)])
def test_resume_is_bit_for_bit(tmp_path, method, reflow):
    cfg = TrainConfig(method=method, reflow=reflow, **{**SMALL, "steps": 40 // (1 + reflow)})
    _, full = train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "part", progress=False, stop_after=25)
    _, resumed = train(cfg, tmp_path / "part", progress=False, resume=True)
    assert resumed["step"] == full["step"] == 40
    assert resumed["loss"] == full["loss"]
    assert _weights_equal(tmp_path / "full", tmp_path / "part")


@pytest.mark.parametrize("method", ["otcfm", "sbcfm", "cfm"])
def test_pairing_in_a_worker_thread_or_inline_gives_the_same_run(tmp_path, monkeypatch, method):
    # the loop threads only exact OT; either way a batch's pairing draws from the same
    # private generator, so forcing the other choice must not change a single bit
    import otgen.train.loop as loop

    cfg = TrainConfig(method=method, **{**SMALL, "steps": 20, "ckpt_every": 0})
    _, a = train(cfg, tmp_path / "default", progress=False)
    flipped = not loop._ahead_in_thread(build_run(cfg).matcher)
    monkeypatch.setattr(loop, "_ahead_in_thread", lambda matcher: flipped)
    _, b = train(cfg, tmp_path / "flipped", progress=False)
    assert a["loss"] == b["loss"]
    assert _weights_equal(tmp_path / "default", tmp_path / "flipped")


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    cfg = TrainConfig(**{**SMALL, "steps": 300, "ckpt_every": 20})
    _, full = train(cfg, tmp_path / "full", progress=False)
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(cfg.to_json()))
    code = ("import sys; from otgen.train import load_config, train; "
            f"train(load_config({str(run_dir)!r}), {str(run_dir)!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while time.time() < deadline and not (run_dir / "checkpoint" / "state.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads((run_dir / "checkpoint" / "state.json").read_text())["state"]
    assert 0 < saved["step"] < 300, "the kill should land mid-run"
    assert saved["loss"] == full["loss"][: saved["step"]]  # nothing before it is lost
    _, resumed = train(cfg, run_dir, progress=False, resume=True)
    assert resumed["loss"] == full["loss"]
    assert _weights_equal(tmp_path / "full", run_dir)


def test_tampered_or_truncated_checkpoint_is_refused(tmp_path):
    cfg = TrainConfig(**SMALL)
    train(cfg, tmp_path, progress=False)
    run = build_run(cfg)
    opt = torch.optim.Adam(run.model.parameters())
    gens = {k: torch.Generator() for k in ("data", "source", "pair", "coupling")}
    f = tmp_path / "checkpoint" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path, model=run.model, optimizer=opt, generators=gens)
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path, model=run.model, optimizer=opt, generators=gens)
    (tmp_path / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path, model=run.model, optimizer=opt, generators=gens)


def test_checkpoint_never_unpickles(tmp_path):
    cfg = TrainConfig(**SMALL)
    train(cfg, tmp_path, progress=False)
    names = sorted(os.listdir(tmp_path / "checkpoint"))
    assert all(n.endswith((".safetensors", ".json")) for n in names), names


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.from_json({"stepz": 10})
    with pytest.raises(ValueError, match="`method` must be one of"):
        TrainConfig(method="gan")
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="`ema`"):
        TrainConfig(ema=1.5)


def test_training_learns_and_evaluation_writes_everything(tmp_path):
    cfg = TrainConfig(**{**SMALL, "steps": 600, "hidden": 32, "n_eval": 400})
    with torch.no_grad():
        run0 = build_run(cfg)
    base = evaluate(run0, tmp_path / "untrained", {"step": 0}, figures=False) \
        if (tmp_path / "untrained").mkdir() is None else None
    run, state = train(cfg, tmp_path / "run", progress=False)
    metrics = evaluate(run, tmp_path / "run", state)
    assert metrics["w2"] < 0.5 * base["w2"]
    for key in ("w2", "nfe", "path_energy", "npe", "nll", "train_seconds"):
        assert key in metrics
    for name in ("metrics.json", "samples.png", "trajectories.png", "loss.png",
                 "model.safetensors"):
        assert (tmp_path / "run" / name).exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 600
