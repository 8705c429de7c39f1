"""Divergence estimators and CNF likelihoods against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from otgen.ode import (
    augmented_dynamics,
    divergence_exact,
    divergence_hutchinson,
    integrate,
    sample_probes,
)

D = torch.float64


def _mlp(seed: int = 0, d: int = 3, width: int = 16):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d, width, generator=g, dtype=D)
    b1 = torch.randn(width, generator=g, dtype=D)
    w2 = torch.randn(width, d, generator=g, dtype=D) / math.sqrt(width)
    def field(t, x):
        return torch.tanh(x @ w1 + b1 + t) @ w2
    return field


def _jacobians(field, t, x: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians, shape (B, d, d), by torch.autograd.functional.jacobian."""
    return torch.stack([
        torch.autograd.functional.jacobian(lambda z: field(t, z[None])[0], xb) for xb in x
    ])


def test_exact_divergence_of_linear_field_is_trace():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=D)
    x = torch.randn(7, 4, generator=g, dtype=D)
    v, div = divergence_exact(lambda t, y: y @ a.T + 1.0, torch.tensor(0.0), x)
    torch.testing.assert_close(v, x @ a.T + 1.0)
    torch.testing.assert_close(div, torch.full((7,), float(torch.trace(a)), dtype=D))


def test_exact_divergence_of_mlp_is_jacobian_trace():
    field, t = _mlp(), torch.tensor(0.3, dtype=D)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=D)
    _, div = divergence_exact(field, t, x)
    want = torch.diagonal(_jacobians(field, t, x), dim1=1, dim2=2).sum(-1)
    torch.testing.assert_close(div, want, rtol=1e-12, atol=1e-12)


def test_exact_divergence_for_image_shaped_state_and_constant_field():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(12, 12, generator=g, dtype=D)
    x = torch.randn(3, 2, 3, 2, generator=g, dtype=D)
    def field(t, y):
        return (y.flatten(1) @ m.T).reshape(y.shape)
    _, div = divergence_exact(field, 0.0, x)
    torch.testing.assert_close(div, torch.full((3,), float(torch.trace(m)), dtype=D))
    v, div = divergence_exact(lambda t, y: torch.ones_like(y), 0.0, x)
    assert torch.equal(div, torch.zeros(3, dtype=D))


def test_divergence_graph_follows_create_graph():
    a = torch.randn(3, 3, dtype=D, requires_grad=True)
    x = torch.randn(4, 3, dtype=D)
    def field(t, y):
        return y @ a.T
    for est in (divergence_exact,
                lambda f, t, y: divergence_hutchinson(f, t, y, n_probes=2)):
        _, div = est(field, 0.0, x)  # grad mode on -> differentiable (create_graph=None)
        (ga,) = torch.autograd.grad(div.sum(), a)
        if est is divergence_exact:  # d tr(A) / dA = I, summed over the batch
            torch.testing.assert_close(ga, 4 * torch.eye(3, dtype=D))
        with torch.no_grad():
            v, div = est(field, 0.0, x)
        assert not v.requires_grad and not div.requires_grad
    _, div = divergence_exact(field, 0.0, x, create_graph=False)
    assert not div.requires_grad


def _hutchinson_variance(jac: torch.Tensor, probe: str) -> torch.Tensor:
    """Variance of one-probe estimates: 2 ||J_sym||_F^2 (- 2 sum J_ii^2 for Rademacher)."""
    js = 0.5 * (jac + jac.transpose(-1, -2))
    var = 2 * (js ** 2).sum((-1, -2))
    if probe == "rademacher":
        var = var - 2 * (torch.diagonal(jac, dim1=-2, dim2=-1) ** 2).sum(-1)
    return var


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased_with_predicted_variance(probe):
    # Replicate one point R times: the rows get independent probes.
    field, t = _mlp(seed=4), torch.tensor(0.1, dtype=D)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(5), dtype=D)
    jac = _jacobians(field, t, x)[0]
    exact = float(torch.trace(jac))
    var1 = float(_hutchinson_variance(jac, probe))
    reps = 4000
    xr = x.expand(reps, 3)
    gen = torch.Generator().manual_seed(6)
    for k in (1, 8):
        with torch.no_grad():  # estimates only; the divergence still uses autograd inside
            _, est = divergence_hutchinson(field, t, xr, n_probes=k, probe=probe,
                                           generator=gen)
        se = math.sqrt(var1 / k / reps)
        assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)
        ratio = float(est.var()) / (var1 / k)  # variance drops as 1/k
        assert 0.85 < ratio < 1.15, (k, ratio)
    with torch.no_grad():
        _, est = divergence_hutchinson(field, t, x, n_probes=2000, probe=probe,
                                       generator=gen)
    assert abs(float(est[0]) - exact) < 4 * math.sqrt(var1 / 2000)


