"""`otgen train | sample | eval` end to end on a tiny run."""

from __future__ import annotations

import json

import numpy as np

from otgen.cli.main import main

TINY = ["--steps", "60", "--batch-size", "32", "--hidden", "16", "--depth", "2"]


def test_train_sample_eval_round_trip(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("w2", "nfe", "path_energy", "nll", "train_seconds"):
        assert key in summary
    for name in ("config.json", "metrics.json", "samples.png", "trajectories.png", "loss.png",
                 "model.safetensors"):
        assert (run / name).exists(), name
    assert main(["sample", "--run", str(run), "--n", "50", "--solver", "rk4", "--steps",
                 "10"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    samples = np.load(out["out"], allow_pickle=False)
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    assert main(["eval", "--run", str(run)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["w2"] == summary["w2"]  # evaluation is deterministic


def test_resume_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--no-eval"]) == 0
    assert main(["train", "--resume", "--out", str(run), "--no-eval"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 60


def test_train_bad_input_gives_one_line(tmp_path, capsys):
    cases = [
        ["train", "--data", "nosuchtoy", "--out", str(tmp_path / "a")],
        ["train", "--data-params", "{bad", "--out", str(tmp_path / "b")],
        ["train", "--resume", "--out", str(tmp_path / "missing")],
        ["eval", "--run", str(tmp_path / "nothing")],
        ["train", "--steps", "0"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("otgen: error:"), (argv, err)
