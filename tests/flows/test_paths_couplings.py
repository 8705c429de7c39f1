"""Paths: u_t is the time derivative of x_t, endpoints, marginals; couplings: OT
permutations without duplicates, entropic rows, objectives."""

from __future__ import annotations

import pytest
import torch

from otgen.flows import (
    BrownianBridgePath,
    CurvedPath,
    EntropicOTCoupling,
    ExactOTCoupling,
    IndependentCoupling,
    LinearPath,
    LipmanPath,
    VPPath,
    make_matcher,
)
from otgen.flows.couplings import sample_rows
from otgen.ot import solve

D = torch.float64
PATHS = [LinearPath(0.0), LinearPath(0.3), LipmanPath(1e-3), BrownianBridgePath(0.7),
         VPPath("cosine"), VPPath("linear"), CurvedPath(0.8), CurvedPath(0.5, seed=3)]


def _batch(b, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=D), torch.randn(b, d, generator=g, dtype=D) + 2


@pytest.mark.parametrize("path", PATHS, ids=lambda p: repr(p))
@pytest.mark.parametrize("d", [2, 5])
def test_target_velocity_is_time_derivative(path, d):
    x0, x1 = _batch(16, d, 0)
    eps = torch.randn(16, d, generator=torch.Generator().manual_seed(1), dtype=D)
    t = torch.linspace(0.05, 0.95, 16, dtype=D)
    h = 1e-6
    up = path.sample(x0, x1, t + h, eps=eps).xt
    dn = path.sample(x0, x1, t - h, eps=eps).xt
    ut = path.sample(x0, x1, t, eps=eps).ut
    torch.testing.assert_close(ut, (up - dn) / (2 * h), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("path", [LinearPath(0.0), BrownianBridgePath(1.0), CurvedPath(1.0),
                                  VPPath("cosine")], ids=repr)
def test_endpoints(path):
    x0, x1 = _batch(10, 2, 2)
    ones, zeros = torch.ones(10, dtype=D), torch.zeros(10, dtype=D)
    torch.testing.assert_close(path.sample(x0, x1, zeros).xt, x0)
    torch.testing.assert_close(path.sample(x0, x1, ones).xt, x1)


def test_curved_path_bulges_perpendicular_to_the_chord():
    x0, x1 = _batch(32, 2, 3)
    p = CurvedPath(0.5)
    n = p.normal(x0, x1)
    assert torch.allclose((n * (x1 - x0)).sum(1), torch.zeros(32, dtype=D), atol=1e-12)
    torch.testing.assert_close(n.norm(dim=1), (x1 - x0).norm(dim=1))
    x0h, x1h = _batch(32, 6, 4)
    nh = CurvedPath(0.5).normal(x0h, x1h)
    assert torch.allclose((nh * (x1h - x0h)).sum(1), torch.zeros(32, dtype=D), atol=1e-10)


def test_vp_path_preserves_variance():
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(200_000, 1, generator=g, dtype=D)
    x1 = torch.randn(200_000, 1, generator=g, dtype=D)  # unit-variance data
    for sched in ("cosine", "linear"):
        t = torch.full((200_000,), 0.4, dtype=D)
        xt = VPPath(sched).sample(x0, x1, t).xt
        assert float(xt.var()) == pytest.approx(1.0, abs=0.01)


def test_brownian_bridge_marginal_variance_and_score():
    x0 = torch.zeros(100_000, 1, dtype=D)
    x1 = torch.ones(100_000, 1, dtype=D)
    t = torch.full((100_000,), 0.3, dtype=D)
    draw = BrownianBridgePath(0.5).sample(x0, x1, t, generator=torch.Generator().manual_seed(6))
    assert float(draw.xt.mean()) == pytest.approx(0.3, abs=5e-3)
    assert float(draw.xt.var()) == pytest.approx(0.25 * 0.3 * 0.7, rel=2e-2)
    # score of N(mu_t, s_t^2): -(x - mu_t) / s_t^2
    s2 = 0.25 * 0.3 * 0.7
    torch.testing.assert_close(draw.score, -(draw.xt - 0.3) / s2)


def test_exact_ot_coupling_is_a_permutation_at_the_ot_cost():
    x0, x1 = _batch(64, 3, 7)
    a0, a1, j = ExactOTCoupling()(x0, x1)
    assert torch.equal(torch.sort(j).values, torch.arange(64))  # no duplicates or drops
    assert torch.equal(a0, x0)
    cost = float(((a0 - a1) ** 2).sum(1).mean())
    assert cost == pytest.approx(float(solve(x0, x1).cost), rel=1e-10)
    assert cost < float(((x0 - x1) ** 2).sum(1).mean())


def test_entropic_coupling_follows_the_plan_rows():
    x0, x1 = _batch(6, 2, 8)
    cp = EntropicOTCoupling(eps=0.5, tol=1e-10)
    plan = solve(x0, x1, method="sinkhorn", eps=0.5, tol=1e-10).plan
    g = torch.Generator().manual_seed(9)
    counts = torch.zeros(6, 6, dtype=D)
    for _ in range(600):
        _, _, j = cp(x0, x1, g)
        counts[torch.arange(6), j] += 1
    freq = counts / 600  # each entry: standard error <= 0.5 / sqrt(600) = 0.02
    torch.testing.assert_close(freq, plan * 6, atol=0.07, rtol=0)


def test_sample_rows_draws_each_column_with_its_row_probability():
    # rows with a zero entry (never drawn), mass on the last column (the clamp), unnormalised
    plan = torch.tensor([[0.0, 1.0, 3.0, 0.0], [2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 5.0]],
                        dtype=D)
    g = torch.Generator().manual_seed(3)
    n = 20_000
    counts = torch.zeros_like(plan)
    for _ in range(n // 1000):
        j = sample_rows(plan.repeat(1000, 1), g).reshape(1000, 3)
        counts += torch.nn.functional.one_hot(j, 4).sum(0).to(D)
    freq = counts / n
    target = plan / plan.sum(1, keepdim=True)
    assert torch.all(freq[target == 0] == 0)  # zero-probability entries are never drawn
    # binomial standard error <= 0.5 / sqrt(n) = 0.0035; 5 s.e.
    torch.testing.assert_close(freq, target, atol=0.018, rtol=0)


def test_independent_coupling_is_identity():
    x0, x1 = _batch(5, 2, 10)
    _, y, j = IndependentCoupling()(x0, x1)
    assert torch.equal(y, x1) and torch.equal(j, torch.arange(5))


def test_loss_is_zero_for_the_exact_conditional_field_of_a_deterministic_pairing():
    # x1 = x0 + c for all samples: the marginal field of the straight path is the constant c
    x0 = torch.randn(128, 2, dtype=D)
    c = torch.tensor([1.0, -2.0], dtype=D)
    fm = make_matcher("cfm")
    loss = fm.loss(lambda t, x: c.expand_as(x), x0, x0 + c)
    assert float(loss) == pytest.approx(0.0, abs=1e-20)


def test_otcfm_straightens_pairs_relative_to_cfm():
    x0, x1 = _batch(256, 2, 11)
    b_ot = make_matcher("otcfm").sample(x0, x1)
    b_i = make_matcher("cfm").sample(x0, x1)
    # conditional velocities of OT pairs are shorter on average (smaller transport cost)
    assert float((b_ot.ut ** 2).sum(1).mean()) < float((b_i.ut ** 2).sum(1).mean())


def test_bad_input():
    x0, x1 = _batch(4, 2, 12)
    with pytest.raises(ValueError, match="one shape"):
        ExactOTCoupling()(x0, x1[:3])
    with pytest.raises(ValueError, match="`method` must be one of"):
        make_matcher("ddpm")
    with pytest.raises(ValueError, match="`sigma` must be"):
        LinearPath(-1.0)
