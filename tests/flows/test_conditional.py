"""Label-aware couplings and the conditional flow-matching objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from otgen.flows import ExactOTCoupling, IndependentCoupling
from otgen.flows.conditional import (
    ClassPenaltyOTCoupling,
    ConditionalFlowMatcher,
    LabelBlindCoupling,
    WithinClassOTCoupling,
    assign_noise_labels,
    make_conditional_matcher,
)
from otgen.flows.paths import LinearPath


def _batch(b=24, d=3, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (b,), generator=g)
    x1 = torch.randn(b, d, generator=g, dtype=torch.float64) + 2.0 * y[:, None].double()
    x0 = torch.randn(b, d, generator=g, dtype=torch.float64)
    return x0, x1, y


def _sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).numpy()


def _lsa_cost(a, b):
    C = _sq(a, b)
    r, c = linear_sum_assignment(C)
    return float(C[r, c].sum())


def _is_perm(j, n):
    return torch.equal(torch.sort(j).values, torch.arange(n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_within_class_ot_is_a_class_preserving_permutation_optimal_per_class(seed):
    x0, x1, y = _batch(seed=seed)
    c0 = assign_noise_labels(y, torch.Generator().manual_seed(7))
    x0p, x1p, yp, j = WithinClassOTCoupling()(x0, x1, y, torch.Generator().manual_seed(7))
    assert _is_perm(j, y.numel()) and torch.equal(x1p, x1[j]) and torch.equal(yp, y[j])
    assert torch.equal(yp, c0)  # noise labelled c is paired with data of class c
    for c in torch.unique(y).tolist():
        rows = torch.nonzero(c0 == c).flatten()
        got = float(((x0[rows] - x1p[rows]) ** 2).sum())
        assert got == pytest.approx(_lsa_cost(x0[rows], x1[y == c]), rel=1e-12)


def test_class_penalty_interpolates_between_plain_and_within_class_ot():
    x0, x1, y = _batch(b=30, seed=3)
    c0 = assign_noise_labels(y, torch.Generator().manual_seed(5))

    def run(lam):
        _, x1p, yp, j = ClassPenaltyOTCoupling(penalty=lam)(
            x0, x1, y, torch.Generator().manual_seed(5))
        assert _is_perm(j, 30)
        return float(((x0 - x1p) ** 2).sum()), int((yp != c0).sum())

    cost0, _ = run(0.0)
    assert cost0 == pytest.approx(_lsa_cost(x0, x1), rel=1e-12)  # lambda = 0: plain OT
    big_cost, big_mis = run(1e6)
    _, x1w, _, _ = WithinClassOTCoupling()(x0, x1, y, torch.Generator().manual_seed(5))
    assert big_mis == 0
    assert big_cost == pytest.approx(float(((x0 - x1w) ** 2).sum()), rel=1e-12)
    # parametric LP: as lambda grows, mismatches never increase and the transport cost
    # never decreases
    costs, mis = zip(*(run(lam) for lam in (0.0, 1.0, 4.0, 16.0, 64.0, 1e6)), strict=True)
    assert all(a >= b for a, b in zip(mis, mis[1:], strict=False))
    assert all(a <= b + 1e-9 for a, b in zip(costs, costs[1:], strict=False))
    assert mis[0] > 0  # with well separated classes plain OT does cross classes here


def test_label_blind_ot_biases_the_noise_given_the_class_label_aware_does_not():
    """The TorchCFM issue: under plain minibatch OT, E[x0 | class] != 0."""
    g = torch.Generator().manual_seed(0)
    means = {"ot": torch.zeros(2, 2), "label-ot": torch.zeros(2, 2)}
    counts = torch.zeros(2)
    for _ in range(60):
        y = torch.randint(2, (32,), generator=g)
        x1 = torch.randn(32, 2, generator=g) * 0.3
        x1[:, 0] += 3.0 * (2 * y - 1)  # class 0 at -3 e1, class 1 at +3 e1
        x0 = torch.randn(32, 2, generator=g)
        for name in means:
            x0p, _, yp, _ = make_conditional_matcher(name).pair(x0, x1, y, g)
            means[name].index_add_(0, yp, x0p)
        counts += torch.bincount(y, minlength=2)
    for name in means:
        means[name] /= counts[:, None]
    # ~960 noise vectors per class: the label-aware mean is 0 +- 0.03 per coordinate
    assert float(means["label-ot"].abs().max()) < 0.15
    assert float(means["ot"][1, 0]) > 0.5 and float(means["ot"][0, 0]) < -0.5


def test_label_blind_wrapper_matches_the_plain_couplings():
    x0, x1, y = _batch(seed=4)
    j = LabelBlindCoupling(ExactOTCoupling())(x0, x1, y)[3]
    assert torch.equal(j, ExactOTCoupling()(x0, x1)[2])
    assert torch.equal(LabelBlindCoupling(IndependentCoupling())(x0, x1, y)[3],
                       torch.arange(y.numel()))


def test_conditional_matcher_draws_the_straight_path_and_drops_labels():
    x0, x1, y = _batch(b=16, seed=5)
    m = ConditionalFlowMatcher(LinearPath(0.0), WithinClassOTCoupling(), p_uncond=0.0,
                               null_class=3)
    b = m.sample(x0, x1, y, torch.Generator().manual_seed(1))
    x1p = x1[b.j]
    t = b.t[:, None]
    assert torch.allclose(b.xt, (1 - t) * x0 + t * x1p, atol=1e-14)
    assert torch.allclose(b.ut, x1p - x0, atol=1e-14)
    assert torch.equal(b.c, y[b.j]) and torch.equal(b.y, y[b.j])
    all_null = ConditionalFlowMatcher(p_uncond=1.0, null_class=3).sample(
        x0, x1, y, torch.Generator().manual_seed(1))
    assert bool((all_null.c == 3).all())
    # the loss is the mean over the batch of the squared error summed over coordinates
    seen = {}

    def field(t_, x_, c_):
        seen.update(t=t_, x=x_, c=c_)
        return torch.zeros_like(x_)

    loss = m.loss(field, x0, x1, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(seen["c"], b.c) and torch.equal(seen["x"], b.xt)
    assert float(loss) == pytest.approx(float((b.ut ** 2).sum(1).mean()), rel=1e-12)


def test_bad_arguments():
    x0, x1, y = _batch(seed=6)
    with pytest.raises(ValueError, match="`coupling` must be one of"):
        make_conditional_matcher("nearest")
    with pytest.raises(ValueError, match="`y1` must be int64 labels"):
        WithinClassOTCoupling()(x0, x1, y[:-1])
    with pytest.raises(ValueError, match="`p_uncond`"):
        ConditionalFlowMatcher(p_uncond=1.5)
    with pytest.raises(ValueError, match="`penalty`"):
        ClassPenaltyOTCoupling(penalty=-1.0)
    bad = x1.clone()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="`x1` must be finite"):
        WithinClassOTCoupling()(x0, bad, y)