def test_hutchinson_with_given_probes_is_exact_quadratic_form():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(3, 3, generator=g, dtype=D)
    x = torch.randn(4, 3, generator=g, dtype=D)
    eps = sample_probes(x, 5, "gaussian", generator=g)  # (5, 4, 3)
    _, est = divergence_hutchinson(lambda t, y: y @ a.T, 0.0, x, probes=eps)
    want = torch.einsum("kbi,ij,kbj->b", eps, a, eps) / 5
    torch.testing.assert_close(est, want)


def test_sample_probes():
    x = torch.zeros(6, 2, 2, dtype=torch.float32)
    r = sample_probes(x, 3, "rademacher", torch.Generator().manual_seed(0))
    assert r.shape == (3, 6, 2, 2) and r.dtype == torch.float32
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    r2 = sample_probes(x, 3, "rademacher", torch.Generator().manual_seed(0))
    assert torch.equal(r, r2)
    gauss = sample_probes(x.double(), 5000, "gaussian", torch.Generator().manual_seed(0))
    assert abs(float(gauss.mean())) < 0.02 and abs(float(gauss.var()) - 1) < 0.03


def _affine_flow(seed: int = 8, d: int = 3):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=D) / 2
    b = torch.randn(d, generator=g, dtype=D)
    # exp([[A, b], [0, 0]]) = [[e^A, c], [0, 1]] with c = int_0^1 e^{As} ds b.
    big = torch.zeros(d + 1, d + 1, dtype=D)
    big[:d, :d], big[:d, d] = a, b
    e = torch.linalg.matrix_exp(big)
    return a, b, e[:d, :d], e[:d, d]


