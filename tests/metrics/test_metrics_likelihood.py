"""Metrics and CNF likelihood against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from otgen.flows.likelihood import bits_per_dim, log_likelihood, standard_normal_logprob
from otgen.metrics import bures_map_error, mmd, path_energy, w2
from otgen.ot import bures_map

D = torch.float64


def test_likelihood_of_an_affine_flow_matches_the_gaussian_closed_form():
    # v(t, x) = A x + c has flow x1 = e^A x0 + (e^A - I) A^{-1} c; x0 ~ N(0, I)
    A = torch.tensor([[0.3, 0.2], [-0.1, -0.4]], dtype=D)
    c = torch.tensor([0.5, -1.0], dtype=D)
    E = torch.linalg.matrix_exp(A)
    b = (E - torch.eye(2, dtype=D)) @ torch.linalg.solve(A, c)
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    res = log_likelihood(lambda t, x: x @ A.T + c, x1, atol=1e-10, rtol=1e-10)
    cov = E @ E.T
    ref = torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x1)
    torch.testing.assert_close(res.logp, ref, atol=1e-6, rtol=0)


def test_hutchinson_likelihood_is_unbiased():
    W = torch.tensor([[0.5, -0.3], [0.2, 0.1]], dtype=D)

    def field(t, x):
        return torch.tanh(x @ W.T) * (1 + t)

    x1 = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    exact = log_likelihood(field, x1, atol=1e-8, rtol=1e-8).logp
    g = torch.Generator().manual_seed(2)
    est = torch.stack([log_likelihood(field, x1, divergence="hutchinson", generator=g,
                                      atol=1e-6, rtol=1e-6).logp for _ in range(200)])
    se = est.std(0) / math.sqrt(200)
    assert torch.all((est.mean(0) - exact).abs() < 4 * se + 1e-9)


def test_bits_per_dim_of_standard_normal():
    x = torch.zeros(1, 3, dtype=D)
    lp = standard_normal_logprob(x)
    assert float(bits_per_dim(lp, 3)) == pytest.approx(0.5 * math.log(2 * math.pi) / math.log(2))


def test_path_energy_of_a_straight_constant_flow_equals_w2_squared():
    c = torch.tensor([1.0, 2.0], dtype=D)
    x0 = torch.randn(100, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    st = path_energy(lambda t, x: c.expand_as(x), x0)
    assert st.energy == pytest.approx(5.0, rel=1e-9)
    assert st.w2sq == pytest.approx(5.0, rel=1e-9)  # a translation is the OT map
    assert st.npe == pytest.approx(0.0, abs=1e-8) and abs(st.straightness) < 1e-8


def test_bures_map_error_is_zero_for_the_bures_map():
    m0, m1 = torch.zeros(2, dtype=D), torch.tensor([1.0, -1.0], dtype=D)
    S0 = torch.eye(2, dtype=D)
    S1 = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=D)
    x0 = torch.randn(50, 2, dtype=D)
    T = bures_map(m0, S0, m1, S1)
    assert bures_map_error(x0, T(x0), m0, S0, m1, S1) == pytest.approx(0.0, abs=1e-20)


def test_w2_and_mmd_basic_properties():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 2, generator=g, dtype=D)
    y = torch.randn(300, 2, generator=g, dtype=D)
    assert float(w2(x, x + torch.tensor([3.0, 4.0], dtype=D))) == pytest.approx(5.0)
    assert abs(float(mmd(x, y))) < 0.01 < float(mmd(x, y + 2))
    # large clouds go through the online Sinkhorn divergence
    # (for a translation the debiased divergence is exactly |c|^2 at any eps)
    big = w2(x, x + torch.tensor([3.0, 4.0], dtype=D), exact_max=100, eps_rel=0.05)
    assert float(big) == pytest.approx(5.0, rel=1e-3)
