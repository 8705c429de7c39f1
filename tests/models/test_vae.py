"""Digits data, k-means, the RBF variance network and the VAE's ELBO and training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from otgen.data.digits import digits_split_indices, load_digits, to_images
from otgen.models.vae import VAE, RBFVariance, gaussian_log_likelihood, kmeans
from otgen.train.vae import VAEConfig, evaluate_vae, load_vae_run, train_vae

D64 = torch.float64


def test_digits_split_is_fixed_stratified_and_disjoint():
    tr, te = digits_split_indices("train"), digits_split_indices("test")
    assert tr.numel() == 1437 and te.numel() == 360
    assert not set(tr.tolist()) & set(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(1797))
    _, y = load_digits("test")
    assert torch.equal(torch.bincount(y), torch.full((10,), 36))
    assert torch.equal(digits_split_indices("test"), te)  # deterministic


def test_digits_scaling_and_dtype():
    x01, y = load_digits("all", "[0,1]", dtype=D64)
    xpm, _ = load_digits("all", "[-1,1]", dtype=torch.float32)
    assert x01.shape == (1797, 64) and x01.dtype == D64 and y.dtype == torch.int64
    assert float(x01.min()) == 0.0 and float(x01.max()) == 1.0
    assert torch.allclose(xpm.double(), 2 * x01 - 1, atol=1e-6)
    from sklearn.datasets import load_digits as sk

    assert torch.equal(to_images(x01 * 16)[5], torch.as_tensor(sk().images[5], dtype=D64))
    with pytest.raises(ValueError, match="`split` must be one of"):
        load_digits("valid")  # type: ignore[arg-type]


def test_kmeans_finds_separated_clusters(gen):
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=D64)
    x = (centres[:, None] + 0.1 * torch.randn(3, 50, 2, generator=gen, dtype=D64)).reshape(-1, 2)
    c, labels = kmeans(x, 3, generator=gen)
    found = c[torch.cdist(centres, c).argmin(1)]
    assert torch.allclose(found, centres, atol=0.1)
    assert all(len(set(labels[50 * i:50 * (i + 1)].tolist())) == 1 for i in range(3))


def test_rbf_std_grows_away_from_the_data(gen):
    net = RBFVariance(2, 3, 4, zeta=1e-2, min_std=1e-2).double()
    z = torch.randn(200, 2, generator=gen, dtype=D64)
    net.fit_centres(z, generator=gen, init_std=torch.full((3,), 0.1, dtype=D64))
    near = net(net.centres).mean()
    far = net(torch.tensor([[50.0, 0.0], [0.0, -80.0]], dtype=D64))
    assert near < 0.2
    assert torch.allclose(far, torch.full_like(far, math.sqrt(1e-4 + 1 / 1e-2)), rtol=1e-6)
    r = torch.linspace(0, 8, 30, dtype=D64)
    s = net(torch.stack([r, 0 * r], 1) + z.mean(0)).mean(1)
    assert s[-1] > 10 * s[0]


def test_gaussian_log_likelihood_and_kl_match_torch_distributions(gen):
    x, m = torch.randn(4, 5, generator=gen, dtype=D64), torch.randn(4, 5, generator=gen,
                                                                     dtype=D64)
    s = torch.rand(4, 5, generator=gen, dtype=D64) + 0.1
    want = torch.distributions.Normal(m, s).log_prob(x).sum(-1)
    assert torch.allclose(gaussian_log_likelihood(x, m, s), want)
    vae = VAE(5, 2, hidden=8, depth=1).double()
    elbo, ll, kl = vae.elbo(x, generator=gen)
    mu, logvar = vae.encode(x)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(kl, torch.distributions.kl_divergence(q, p).sum(-1))
    assert torch.allclose(elbo, ll - kl)


def test_tiny_training_run_improves_the_elbo_and_reloads(tmp_path):
    cfg = VAEConfig(steps=200, var_steps=50, hidden=32, depth=1, n_centres=8,
                    kl_warmup=50, ckpt_every=0)
    model, state = train_vae(cfg, tmp_path, progress=False)
    loss = state["loss"]
    assert len(loss) == 250 and all(math.isfinite(v) for v in loss)
    assert sum(loss[150:200]) < sum(loss[:50])  # phase 1 learns
    assert int(model.phase) == 1
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / name).exists()
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "vae"
    again, cfg2 = load_vae_run(tmp_path)
    assert cfg2 == cfg and int(again.phase) == 1
    z = torch.randn(5, 2)
    assert torch.equal(again.std(z), model.std(z)) and torch.equal(again.mean(z), model.mean(z))
    m = evaluate_vae(again, cfg)
    assert m["std_far"] > 5 * m["std_at_data"]  # the decoder is unsure away from the data
    with pytest.raises(ValueError, match="not a VAE run"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text('{"method": "otcfm"}')
        load_vae_run(tmp_path / "other")
