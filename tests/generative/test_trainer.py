"""The trainer: every model lowers W2 to held-out moons, checkpoints resume bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from otgen.train.generative import (
    GenerativeConfig,
    config_from,
    evaluate_generative,
    load_generative_run,
    train_generative,
)

TINY = dict(n_train=512, n_eval=400, hidden=32, depth=2, batch_size=128, ckpt_every=0)
STEPS = {"wgan": 150, "semidiscrete": 150, "sinkhorn-gen": 60, "wae": 150, "vae-elbo": 200}


# wgan (3 critic steps per generator step) and semidiscrete (5 ascent steps) are the slow ones
SLOW = {"wgan", "semidiscrete"}


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m
                                   for m in sorted(STEPS)])
def test_every_model_lowers_w2_to_held_out_moons(tmp_path, model):
    extra = {"critic_steps": 3} if model == "wgan" else {}
    if model == "semidiscrete":
        extra = {"dual_steps": 5, "dual_batch": 512, "lr": 5e-4}
    cfg = GenerativeConfig(model=model, steps=STEPS[model], **TINY, **extra)
    net, state = train_generative(cfg, tmp_path, progress=False)
    metrics = evaluate_generative(net, cfg, state, tmp_path, figures=model == "wgan")
    assert metrics["w2"] < 0.9 * metrics["w2_init"], metrics
    assert state["step"] == STEPS[model] and len(state["history"]["loss"]) == STEPS[model]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["w2"] == metrics["w2"]
    if model == "wgan":
        assert (tmp_path / "samples.png").exists() and (tmp_path / "loss.png").exists()
        assert metrics["w1"] > 0 and abs(metrics["w1_critic"]) < 2 * metrics["w1"]
    if model == "semidiscrete":  # F(h~) is a lower bound of W2^2 to the atoms (up to MC)
        assert metrics["semidual"] <= 1.1 * metrics["w2sq_train"]


def test_resume_is_bit_for_bit(tmp_path):
    cfg = GenerativeConfig(model="wgan", steps=8, critic_steps=2, **TINY)
    full, _ = train_generative(cfg, tmp_path / "full", progress=False)
    train_generative(cfg, tmp_path / "cut", progress=False, stop_after=4)
    resumed, state = train_generative(cfg, tmp_path / "cut", resume=True, progress=False)
    assert state["step"] == 8
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    model, cfg2, _ = load_generative_run(tmp_path / "cut")
    assert cfg2 == cfg and torch.equal(model.sample(5, torch.Generator().manual_seed(1)),
                                       resumed.sample(5, torch.Generator().manual_seed(1)))


def test_digits_run_and_config_errors(tmp_path):
    cfg = config_from("wae", {"data": "digits", "steps": 5, "hidden": 16, "depth": 1})
    assert cfg.data_params == {} and cfg.n_eval == 2000
    net, state = train_generative(cfg, tmp_path, progress=False)
    assert net.sample(3).shape == (3, 64)
    with pytest.raises(ValueError, match="unknown generative config"):
        GenerativeConfig.from_json({"model": "wgan", "critic_iters": 5})
    with pytest.raises(ValueError, match="model"):
        GenerativeConfig(model="gan")
    with pytest.raises(ValueError, match="data_params"):
        GenerativeConfig(model="wae", data="digits")
    with pytest.raises(ValueError, match="no checkpoint"):
        train_generative(GenerativeConfig(model="wae"), tmp_path / "none", resume=True)
