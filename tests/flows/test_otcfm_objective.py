"""OT-CFM objective against its definition and against TorchCFM's: time distribution, loss
scale, Adam invariance to that scale, the coupling is TorchCFM's exact plan (as a
permutation instead of draws with replacement)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from otgen.flows import ExactOTCoupling, make_matcher
from otgen.models import MLPVectorField

D = torch.float64


def _batch(b: int, seed: int, dtype: torch.dtype = D) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 2, generator=g, dtype=dtype),
            torch.randn(b, 2, generator=g, dtype=dtype) * 2 + 1)


@pytest.mark.parametrize("method", ["otcfm", "cfm"])
def test_times_are_uniform_on_the_unit_interval(method):
    # Kolmogorov-Smirnov against U[0, 1] on 20 000 times (precomputed pairs: no solve)
    n = 20_000
    x0, x1 = _batch(n, 0, torch.float32)
    b = make_matcher(method).sample(x0, x1, torch.Generator().manual_seed(1),
                                    pairs=(x0, x1, torch.arange(n)))
    t = torch.sort(b.t.double()).values
    grid = torch.arange(1, n + 1, dtype=D) / n
    ks = float(torch.maximum(grid - t, t - (grid - 1 / n)).max())
    assert ks < 1.63 / math.sqrt(n)  # the 1 % critical value
    assert float(t.min()) >= 0.0 and float(t.max()) < 1.0
    assert float(t.mean()) == pytest.approx(0.5, abs=4 * math.sqrt(1 / 12 / n))
    # x_t and u_t of the noiseless straight path
    tp = b.t[:, None]
    torch.testing.assert_close(b.xt, (1 - tp) * x0 + tp * x1)
    torch.testing.assert_close(b.ut, x1 - x0)


def test_times_do_not_depend_on_the_batch():
    # the times come from the generator alone: same generator state, other data, same t
    x0, x1 = _batch(64, 2)
    y0, y1 = _batch(64, 3)
    fm = make_matcher("otcfm")
    t1 = fm.sample(x0, x1, torch.Generator().manual_seed(4)).t
    t2 = fm.sample(y0, y1, torch.Generator().manual_seed(4)).t
    assert torch.equal(t1, t2)


def test_loss_sums_coordinates_and_averages_the_batch():
    # L = (1/B) sum_i |v(t_i, x_t,i) - (x1_j(i) - x0_i)|^2 = d * mean over all entries
    x0, x1 = _batch(50, 5)
    fm = make_matcher("otcfm")
    field = MLPVectorField(2, hidden=16, depth=2).double()
    loss = fm.loss(field, x0, x1, generator=torch.Generator().manual_seed(6))
    b = fm.sample(x0, x1, torch.Generator().manual_seed(6))
    _, y, _ = ExactOTCoupling()(x0, x1)
    torch.testing.assert_close(b.ut, y - x0)
    ref = ((field(b.t, b.xt) - (y - x0)) ** 2).mean() * 2
    torch.testing.assert_close(loss, ref)


def test_adam_is_invariant_to_the_loss_scale_of_the_two_libraries():
    # otgen's loss is d = 2 times TorchCFM's per-coordinate mean; Adam's update
    # m / (sqrt(v) + eps) is scale-free except through eps = 1e-8, far below the
    # gradient scale: 200 steps from one initialisation on identical batches and times
    # end at the same weights
    fm = make_matcher("otcfm")
    torch.manual_seed(0)
    a = MLPVectorField(2, hidden=32, depth=3, activation="selu").double()
    b = MLPVectorField(2, hidden=32, depth=3, activation="selu").double()
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-3)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-3)
    for k in range(200):
        x0, x1 = _batch(64, 100 + k)
        for model, opt, scale in ((a, opt_a, 1.0), (b, opt_b, 0.5)):
            loss = scale * fm.loss(model, x0, x1, generator=torch.Generator().manual_seed(k))
            opt.zero_grad()
            loss.backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)


def test_coupling_is_torchcfm_exact_plan():
    # TorchCFM draws B pairs with replacement from the exact plan P; otgen uses every
    # pair of P once. On a generic batch P is unique, a permutation matrix / B, and ours
    # is that permutation; so both losses have the same expectation over the pair draws
    optimal_transport = pytest.importorskip("torchcfm.optimal_transport")
    for seed in range(3):
        x0, x1 = _batch(128, 20 + seed)
        plan = optimal_transport.OTPlanSampler(method="exact").get_map(x0, x1)
        _, _, j = ExactOTCoupling()(x0, x1)
        ours = np.zeros((128, 128))
        ours[np.arange(128), j.numpy()] = 1 / 128
        np.testing.assert_allclose(plan, ours, atol=1e-12)


def test_straight_path_matches_torchcfm_on_the_same_pairs_and_times():
    cfm = pytest.importorskip("torchcfm.conditional_flow_matching")
    x0, x1 = _batch(40, 7)
    fm = make_matcher("otcfm")
    b = fm.sample(x0, x1, torch.Generator().manual_seed(8))
    _, y, _ = ExactOTCoupling()(x0, x1)
    t, xt, ut = cfm.ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(
        x0, y, t=b.t)
    torch.testing.assert_close(xt, b.xt)
    torch.testing.assert_close(ut, b.ut)
    field = MLPVectorField(2, hidden=16, depth=2).double()
    ours = fm.loss(field, x0, x1, generator=torch.Generator().manual_seed(8))
    theirs = torch.mean((field(t, xt) - ut) ** 2)
    torch.testing.assert_close(ours, 2 * theirs)  # d = 2
