"""`otgen train --model wgan|semidiscrete|sinkhorn-gen|wae|vae-elbo` end to end (tiny)."""

from __future__ import annotations

import json

from otgen.cli.main import main

TINY = ["--steps", "12", "--batch-size", "64", "--hidden", "16", "--depth", "1"]


def test_train_generative_run_directory_and_resume(tmp_path, capsys):
    cfg = tmp_path / "extra.json"
    cfg.write_text(json.dumps({"n_train": 256, "n_eval": 200, "loss": "exact",
                               "ckpt_every": 5}))
    run = tmp_path / "run"
    assert main(["train", "--model", "sinkhorn-gen", *TINY, "--config", str(cfg),
                 "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("w2", "w2_init", "sliced_w2", "sinkhorn", "train_seconds"):
        assert isinstance(summary[key], float), key
    for name in ("config.json", "metrics.json", "samples.png", "loss.png",
                 "model.safetensors"):
        assert (run / name).exists(), name
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "sinkhorn-gen" and saved["loss"] == "exact"
    assert saved["steps"] == 12 and saved["n_train"] == 256
    assert main(["train", "--resume", "--out", str(run), "--no-eval"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 12


def test_train_generative_digits_grid(tmp_path, capsys):
    run = tmp_path / "digits"
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"n_eval": 200}))
    assert main(["train", "--model", "vae-elbo", "--data", "digits", "--latent-dim", "3",
                 *TINY, "--config", str(small), "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["data"] == "digits" and "elbo" in summary
    assert (run / "samples.png").exists()


def test_train_generative_bad_input_gives_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"critic_iters": 3}))
    cases = [
        ["train", "--model", "wgan", "--method", "cfm", "--out", str(tmp_path / "a")],
        ["train", "--model", "wae", "--config", str(bad), "--out", str(tmp_path / "b")],
        ["train", "--model", "wae", "--data", "digits", "--data-params", '{"noise": 0.1}',
         "--out", str(tmp_path / "c")],
        ["train", "--model", "semidiscrete", "--data", "nosuchtoy", "--out",
         str(tmp_path / "d")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("otgen: error:"), (argv, err)
