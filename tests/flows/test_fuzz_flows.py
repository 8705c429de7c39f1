"""Hypothesis fuzzing of the public flow-matching pieces over shapes, dtypes and scales.

Properties on every generated case: each path's target velocity is the time derivative of
its sample at fixed noise (central differences), the endpoints are the path's marginals'
means; the exact minibatch coupling is a permutation whose cost is no larger than any
other pairing tried; every objective's loss is a finite scalar with finite gradients.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otgen.flows.couplings import EntropicOTCoupling, ExactOTCoupling, IndependentCoupling
from otgen.flows.matchers import make_matcher
from otgen.flows.paths import BrownianBridgePath, CurvedPath, LinearPath, LipmanPath, VPPath

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

PATHS = {
    "linear": lambda: LinearPath(0.0),
    "linear-sigma": lambda: LinearPath(0.1),
    "lipman": lambda: LipmanPath(1e-3),
    "bridge": lambda: BrownianBridgePath(0.5),
    "vp-cosine": lambda: VPPath("cosine"),
    "vp-linear": lambda: VPPath("linear"),
    "curved": lambda: CurvedPath(0.7),
}


@st.composite
def batches(draw, max_b: int = 24):
    b = draw(st.integers(1, max_b))
    shape = draw(st.sampled_from([(2,), (3,), (5,), (2, 3)]))
    scale = draw(st.sampled_from([1e-2, 1.0, 1e2]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x0 = scale * torch.randn(b, *shape, generator=g, dtype=torch.float64)
    x1 = scale * torch.randn(b, *shape, generator=g, dtype=torch.float64) + scale
    return x0, x1, g


@SETTINGS
@given(batches(), st.sampled_from(sorted(PATHS)), st.floats(0.05, 0.9))
def test_path_velocity_is_the_time_derivative(case, name, t0):
    x0, x1, g = case
    if name == "curved" and x0.ndim != 2:
        x0, x1 = x0.reshape(x0.shape[0], -1), x1.reshape(x1.shape[0], -1)
    path = PATHS[name]()
    b = x0.shape[0]
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    t = torch.full((b,), t0, dtype=x0.dtype)
    h = 1e-6
    s = path.sample(x0, x1, t, eps=eps)
    sp = path.sample(x0, x1, t + h, eps=eps)
    sm = path.sample(x0, x1, t - h, eps=eps)
    assert s.xt.shape == x0.shape and s.ut.shape == x0.shape
    assert bool(torch.isfinite(s.xt).all() and torch.isfinite(s.ut).all())
    fd = (sp.xt - sm.xt) / (2 * h)
    scale = float(x0.abs().max() + x1.abs().max() + eps.abs().max())
    torch.testing.assert_close(s.ut, fd, atol=1e-5 * scale, rtol=1e-5)


@SETTINGS
@given(batches(max_b=40))
def test_exact_coupling_is_an_optimal_permutation(case):
    x0, x1, g = case
    _, x1p, j = ExactOTCoupling()(x0, x1)
    b = x0.shape[0]
    assert sorted(j.tolist()) == list(range(b))  # every sample once: no duplicates/drops
    torch.testing.assert_close(x1p, x1[j])
    cost = float(((x0 - x1p) ** 2).sum())
    for other in (torch.arange(b), torch.randperm(b, generator=g)):
        assert cost <= float(((x0 - x1[other]) ** 2).sum()) * (1 + 1e-9) + 1e-12


@SETTINGS
@given(batches(max_b=16))
def test_entropic_and_independent_couplings_return_valid_partners(case):
    x0, x1, g = case
    flat0, flat1 = x0.reshape(x0.shape[0], -1), x1.reshape(x1.shape[0], -1)
    scale = float(((flat0[:, None] - flat1[None]) ** 2).sum(-1).mean()) + 1e-12
    _, _, j = EntropicOTCoupling(eps=0.1 * scale)(x0, x1, g)
    assert j.shape == (x0.shape[0],) and int(j.min()) >= 0 and int(j.max()) < x0.shape[0]
    _, x1i, ji = IndependentCoupling()(x0, x1)
    assert ji.tolist() == list(range(x0.shape[0])) and torch.equal(x1i, x1)


@SETTINGS
@given(batches(max_b=12), st.sampled_from(["otcfm", "cfm", "sbcfm", "fm", "vp", "rectified"]))
def test_every_objective_gives_a_finite_loss_and_gradient(case, method):
    x0, x1, g = case
    x0, x1 = x0.reshape(x0.shape[0], -1), x1.reshape(x1.shape[0], -1)
    d = x0.shape[1]
    net = torch.nn.Linear(d + 1, d).double()

    def field(t, x):
        return net(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], 1))

    loss = make_matcher(method).loss(field, x0, x1, generator=g)
    assert loss.shape == () and bool(torch.isfinite(loss))
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in net.parameters())