def _std_normal_logpdf(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x ** 2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


def test_cnf_likelihood_of_affine_flow_matches_closed_form():
    # x1 = e^A x0 + c, x0 ~ N(0, I)  =>  x1 ~ N(c, e^A e^{A^T}) and
    # log p1(x1) = log N(x0) - tr(A).
    a, b, ea, c = _affine_flow()
    x1 = torch.randn(10, 3, generator=torch.Generator().manual_seed(9), dtype=D) * 2
    aug = augmented_dynamics(lambda t, x: x @ a.T + b)
    res = integrate(aug, (x1, torch.zeros(10, dtype=D)), t0=1.0, t1=0.0,
                    atol=1e-10, rtol=1e-10)
    x0, delta = res.x
    torch.testing.assert_close(x0, torch.linalg.solve(ea, (x1 - c).T).T, rtol=0, atol=1e-8)
    torch.testing.assert_close(delta, torch.full((10,), float(torch.trace(a)), dtype=D),
                               rtol=0, atol=1e-8)
    logp1 = _std_normal_logpdf(x0) - delta
    ref = torch.distributions.MultivariateNormal(c, ea @ ea.T).log_prob(x1)
    torch.testing.assert_close(logp1, ref, rtol=0, atol=1e-6)


def test_cnf_likelihood_gradient_wrt_parameters():
    # d/dA of mean log p1(x1) by backprop through the solve == autograd of the closed form.
    a0, b, _, _ = _affine_flow(seed=10, d=2)
    x1 = torch.randn(6, 2, generator=torch.Generator().manual_seed(11), dtype=D)
    a = a0.clone().requires_grad_(True)
    aug = augmented_dynamics(lambda t, x: x @ a.T + b)
    res = integrate(aug, (x1, torch.zeros(6, dtype=D)), t0=1.0, t1=0.0, method="rk4",
                    steps=40)
    x0, delta = res.x
    (g_solve,) = torch.autograd.grad((_std_normal_logpdf(x0) - delta).mean(), a)
    a_ref = a0.clone().requires_grad_(True)
    big = torch.zeros(3, 3, dtype=D)
    big[:2, :2], big[:2, 2] = a_ref, b  # out-of-place assignment into a fresh tensor
    e = torch.linalg.matrix_exp(big)
    ref = torch.distributions.MultivariateNormal(e[:2, 2], e[:2, :2] @ e[:2, :2].T)
    (g_ref,) = torch.autograd.grad(ref.log_prob(x1).mean(), a_ref)
    torch.testing.assert_close(g_solve, g_ref, rtol=0, atol=1e-6)


def test_fixed_hutchinson_probes_are_drawn_once_per_solve():
    g = torch.Generator().manual_seed(12)
    a = torch.randn(3, 3, generator=g, dtype=D)
    x1 = torch.randn(5, 3, generator=g, dtype=D)
    aug = augmented_dynamics(lambda t, x: x @ a.T, "hutchinson", generator=g)
    state = (x1, torch.zeros(5, dtype=D))
    res = integrate(aug, state, t0=1.0, t1=0.0, method="rk4", steps=7)
    eps = aug._cache["probes"][0]  # (5, 3), the one draw used by all 28 evaluations
    want = torch.einsum("bi,ij,bj->b", eps, a, eps)  # constant integrand over [0, 1]
    torch.testing.assert_close(res.x[1], want)
    integrate(aug, state, t0=1.0, t1=0.0, method="rk4", steps=7)
    assert not torch.equal(aug._cache["probes"][0], eps)  # fresh probes for a new solve


def test_hutchinson_cnf_is_exact_for_diagonal_field_with_rademacher_probes():
    diag = torch.tensor([0.3, -0.7, 1.1], dtype=D)
    x1 = torch.randn(4, 3, generator=torch.Generator().manual_seed(13), dtype=D)
    aug = augmented_dynamics(lambda t, x: x * diag, "hutchinson", n_probes=2,
                             fixed_probes=False)
    res = integrate(aug, (x1, torch.zeros(4, dtype=D)), t0=1.0, t1=0.0, atol=1e-9,
                    rtol=1e-9)
    torch.testing.assert_close(res.x[1], torch.full((4,), float(diag.sum()), dtype=D))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: augmented_dynamics(lambda t, x: x, "trace"), ValueError,
         "`divergence` must be one of 'exact', 'hutchinson'"),
        (lambda: augmented_dynamics(lambda t, x: x, "hutchinson", n_probes=0), ValueError,
         "`n_probes` must be >= 1"),
        (lambda: augmented_dynamics(lambda t, x: x, probe="uniform"), ValueError,
         "`probe` must be one of"),
        (lambda: augmented_dynamics(None), TypeError, "`field` must be callable"),
        (lambda: divergence_exact(lambda t, x: x, 0.0, torch.ones(3, dtype=D)), ValueError,
         r"`x` must have shape \(B, \*D\)"),
        (lambda: divergence_exact(lambda t, x: x.sum(1), 0.0, torch.ones(3, 2, dtype=D)),
         ValueError, "`field` returned shape"),
        (lambda: divergence_hutchinson(lambda t, x: x, 0.0, torch.ones(3, 2, dtype=D),
                                       probes=torch.ones(2, 3, 3, dtype=D)),
         ValueError, r"`probes` must have shape \(K, \*x.shape\)"),
        (lambda: augmented_dynamics(lambda t, x: x)(0.0, torch.ones(3, 2, dtype=D)),
         TypeError, r"state \(x, logp\) as a 2-tuple"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
