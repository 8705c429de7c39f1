"""Digits metrics: the cached classifier, Frechet distance (vs the scipy FID formula),
conditional accuracy, dequantised bits/dim (closed forms)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from otgen.data.digits import load_digits
from otgen.metrics.digits import (
    DIGITS_LEVELS,
    DIGITS_OFFSET,
    DIGITS_STEP,
    conditional_accuracy,
    dequantized_bits_per_dim,
    digits_fd,
    frechet_distance,
    load_digits_classifier,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache per test process (shared with tests/cli/test_conditional_cmd.py)."""
    d = tmp_path_factory.getbasetemp() / "otgen-cache"
    load_digits_classifier(d)
    return d


def _fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance (scipy sqrtm of the product)."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_the_fid_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g,
                                                                            dtype=torch.float64)
    b = 0.5 * torch.randn(200, 6, generator=g, dtype=torch.float64) + 1.0
    assert float(frechet_distance(a, b)) == pytest.approx(_fid_reference(a.numpy(), b.numpy()),
                                                          rel=1e-8)
    assert float(frechet_distance(a, a)) == pytest.approx(0.0, abs=1e-9)
    shift = torch.randn(6, generator=g, dtype=torch.float64)  # translation invariance
    assert float(frechet_distance(a + shift, b + shift)) == pytest.approx(
        float(frechet_distance(a, b)), rel=1e-9)
    with pytest.raises(ValueError, match="same feature dimension"):
        frechet_distance(a, b[:, :5])


def test_classifier_is_cached_accurate_and_rebuilt_when_corrupted(cache):
    meta = json.loads((cache / "digits_classifier.json").read_text())
    assert meta["test_accuracy"] >= 0.97 and meta["train_accuracy"] >= 0.98
    weights = cache / "digits_classifier.safetensors"
    stamp = os.stat(weights).st_mtime_ns
    clf = load_digits_classifier(cache)
    assert os.stat(weights).st_mtime_ns == stamp  # loaded, not retrained
    x, y = load_digits("test", "[-1,1]")
    assert conditional_accuracy(x, y, classifier=clf) == pytest.approx(meta["test_accuracy"])
    assert conditional_accuracy(x, (y + 1) % 10, classifier=clf) < 0.05
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="does not match its checksum"):
        again = load_digits_classifier(cache)
    for p, q in zip(again.parameters(), clf.parameters(), strict=True):
        assert torch.equal(p, q)  # the recipe is deterministic: the same network again


def test_digits_fd_separates_real_from_noise(cache):
    clf = load_digits_classifier(cache)
    x_tr, _ = load_digits("train", "[-1,1]")
    x_te, _ = load_digits("test", "[-1,1]")
    real = digits_fd(x_tr[:360], x_te, classifier=clf)
    noise = digits_fd(torch.rand(360, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                      x_te, classifier=clf)
    assert 0 < real < 10 < 20 * real < noise


def test_bits_per_dim_of_the_identity_flow_matches_the_closed_form():
    """v = 0: the model is N(0, I); E_u[-log N(a(p + u - 1/2) + b)] is explicit."""
    x, _ = load_digits("test", "[0,1]", dtype=torch.float64)
    pixels = torch.round(x[:2] * 16).repeat(1000, 1)  # 2 images, 1000 draws of u each
    res = dequantized_bits_per_dim(lambda t, z: torch.zeros_like(z), pixels,
                                   generator=torch.Generator().manual_seed(0),
                                   dtype=torch.float64, divergence="hutchinson")
    d, a = 64, DIGITS_STEP
    m = a * pixels[:2] + DIGITS_OFFSET  # cell centres
    nll = 0.5 * (m ** 2 + a * a / 12).sum(1) + 0.5 * d * math.log(2 * math.pi)
    expect = (nll - d * math.log(a)) / (d * math.log(2))  # (2,)
    got = res.bpd.reshape(1000, 2).mean(0)
    assert torch.allclose(got, expect, rtol=2e-3)
    assert bool(((res.z - m.repeat(1000, 1)).abs() <= a / 2 + 1e-12).all())  # inside cells
    assert DIGITS_LEVELS == 17


def test_bits_per_dim_of_a_linear_flow_is_exact():
    """v = diag(lam) x: x1 = e^lam x0, log p1(z) = log N(e^-lam z) - sum(lam)."""
    lam = torch.linspace(-0.5, 0.5, 64, dtype=torch.float64)
    x, _ = load_digits("test", "[0,1]", dtype=torch.float64)
    pixels = torch.round(x[:5] * 16)
    res = dequantized_bits_per_dim(lambda t, z: z * lam, pixels, dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(1),
                                   atol=1e-10, rtol=1e-10)
    z0 = res.z * torch.exp(-lam)
    logp = -0.5 * (z0 ** 2).sum(1) - 32 * math.log(2 * math.pi) - float(lam.sum())
    expect = -(logp + 64 * math.log(DIGITS_STEP)) / (64 * math.log(2))
    assert torch.allclose(res.bpd, expect, rtol=1e-7)
