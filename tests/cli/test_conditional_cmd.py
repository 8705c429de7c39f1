"""`otgen train --data digits --conditional`, `otgen sample --class --guidance`,
`otgen eval` on a conditional image run; one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from otgen.cli.main import main


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("OTGEN_CACHE", str(tmp_path_factory.getbasetemp() / "otgen-cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_conditional_train_sample_eval_resume(tmp_path, capsys):
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps({"width": 4, "emb_dim": 8, "n_per_class": 2, "n_nll": 2,
                               "solver": "rk4", "solver_steps": 2, "eval_guidance": [0, 2],
                               "ckpt_every": 2}))
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--conditional", "--coupling", "label-ot",
                 "--guidance-dropout", "0.2", "--steps", "4", "--batch-size", "16",
                 "--config", str(cfg), "--out", str(run), "--no-eval"]) == 0
    assert _last_json(capsys)["steps"] == 4
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "conv" and saved["conditional"] is True
    assert saved["coupling"] == "label-ot" and saved["guidance_dropout"] == 0.2
    assert main(["train", "--resume", "--out", str(run), "--no-eval"]) == 0  # routed by config
    assert _last_json(capsys)["steps"] == 4
    assert main(["sample", "--run", str(run), "--class", "3", "--guidance", "2.0", "--n", "6",
                 "--solver", "rk4", "--steps", "2"]) == 0
    out = _last_json(capsys)
    assert out["class"] == 3 and out["guidance"] == 2.0 and out["nfe"] == 8
    x = np.load(out["out"], allow_pickle=False)
    assert x.shape == (6, 64) and np.isfinite(x).all()
    assert out["png"].endswith(".png") and (run / "samples-c3-g2-6.png").exists()
    assert main(["eval", "--run", str(run)]) == 0
    metrics = _last_json(capsys)
    for key in ("digits_fd", "cond_acc", "bpd", "digits_fd_g2", "cond_acc_g0", "nfe_g2"):
        assert key in metrics, key
    assert (run / "metrics.json").exists() and (run / "samples.png").exists()


def test_unconditional_digits_and_errors(tmp_path, capsys):
    run = tmp_path / "u"
    assert main(["train", "--data", "digits", "--steps", "2", "--batch-size", "8", "--hidden",
                 "4", "--out", str(run), "--no-eval"]) == 0
    capsys.readouterr()
    saved = json.loads((run / "config.json").read_text())
    assert saved["conditional"] is False and saved["coupling"] == "ot"
    cases = [
        ["sample", "--run", str(run), "--class", "3"],  # unconditional run
        ["train", "--data", "digits", "--coupling", "label-ot", "--out", str(tmp_path / "b")],
        ["train", "--data", "digits", "--conditional", "--method", "cfm"],
        ["train", "--data", "digits", "--conditional", "--guidance-dropout", "2"],
        ["train", "--data", "mnist:/nonexistent/dir", "--steps", "1",
         "--out", str(tmp_path / "c")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("otgen: error:"), (argv, err)
