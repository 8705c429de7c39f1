"""Bures--Wasserstein closed forms: formulas, references, maps, geodesics, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otgen.ot.gaussian import (
    GaussianMap,
    bures_map,
    gaussian_mccann,
    gaussian_w2,
    gaussian_w2_squared,
    inv_sqrtm_psd,
    sqrtm_psd,
)

DT = torch.float64


def _spd(d: int, g: torch.Generator, *, batch: tuple[int, ...] = (), ridge: float = 0.1):
    B = torch.randn(*batch, d, d, generator=g, dtype=DT)
    return B @ B.mT / d + ridge * torch.eye(d, dtype=DT)


def _rand_gaussians(d: int, seed: int, batch: tuple[int, ...] = ()):
    g = torch.Generator().manual_seed(seed)
    m0 = torch.randn(*batch, d, generator=g, dtype=DT)
    m1 = torch.randn(*batch, d, generator=g, dtype=DT)
    return m0, _spd(d, g, batch=batch), m1, _spd(d, g, batch=batch)


def _np_sqrtm(S: np.ndarray) -> np.ndarray:
    lam, V = np.linalg.eigh(0.5 * (S + S.T))
    return (V * np.sqrt(np.clip(lam, 0, None))) @ V.T


def _np_w2_squared(m0, S0, m1, S1) -> float:
    """Second reference for (near-)singular covariances: numpy eigh square roots."""
    S0, S1 = S0.numpy(), S1.numpy()
    r0 = _np_sqrtm(S0)
    cross = np.trace(_np_sqrtm(r0 @ S1 @ r0))
    return float(((m0 - m1) ** 2).sum()) + np.trace(S0) + np.trace(S1) - 2 * cross


def _scipy_w2_squared(m0, S0, m1, S1) -> float:
    """Independent reference: scipy.linalg.sqrtm of the symmetric S0^½ S1 S0^½."""
    S0, S1 = S0.numpy(), S1.numpy()
    r0 = np.real(scipy.linalg.sqrtm(S0))
    cross = np.trace(np.real(scipy.linalg.sqrtm(r0 @ S1 @ r0)))
    return float(((m0 - m1) ** 2).sum()) + np.trace(S0) + np.trace(S1) - 2 * cross


# --------------------------------------------------------------------------- values


def test_diagonal_covariances_closed_form():
    g = torch.Generator().manual_seed(0)
    s0, s1 = torch.rand(4, 3, generator=g, dtype=DT), torch.rand(4, 3, generator=g, dtype=DT)
    m0, m1 = torch.randn(4, 3, generator=g, dtype=DT), torch.randn(4, 3, generator=g, dtype=DT)
    expected = ((s0.sqrt() - s1.sqrt()) ** 2).sum(-1) + ((m0 - m1) ** 2).sum(-1)
    got = gaussian_w2_squared(m0, torch.diag_embed(s0), m1, torch.diag_embed(s1))
    assert got.shape == (4,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        gaussian_w2(m0, torch.diag_embed(s0), m1, torch.diag_embed(s1)), expected.sqrt()
    )


@pytest.mark.parametrize("d", [1, 2, 5, 8])
def test_random_spd_matches_scipy(d):
    for seed in range(3):
        m0, S0, m1, S1 = _rand_gaussians(d, seed)
        ref = _scipy_w2_squared(m0, S0, m1, S1)
        got = gaussian_w2_squared(m0, S0, m1, S1)
        assert got.dtype == DT and got.shape == ()
        assert abs(float(got) - ref) <= 1e-10 * max(1.0, abs(ref))


def test_batched_broadcasting_matches_loop():
    m0, S0, m1, S1 = _rand_gaussians(3, 1, batch=(2, 4))
    S1_single = S1[0, 0]  # broadcast one covariance against the batch
    got = gaussian_w2_squared(m0, S0, m1, S1_single)
    assert got.shape == (2, 4)
    for i in range(2):
        for j in range(4):
            one = gaussian_w2_squared(m0[i, j], S0[i, j], m1[i, j], S1_single)
            torch.testing.assert_close(got[i, j], one)


def test_identical_gaussians_give_zero():
    m0, S0, _, _ = _rand_gaussians(4, 2)
    assert float(gaussian_w2_squared(m0, S0, m0, S0)) <= 1e-12
    assert float(gaussian_w2(m0, S0, m0, S0)) <= 1e-6
    S0.requires_grad_(True)
    (grad,) = torch.autograd.grad(gaussian_w2(m0, S0, m0, S0.detach()), S0)
    assert torch.isfinite(grad).all()


def test_symmetric_in_its_arguments():
    m0, S0, m1, S1 = _rand_gaussians(5, 3)
    torch.testing.assert_close(
        gaussian_w2(m0, S0, m1, S1), gaussian_w2(m1, S1, m0, S0), rtol=1e-12, atol=1e-12
    )


def test_float32_keeps_dtype():
    m0, S0, m1, S1 = (t.float() for t in _rand_gaussians(3, 4))
    out = gaussian_w2(m0, S0, m1, S1)
    assert out.dtype == torch.float32
    ref = _scipy_w2_squared(*(t.double() for t in (m0, S0, m1, S1))) ** 0.5
    assert abs(float(out) - ref) <= 1e-4 * max(1.0, ref)


# --------------------------------------------------------------------------- square roots


def test_sqrtm_and_inverse_sqrtm():
    g = torch.Generator().manual_seed(5)
    S = _spd(6, g, batch=(3,))
    R = sqrtm_psd(S)
    torch.testing.assert_close(R @ R, S, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(R, R.mT)
    ref = torch.from_numpy(np.real(scipy.linalg.sqrtm(S[0].numpy())))
    torch.testing.assert_close(R[0], ref, rtol=1e-10, atol=1e-10)
    eye = torch.eye(6, dtype=DT).expand(3, 6, 6)
    torch.testing.assert_close(inv_sqrtm_psd(S) @ R, eye, rtol=1e-10, atol=1e-10)


def test_sqrtm_gradient_finite_for_repeated_eigenvalues():
    S = torch.eye(3, dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(sqrtm_psd(S).sum(), S)
    # d tr(1^T S^½ 1) at S = I is (1/2) * ones.
    torch.testing.assert_close(grad, torch.full((3, 3), 0.5, dtype=DT))


def test_inv_sqrtm_clamps_singular_directions():
    S = torch.diag(torch.tensor([1.0, 0.0], dtype=DT))
    R = inv_sqrtm_psd(S, eps=1e-8)
    torch.testing.assert_close(R, torch.diag(torch.tensor([1.0, 1e4], dtype=DT)))
    assert torch.isfinite(inv_sqrtm_psd(S)).all()


def test_sqrtm_gradcheck():
    g = torch.Generator().manual_seed(6)
    B = torch.randn(4, 4, generator=g, dtype=DT, requires_grad=True)

    def fn(B):
        return sqrtm_psd(B @ B.mT + torch.eye(4, dtype=DT)), inv_sqrtm_psd(B @ B.mT + 0.5)

    assert torch.autograd.gradcheck(fn, (B,))


# --------------------------------------------------------------------------- Bures map


def test_bures_map_pushes_S0_to_S1():
    m0, S0, m1, S1 = _rand_gaussians(5, 7, batch=(2,))
    T = bures_map(m0, S0, m1, S1)
    assert isinstance(T, GaussianMap) and T.A.shape == (2, 5, 5)
    A = T.A
    torch.testing.assert_close(A, A.mT, rtol=0, atol=1e-14)
    assert float(torch.linalg.eigvalsh(A).min()) >= -1e-12
    torch.testing.assert_close(A @ S0 @ A, S1, rtol=1e-10, atol=1e-10)
    x = m0[:, None, :] + torch.zeros(2, 3, 5, dtype=DT)
    torch.testing.assert_close(T(x), m1[:, None, :].expand(2, 3, 5))


def test_bures_map_pushforward_of_samples():
    m0, S0, m1, S1 = _rand_gaussians(3, 8)
    g = torch.Generator().manual_seed(9)
    z = torch.randn(200_000, 3, generator=g, dtype=DT)
    x = m0 + z @ torch.linalg.cholesky(S0).mT
    y = bures_map(m0, S0, m1, S1)(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(0), m1, rtol=0, atol=2e-2)
    torch.testing.assert_close(torch.cov(y.T), S1, rtol=0, atol=2e-2)


def test_bures_map_of_commuting_covariances():
    s0, s1 = torch.tensor([1.0, 4.0], dtype=DT), torch.tensor([9.0, 1.0], dtype=DT)
    T = bures_map(torch.zeros(2, dtype=DT), torch.diag(s0), torch.ones(2, dtype=DT), torch.diag(s1))
    torch.testing.assert_close(T.A, torch.diag((s1 / s0).sqrt()))


# --------------------------------------------------------------------------- McCann


def test_mccann_endpoints_and_constant_speed():
    m0, S0, m1, S1 = _rand_gaussians(4, 10)
    ma, Sa = gaussian_mccann(m0, S0, m1, S1, 0.0)
    mb, Sb = gaussian_mccann(m0, S0, m1, S1, 1.0)
    torch.testing.assert_close(ma, m0)
    torch.testing.assert_close(Sa, S0)
    torch.testing.assert_close(mb, m1)
    torch.testing.assert_close(Sb, S1, rtol=1e-10, atol=1e-10)
    w = gaussian_w2(m0, S0, m1, S1)
    ts = torch.tensor([0.1, 0.25, 0.5, 0.9], dtype=DT)
    mt, St = gaussian_mccann(m0, S0, m1, S1, ts)  # batched in t
    assert mt.shape == (4, 4) and St.shape == (4, 4, 4)
    torch.testing.assert_close(gaussian_w2(m0, S0, mt, St), ts * w, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gaussian_w2(mt, St, m1, S1), (1 - ts) * w, rtol=1e-9, atol=1e-9)


def test_mccann_rejects_time_outside_unit_interval():
    m0, S0, m1, S1 = _rand_gaussians(2, 11)
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 1\]"):
        gaussian_mccann(m0, S0, m1, S1, 1.5)


# --------------------------------------------------------------------------- gradients


def test_gradient_wrt_mean():
    m0, S0, m1, S1 = _rand_gaussians(3, 12)
    m0.requires_grad_(True)
    (grad,) = torch.autograd.grad(gaussian_w2_squared(m0, S0, m1, S1), m0)
    torch.testing.assert_close(grad, 2 * (m0 - m1).detach())


def test_gradient_wrt_covariances_is_identity_minus_bures_matrix():
    # dW²/dS0 = I - A and dW²/dS1 = I - A^{-1}, with A the Bures matrix from 0 to 1.
    m0, S0, m1, S1 = _rand_gaussians(4, 13)
    S0.requires_grad_(True)
    S1.requires_grad_(True)
    g0, g1 = torch.autograd.grad(gaussian_w2_squared(m0, S0, m1, S1), (S0, S1))
    A = bures_map(m0, S0, m1, S1).A.detach()
    eye = torch.eye(4, dtype=DT)
    torch.testing.assert_close(g0, eye - A, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g1, eye - torch.linalg.inv(A), rtol=1e-9, atol=1e-9)


def test_gradcheck_wrt_S1_symmetric_parametrisation():
    m0, S0, m1, _ = _rand_gaussians(3, 14)
    g = torch.Generator().manual_seed(15)
    B = torch.randn(3, 3, generator=g, dtype=DT, requires_grad=True)

    def fn(B):
        return gaussian_w2_squared(m0, S0, m1, B @ B.mT + 0.2 * torch.eye(3, dtype=DT))

    assert torch.autograd.gradcheck(fn, (B,))
    # Repeated eigenvalues (S0 = 2 I) must not break the gradient either.
    two = 2.0 * torch.eye(3, dtype=DT)
    assert torch.autograd.gradcheck(lambda B: gaussian_w2_squared(m0, two, m1, B @ B.mT), (B,))


def test_near_singular_covariance_is_finite():
    g = torch.Generator().manual_seed(16)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=DT))
    S0 = (Q * torch.tensor([1.0, 0.5, 1e-12], dtype=DT)) @ Q.T
    S0 = (0.5 * (S0 + S0.T)).requires_grad_(True)
    m0, _, m1, S1 = _rand_gaussians(3, 17)
    m0.requires_grad_(True)
    S1.requires_grad_(True)
    w = gaussian_w2(m0, S0, m1, S1)
    grads = torch.autograd.grad(w, (m0, S0, S1))
    assert torch.isfinite(w) and all(torch.isfinite(gr).all() for gr in grads)
    ref = _scipy_w2_squared(m0.detach(), S0.detach(), m1, S1.detach())
    assert abs(float(w.detach()) ** 2 - ref) <= 1e-8
    assert torch.isfinite(bures_map(m0, S0, m1, S1).A).all()
    # Rank-deficient on both sides, identical: exactly zero, finite gradient.
    w0 = gaussian_w2(m0, S0, m0, S0.detach())
    assert float(w0.detach()) <= 1e-6
    assert torch.isfinite(torch.autograd.grad(w0, S0)[0]).all()


# --------------------------------------------------------------------------- errors


def test_error_messages():
    m, S = torch.zeros(3, dtype=DT), torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match=r"`S1` must be a batch of square matrices"):
        gaussian_w2(m, S, m, torch.ones(3, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"`m1` must have dimension d = 3"):
        gaussian_w2(m, S, torch.zeros(2, dtype=DT), S)
    with pytest.raises(ValueError, match=r"`S0` must be symmetric"):
        gaussian_w2(m, S + torch.triu(torch.ones(3, 3, dtype=DT), 1), m, S)
    with pytest.raises(ValueError, match=r"`S1` must be positive semi-definite"):
        gaussian_w2(m, S, m, -S)
    with pytest.raises(ValueError, match=r"`S0` must be finite"):
        gaussian_w2(m, S * float("nan"), m, S)
    with pytest.raises(ValueError, match=r"do not broadcast"):
        gaussian_w2(torch.zeros(2, 3, dtype=DT), S, torch.zeros(4, 3, dtype=DT), S)
    with pytest.raises(TypeError, match=r"`m0` must be a torch.Tensor"):
        gaussian_w2([0.0, 0.0, 0.0], S, m, S)
    with pytest.raises(TypeError, match=r"`S1` has dtype torch.float32"):
        gaussian_w2(m, S, m, S.float())
    with pytest.raises(ValueError, match=r"`x` must have shape \(n, 3\)"):
        bures_map(m, S, m, S)(torch.zeros(5, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"`eps` must be a number > 0"):
        inv_sqrtm_psd(S, eps=0.0)


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 5),
    batch=st.integers(1, 3),
    scale0=st.floats(1e-3, 1e3),
    scale1=st.floats(1e-3, 1e3),
    rank=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_finite_nonnegative_symmetric(d, batch, scale0, scale1, rank, seed):
    g = torch.Generator().manual_seed(seed)
    m0 = scale0 * torch.randn(batch, d, generator=g, dtype=DT)
    m1 = scale1 * torch.randn(batch, d, generator=g, dtype=DT)
    B0 = torch.randn(batch, d, min(rank, d), generator=g, dtype=DT)  # possibly low rank
    B1 = torch.randn(batch, d, d, generator=g, dtype=DT)
    S0, S1 = scale0**2 * B0 @ B0.mT, scale1**2 * B1 @ B1.mT
    w01 = gaussian_w2(m0, S0, m1, S1)
    w10 = gaussian_w2(m1, S1, m0, S0)
    assert w01.shape == (batch,)
    assert torch.isfinite(w01).all() and (w01 >= 0).all()
    scale = max(scale0, scale1)
    torch.testing.assert_close(w01, w10, rtol=1e-6, atol=1e-6 * scale)
    ref = torch.tensor([_np_w2_squared(m0[i], S0[i], m1[i], S1[i]) for i in range(batch)])
    torch.testing.assert_close(w01**2, ref.to(DT), rtol=1e-6, atol=1e-6 * scale**2)
