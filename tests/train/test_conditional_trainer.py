"""Conditional image-flow trainer: bit-for-bit resume, run directory, evaluation keys,
config validation, the 28x28 (MNIST IDX) path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from otgen.data.mnist import write_idx
from otgen.metrics.digits import DigitsClassifier
from otgen.train.conditional import (
    ConditionalConfig,
    load_conditional_run,
    train_conditional,
)
from otgen.train.conditional_eval import evaluate_conditional

TINY = dict(steps=6, batch_size=16, width=4, emb_dim=8, ckpt_every=2, n_per_class=2, n_nll=3,
            solver="rk4", solver_steps=2, eval_guidance=(0.0, 2.0))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same_weights(a, b):
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


@pytest.mark.parametrize("coupling", ["label-ot", "label-penalty"])
def test_resume_is_bit_for_bit(tmp_path, coupling):
    cfg = ConditionalConfig(coupling=coupling, **TINY)
    _, full = train_conditional(cfg, tmp_path / "full", progress=False)
    train_conditional(cfg, tmp_path / "part", progress=False, stop_after=3)
    _, resumed = train_conditional(cfg, tmp_path / "part", progress=False, resume=True)
    assert resumed["step"] == full["step"] == 6
    assert resumed["loss"] == full["loss"]
    assert _same_weights(tmp_path / "full", tmp_path / "part")


def test_run_directory_and_metrics(tmp_path):
    cfg = ConditionalConfig(coupling="ot", **TINY)
    net, state = train_conditional(cfg, tmp_path, progress=False)
    # with v = 0 (zero-initialised output layer) the first loss is the batch mean of
    # |x1 - x0|^2 = |x0|^2 + |x1|^2 - 2 <x0, x1>: about 64 (noise) + |x1|^2 (<= 64) minus
    # what the OT pairing gains, so between 32 and 128 for any sane pairing
    assert 64 * 0.5 < state["loss"][0] < 128
    loaded, cfg2, st2 = load_conditional_run(tmp_path)
    assert cfg2 == cfg and st2["step"] == 6
    for p, q in zip(loaded.parameters(), net.parameters(), strict=True):
        assert torch.equal(p, q)
    clf = DigitsClassifier()  # untrained: only the plumbing of the metrics is checked here
    m = evaluate_conditional(loaded, cfg, tmp_path, state, classifier=clf)
    for key in ("digits_fd", "cond_acc", "nfe", "w2", "w2_floor", "sinkhorn_div", "bpd",
                "bpd_uncond", "digits_fd_g0", "cond_acc_g2", "nfe_g1", "digits_fd_floor"):
        assert key in m and m[key] is not None, key
    assert m["nfe"] == 2 * 4  # rk4, 2 steps
    assert 0.0 <= m["cond_acc"] <= 1.0 and m["w2"] > 0 and m["bpd"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["w2"] == m["w2"]
    for name in ("config.json", "loss.png", "samples.png", "samples_g0.png", "samples_g2.png",
                 "model.safetensors", "ema.safetensors"):
        assert (tmp_path / name).exists(), name


def test_config_validation():
    with pytest.raises(ValueError, match="uses the labels"):
        ConditionalConfig(conditional=False, coupling="label-ot")
    with pytest.raises(ValueError, match="`guidance_dropout`"):
        ConditionalConfig(guidance_dropout=1.5)
    with pytest.raises(ValueError, match="'digits' or 'mnist:PATH'"):
        ConditionalConfig(data="moons")
    with pytest.raises(ValueError, match="unknown config key"):
        ConditionalConfig.from_json({"widht": 3})


def test_mnist_idx_run_28x28(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte",
                  rng.integers(0, 256, (12, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte",
                  rng.integers(0, 10, 12, dtype=np.uint8))
    cfg = ConditionalConfig(data=f"mnist:{tmp_path}", **{**TINY, "steps": 2, "n_per_class": 1,
                                                         "n_nll": 2, "eval_guidance": (1.0,)})
    net, state = train_conditional(cfg, tmp_path / "run", progress=False)
    assert net.image_shape == (1, 28, 28) and len(state["loss"]) == 2
    m = evaluate_conditional(net, cfg, tmp_path / "run", state)
    assert "digits_fd" not in m and m["w2"] > 0 and m["bpd"] > 0  # no digits classifier
