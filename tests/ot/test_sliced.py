"""Sliced Wasserstein: exact cases, POT references, reproducibility, gradients."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otgen.ot.onedim import wasserstein_1d
from otgen.ot.sliced import projections, sliced_wasserstein

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clouds(n: int, m: int, d: int, seed: int):
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = 1.5 * torch.randn(m, d, generator=g, dtype=DT) + 0.7
    a = torch.rand(n, generator=g, dtype=DT) + 0.05
    b = torch.rand(m, generator=g, dtype=DT) + 0.05
    return x, y, a / a.sum(), b / b.sum()


# --------------------------------------------------------------------------- exact cases


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize(("n", "m", "weighted"), [(9, 9, False), (9, 14, False), (9, 14, True)])
def test_one_dimension_is_exact_wasserstein(p, n, m, weighted):
    x, y, a, b = _clouds(n, m, 1, 0)
    a, b = (a, b) if weighted else (None, None)
    sw = sliced_wasserstein(x, y, a, b, n_projections=7, p=p, generator=_gen(1))
    w = wasserstein_1d(x[:, 0], y[:, 0], a, b, p=p)
    torch.testing.assert_close(sw, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_matches_pot_with_the_same_directions(weighted, p):
    x, y, a, b = _clouds(20, 20 if not weighted else 31, 3, 2)
    a, b = (a, b) if weighted else (None, None)
    theta = projections(3, 50, _gen(3), DT)  # what sliced_wasserstein draws from _gen(3)
    sw = sliced_wasserstein(x, y, a, b, n_projections=50, p=p, generator=_gen(3))
    ref = ot.sliced_wasserstein_distance(
        x.numpy(),
        y.numpy(),
        None if a is None else a.numpy(),
        None if b is None else b.numpy(),
        p=p,
        projections=theta.T.numpy(),  # POT takes (d, L)
    )
    assert abs(float(sw) - float(ref)) <= 1e-10


def test_translation_is_exact_per_direction_and_in_expectation():
    x, _, _, _ = _clouds(30, 1, 4, 4)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
    L = 4000
    sw2 = sliced_wasserstein(x + c, x, n_projections=L, generator=_gen(5)) ** 2
    theta = projections(4, L, _gen(5), DT)
    torch.testing.assert_close(sw2, ((theta @ c) ** 2).mean(), rtol=1e-10, atol=1e-12)
    expected = float(c @ c) / 4  # E (theta . c)^2 = |c|^2 / d
    assert abs(float(sw2) - expected) <= 0.05 * expected


def test_identical_clouds_give_zero_with_finite_gradient():
    x, _, _, _ = _clouds(10, 1, 3, 6)
    x.requires_grad_(True)
    sw = sliced_wasserstein(x, x.detach(), n_projections=16, generator=_gen(7))
    assert float(sw.detach()) == 0.0
    (grad,) = torch.autograd.grad(sw, x)
    assert torch.isfinite(grad).all()


# --------------------------------------------------------------------------- bounds, references


@pytest.mark.parametrize("weighted", [False, True])
def test_bounded_by_exact_w2(weighted):
    for seed in range(3):
        x, y, a, b = _clouds(12, 17, 3, 10 + seed)
        a_np = a.numpy() if weighted else np.full(12, 1 / 12)
        b_np = b.numpy() if weighted else np.full(17, 1 / 17)
        w2 = ot.emd2(a_np, b_np, ot.dist(x.numpy(), y.numpy())) ** 0.5  # exact W_2
        sw = sliced_wasserstein(
            x, y, *((a, b) if weighted else ()), n_projections=64, generator=_gen(seed)
        )
        assert 0.0 < float(sw) <= w2 + 1e-12


def test_agrees_with_pot_in_expectation():
    x, y, _, _ = _clouds(40, 60, 5, 20)
    ours = sliced_wasserstein(x, y, n_projections=5000, generator=_gen(21))
    ref = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), n_projections=5000, seed=0)
    assert abs(float(ours) - float(ref)) <= 0.03 * float(ref)


# --------------------------------------------------------------------------- randomness


def test_generator_reproducibility():
    x, y, _, _ = _clouds(15, 15, 4, 30)
    s1 = sliced_wasserstein(x, y, n_projections=10, generator=_gen(0))
    s2 = sliced_wasserstein(x, y, n_projections=10, generator=_gen(0))
    s3 = sliced_wasserstein(x, y, n_projections=10, generator=_gen(1))
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, s3)
    s_default = sliced_wasserstein(x, y, n_projections=10)  # global RNG
    assert torch.isfinite(s_default)


def test_projections_are_unit_rows():
    theta = projections(5, 200, _gen(0), torch.float32)
    assert theta.shape == (200, 5) and theta.dtype == torch.float32
    torch.testing.assert_close(theta.norm(dim=1), torch.ones(200))
    assert torch.equal(theta, projections(5, 200, _gen(0), torch.float32))
    # roughly isotropic: E theta theta^T = I / d
    cov = (theta.double().T @ theta.double()) / 200
    torch.testing.assert_close(cov, torch.eye(5, dtype=DT) / 5, rtol=0, atol=0.06)


# --------------------------------------------------------------------------- gradients, dtypes


def test_gradcheck_wrt_points_and_weights():
    x, y, a, b = _clouds(6, 8, 2, 40)
    x.requires_grad_(True)
    a.requires_grad_(True)

    def fn(x, a):
        return sliced_wasserstein(x, y, a, b, n_projections=5, generator=_gen(41))

    assert torch.autograd.gradcheck(fn, (x, a))


def test_gradient_flows_and_descends():
    x, y, _, _ = _clouds(32, 32, 2, 42)
    x.requires_grad_(True)
    sw = sliced_wasserstein(x, y, n_projections=32, generator=_gen(0))
    (grad,) = torch.autograd.grad(sw, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    x_new = (x - 0.5 * grad / grad.norm()).detach()
    sw_new = sliced_wasserstein(x_new, y, n_projections=32, generator=_gen(0))
    assert float(sw_new) < float(sw.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keeps_dtype(dtype):
    x, y, a, b = (t.to(dtype) for t in _clouds(10, 12, 3, 50))
    out = sliced_wasserstein(x, y, a, b, n_projections=8, p=1, generator=_gen(0))
    assert out.dtype == dtype and out.shape == ()
    ref = sliced_wasserstein(x.double(), y.double(), a.double(), b.double(), n_projections=8,
                             p=1, generator=_gen(0))  # fmt: skip
    if dtype == torch.float64:
        assert torch.equal(out, ref)
    else:  # float32 draws a different stream; just check it is a sensible value
        assert 0.1 * float(ref) < float(out) < 10 * float(ref)


# --------------------------------------------------------------------------- errors


def test_error_messages():
    x = torch.zeros(4, 3, dtype=DT)
    with pytest.raises(ValueError, match=r"`x` and `y` must have the same dimension"):
        sliced_wasserstein(x, torch.zeros(4, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"`y` must be a point cloud of shape \(n, d\)"):
        sliced_wasserstein(x, torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match=r"`n_projections` must be >= 1"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(TypeError, match=r"`generator` must be a torch.Generator"):
        sliced_wasserstein(x, x, generator=0)
    with pytest.raises(ValueError, match=r"`a` must be non-negative"):
        sliced_wasserstein(x, x, -torch.ones(4, dtype=DT))
    with pytest.raises(ValueError, match=r"`b` must have positive total mass"):
        sliced_wasserstein(x, x, None, torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match=r"`p` must be a finite number > 0"):
        sliced_wasserstein(x, x, p=-1.0)
    with pytest.raises(ValueError, match=r"`x` must be finite"):
        sliced_wasserstein(x * float("inf"), x)
    with pytest.raises(TypeError, match=r"`y` has dtype torch.float32"):
        sliced_wasserstein(x, x.float())


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    m=st.integers(1, 30),
    d=st.integers(1, 5),
    scale=st.floats(1e-3, 1e3),
    p=st.sampled_from([1.0, 2.0, 3.0]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_finite_nonnegative_symmetric(n, m, d, scale, p, weighted, seed):
    g = _gen(seed)
    x = scale * torch.randn(n, d, generator=g, dtype=DT)
    y = scale * torch.randn(m, d, generator=g, dtype=DT) ** 3
    a = torch.rand(n, generator=g, dtype=DT) + 1e-3 if weighted else None
    b = torch.rand(m, generator=g, dtype=DT) + 1e-3 if weighted else None
    s_xy = sliced_wasserstein(x, y, a, b, n_projections=16, p=p, generator=_gen(seed + 1))
    s_yx = sliced_wasserstein(y, x, b, a, n_projections=16, p=p, generator=_gen(seed + 1))
    assert torch.isfinite(s_xy) and float(s_xy) >= 0
    torch.testing.assert_close(s_xy, s_yx, rtol=1e-10, atol=1e-12 * scale)
