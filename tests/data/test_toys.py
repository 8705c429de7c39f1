"""2-D toys and the data-spec registry: shapes, reproducibility, and the laws themselves
(scikit-learn shapes, TorchCFM / FFJORD scalings re-implemented here in NumPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_circles, make_moons

from otgen.data import toys
from otgen.data.registry import TOYS, dataset_dim, get_sampler

SAMPLERS = {
    "moons": toys.sample_moons,
    "8gaussians": toys.sample_8gaussians,
    "checkerboard": toys.sample_checkerboard,
    "circles": toys.sample_circles,
    "swissroll": toys.sample_swissroll,
    "scurve": toys.sample_scurve,
    "spirals": toys.sample_spirals,
    "pinwheel": toys.sample_pinwheel,
}


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise distances (no matmul trick, which loses ~1e-8)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def nn_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each row of ``a`` to its nearest row of ``b``."""
    return cdist(torch.as_tensor(a), torch.as_tensor(b)).min(1).values.numpy()


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.cov(x.T)


# --------------------------------------------------------------------------- common contract


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_shape_dtype_finite(name, n):
    x = SAMPLERS[name](n, generator=g())
    assert x.shape == (n, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    x64 = SAMPLERS[name](n, generator=g(), dtype=torch.float64, device="cpu")
    assert x64.dtype == torch.float64 and torch.isfinite(x64).all()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_reproducible_with_generator(name):
    fn = SAMPLERS[name]
    a, b, c = fn(300, generator=g(1)), fn(300, generator=g(1)), fn(300, generator=g(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert set(TOYS) == set(SAMPLERS) and TOYS[name] is fn


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bad_common_arguments(name):
    fn = SAMPLERS[name]
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        fn(0, generator=g())
    with pytest.raises(TypeError, match="`n` must be an int"):
        fn(2.5, generator=g())
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        fn(3, generator=0)
    with pytest.raises(TypeError, match="`dtype` must be a floating torch dtype"):
        fn(3, dtype=torch.int64)


def test_bad_parameters():
    with pytest.raises(ValueError, match="`noise` must be a finite number >= 0"):
        toys.sample_moons(5, noise=-0.1)
    with pytest.raises(ValueError, match="`noise_kind` must be one of"):
        toys.sample_moons(5, noise_kind="laplace")
    with pytest.raises(ValueError, match="`shift` must be a finite number or a pair"):
        toys.sample_moons(5, shift=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="`scale` must be a finite number > 0"):
        toys.sample_checkerboard(5, scale=0.0)
    with pytest.raises(ValueError, match="`factor` must lie in"):
        toys.sample_circles(5, factor=1.5)
    with pytest.raises(ValueError, match="`radius` must be a finite number > 0"):
        toys.sample_8gaussians(5, radius=-1.0)
    with pytest.raises(ValueError, match="`arms` must be >= 1"):
        toys.sample_pinwheel(5, arms=0)


# --------------------------------------------------------------------------- moons


def torchcfm_moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """TorchCFM ``sample_moons``: torchdyn ``generate_moons(n, noise=0.2)[0] * 3 - 1``."""
    n_out, n_in = n // 2, n - n // 2
    a_out, a_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.cos(a_out), 1 - np.cos(a_in)])
    y = np.concatenate([np.sin(a_out), 1 - np.sin(a_in) - 0.5])
    pts = np.stack([x, y], 1) + rng.random((n, 1)) * 0.2
    return pts * 3 - 1


@pytest.mark.parametrize("n", [9, 200])
@pytest.mark.parametrize(("scale", "shift"), [(2.0, (-1.0, 0.0)), (3.0, -1.0), (1.0, 0.0)])
def test_moons_noise_free_is_sklearn_set(n, scale, shift):
    x = toys.sample_moons(
        n, noise=0.0, scale=scale, shift=shift, generator=g(), dtype=torch.float64
    ).numpy()
    ref, _ = make_moons(n_samples=n, noise=0.0, shuffle=False)
    ref = ref * scale + np.broadcast_to(np.asarray(shift, dtype=float), (2,))
    assert nn_dist(x, ref).max() < 1e-12 and nn_dist(ref, x).max() < 1e-12


def test_moons_random_arcs_lie_on_half_circles():
    x = toys.sample_moons(400, noise=0.0, scale=1.0, shift=0.0, grid=False, generator=g())
    x = x.double()
    d_out = ((x[:, 0]) ** 2 + x[:, 1] ** 2).sqrt() - 1  # outer arc: centre (0, 0), y >= 0
    d_in = ((x[:, 0] - 1) ** 2 + (x[:, 1] - 0.5) ** 2).sqrt() - 1  # inner: (1, .5), y <= .5
    on_arc = ((d_out.abs() < 1e-6) & (x[:, 1] >= -1e-6)) | (
        (d_in.abs() < 1e-6) & (x[:, 1] <= 0.5 + 1e-6)
    )
    assert on_arc.all()


def test_moons_default_is_torchcfm():
    n = 20000
    x = toys.sample_moons(n, generator=g(), dtype=torch.float64).numpy()
    ref = torchcfm_moons(n, np.random.default_rng(0))
    # The uniform noise moves each point along (1, 1): x - y is noise-free, so its
    # multiset must coincide exactly with TorchCFM's.
    np.testing.assert_allclose(
        np.sort(x[:, 0] - x[:, 1]), np.sort(ref[:, 0] - ref[:, 1]), atol=1e-12
    )
    m, c = moments(x)
    m_ref, c_ref = moments(ref)
    np.testing.assert_allclose(m, m_ref, atol=0.02)
    np.testing.assert_allclose(c, c_ref, atol=0.03)
    assert x.min(0)[0] >= -4 - 1e-9 and x.max(0)[0] <= 5.6 + 1e-9


def test_moons_benchmark_parametrisation_matches_sklearn_moments():
    n = 20000
    x = toys.sample_moons(
        n,
        noise=0.05,
        noise_kind="gaussian",
        scale=2.0,
        shift=(-1.0, 0.0),
        generator=g(),
        dtype=torch.float64,
    ).numpy()
    ref, _ = make_moons(n_samples=n, noise=0.05, random_state=0)
    ref = ref * 2.0
    ref[:, 0] -= 1.0
    m, c = moments(x)
    m_ref, c_ref = moments(ref)
    np.testing.assert_allclose(m, m_ref, atol=0.01)
    np.testing.assert_allclose(c, c_ref, atol=0.02)
    # Distance to the noise-free curve ≈ |normal component| of N(0, (2·0.05)² I₂), whose
    # mean is 0.1·sqrt(2/π).
    clean = toys.sample_moons(
        n, noise=0.0, scale=2.0, shift=(-1.0, 0.0), dtype=torch.float64
    ).numpy()
    assert abs(nn_dist(x[:2000], clean).mean() - 0.1 * math.sqrt(2 / math.pi)) < 0.005


# --------------------------------------------------------------------------- 8 gaussians


CENTRES = np.array([[math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)] for k in range(8)])


@pytest.mark.parametrize(("radius", "std"), [(5.0, 0.1**0.25), (5.0, 0.1**0.5), (2.0, 0.2)])
def test_8gaussians_modes_and_stds(radius, std):
    n = 16000
    kw = {} if std == 0.1**0.25 else {"std": std}
    x = toys.sample_8gaussians(n, radius=radius, generator=g(), dtype=torch.float64, **kw)
    x = x.numpy()
    centres = radius * CENTRES
    label = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(label, minlength=8)
    assert counts.min() > 0.85 * n / 8 and counts.max() < 1.15 * n / 8
    for k in range(8):
        pts = x[label == k]
        assert np.linalg.norm(pts.mean(0) - centres[k]) < 0.05 * radius
        np.testing.assert_allclose(pts.std(0), std, rtol=0.06)


def test_8gaussians_default_is_torchcfm():
    n = 20000
    x = toys.sample_8gaussians(n, generator=g(), dtype=torch.float64).numpy()
    rng = np.random.default_rng(0)
    # TorchCFM: MultivariateNormal(0, covariance_matrix=sqrt(var) * I) with var = 0.1.
    noise = rng.multivariate_normal(np.zeros(2), math.sqrt(0.1) * np.eye(2), size=n)
    ref = 5 * CENTRES[rng.integers(0, 8, n)] + noise
    m, c = moments(x)
    m_ref, c_ref = moments(ref)
    np.testing.assert_allclose(m, m_ref, atol=0.15)
    np.testing.assert_allclose(c, c_ref, atol=0.4)
    # The within-mode covariance pins the quirk: std 0.1 ** 0.25, not 0.1 ** 0.5.
    res = x - 5 * CENTRES[((x[:, None] - 5 * CENTRES[None]) ** 2).sum(-1).argmin(1)]
    np.testing.assert_allclose(np.cov(res.T), math.sqrt(0.1) * np.eye(2), atol=0.02)
    assert toys.TORCHCFM_8GAUSSIANS_STD == pytest.approx(0.1**0.25)


# --------------------------------------------------------------------------- other toys


def test_checkerboard_support_and_balance():
    n = 16000
    x = toys.sample_checkerboard(n, generator=g(), dtype=torch.float64)
    assert (x.abs() <= 4).all()
    col, row = torch.floor(x[:, 0] / 2), torch.floor(x[:, 1] / 2)
    assert ((col + row) % 2 == 0).all()  # only the 8 "dark" squares
    counts = torch.bincount(((col + 2) * 4 + row + 2).long(), minlength=16)
    assert (counts > 0).sum() == 8
    assert counts.max() < 1.12 * n / 8 and counts[counts > 0].min() > 0.88 * n / 8


@pytest.mark.parametrize("n", [10, 101])
def test_circles_noise_free_is_sklearn_set(n):
    x = toys.sample_circles(n, noise=0.0, generator=g(), dtype=torch.float64).numpy()
    ref = make_circles(n_samples=n, noise=0.0, factor=0.5, shuffle=False)[0] * 3
    assert nn_dist(x, ref).max() < 1e-12 and nn_dist(ref, x).max() < 1e-12
    r = np.linalg.norm(x, axis=1)
    assert np.isclose(r, 3.0).sum() == n // 2 and np.isclose(r, 1.5).sum() == n - n // 2


def test_swissroll_noise_free_on_spiral():
    x = toys.sample_swissroll(2000, noise=0.0, generator=g(), dtype=torch.float64)
    t = x.norm(dim=1) / 0.2
    assert (t >= 1.5 * math.pi - 1e-9).all() and (t <= 4.5 * math.pi + 1e-9).all()
    ref = 0.2 * t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], 1)
    torch.testing.assert_close(x, ref)


def test_scurve_noise_free_on_curve():
    x = toys.sample_scurve(2000, noise=0.0, generator=g(), dtype=torch.float64) / 2.0
    # (sin t, sign(t)(cos t - 1)) satisfies a² + (|b| - 1)² = 1 with |a| <= 1, |b| <= 2.
    torch.testing.assert_close(
        x[:, 0] ** 2 + (x[:, 1].abs() - 1) ** 2, torch.ones(2000, dtype=torch.float64)
    )
    assert (x[:, 1].abs() <= 2 + 1e-9).all()


def test_spirals_noise_free_on_two_arms():
    n = 1001
    x = toys.sample_spirals(n, noise=0.0, jitter=0.0, generator=g(), dtype=torch.float64)
    r = x.norm(dim=1) * 3  # radius before scaling = spiral parameter
    assert (r <= 3 * math.pi + 1e-9).all()
    arm = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], 1) / 3
    plus = (x - arm).norm(dim=1) < 1e-9
    minus = (x + arm).norm(dim=1) < 1e-9
    assert (plus | minus).all() and plus.sum() == n - n // 2


def test_spirals_default_moments_match_ffjord():
    n = 20000
    x = toys.sample_spirals(n, generator=g(), dtype=torch.float64).numpy()
    rng = np.random.default_rng(0)
    m = np.sqrt(rng.random((n // 2, 1))) * 540 * (2 * np.pi) / 360
    d1 = np.hstack(
        [
            -np.cos(m) * m + rng.random((n // 2, 1)) * 0.5,
            np.sin(m) * m + rng.random((n // 2, 1)) * 0.5,
        ]
    )
    ref = np.vstack([d1, -d1]) / 3 + rng.standard_normal((n, 2)) * 0.1
    np.testing.assert_allclose(moments(x)[1], moments(ref)[1], atol=0.12)
    np.testing.assert_allclose(moments(x)[0], 0.0, atol=0.03)


def test_pinwheel_noise_free_arm_tips():
    x = toys.sample_pinwheel(
        50, radial_std=0.0, tangential_std=0.0, generator=g(), dtype=torch.float64
    )
    torch.testing.assert_close(x.norm(dim=1), torch.full((50,), 2.0, dtype=torch.float64))
    phi = torch.arange(5, dtype=torch.float64) * 2 * math.pi / 5 + 0.25 * math.e
    tips = 2 * torch.stack([torch.cos(phi), -torch.sin(phi)], 1)  # f = (1, 0) rotated by -φ
    assert cdist(x, tips).min(1).values.max() < 1e-9
    assert (cdist(x, tips).argmin(1).bincount(minlength=5) == 10).all()


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", list(TOYS))
def test_registry_toys(name):
    s = get_sampler(name)
    x = s(33, g(3))
    assert x.shape == (33, 2) and x.dtype == torch.float32
    assert torch.equal(x, s(33, generator=g(3)))
    assert torch.equal(x, TOYS[name](33, generator=g(3)))
    assert dataset_dim(name) == 2


def test_registry_toy_parameters_and_dtype():
    s = get_sampler(
        "moons",
        noise=0.05,
        noise_kind="gaussian",
        scale=2.0,
        shift=(-1.0, 0.0),
        dtype=torch.float64,
    )
    ref = toys.sample_moons(
        64,
        noise=0.05,
        noise_kind="gaussian",
        scale=2.0,
        shift=(-1.0, 0.0),
        generator=g(),
        dtype=torch.float64,
    )
    assert torch.equal(s(64, g()), ref)
    with pytest.raises(TypeError, match="bogus"):
        get_sampler("moons", bogus=1)
    with pytest.raises(ValueError, match="`noise` must be a finite number >= 0"):
        get_sampler("moons", noise=-1.0)
    with pytest.raises(TypeError, match="takes no parameters"):
        get_sampler("gaussian", noise=1.0)


@pytest.mark.parametrize(("spec", "d"), [("gaussian", 2), ("gaussian:1", 1), ("gaussian:5", 5)])
def test_registry_gaussian(spec, d):
    s = get_sampler(spec, dtype=torch.float64)
    x = s(20000, g())
    assert x.shape == (20000, d) and x.dtype == torch.float64 and dataset_dim(spec) == d
    torch.testing.assert_close(x.mean(0), torch.zeros(d, dtype=x.dtype), atol=0.03, rtol=0)
    cov = torch.atleast_2d(torch.cov(x.T))
    torch.testing.assert_close(cov, torch.eye(d, dtype=x.dtype), atol=0.04, rtol=0)
    assert torch.equal(s(10, g(1)), s(10, g(1)))


@pytest.mark.parametrize("spec", ["moon", "gaussians", "", "gaussian:0", "gaussian:x", "a.txt"])
def test_registry_bad_names(spec):
    with pytest.raises(ValueError, match="`spec`") as err:
        get_sampler(spec)
    if not spec.startswith("gaussian:"):
        msg = str(err.value)
        assert all(repr(name) in msg for name in [*TOYS, "gaussian"])
    with pytest.raises(ValueError, match="`spec`"):
        dataset_dim(spec)


def test_registry_suggests_close_name():
    with pytest.raises(ValueError, match="did you mean 'moons'"):
        get_sampler("moon")
    with pytest.raises(TypeError, match="`spec` must be a str"):
        get_sampler(3)


def test_registry_csv_file_uniform_rows(tmp_path):
    rows = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [-1.0, 0.5, 7.0], [9.0, 9.0, 9.0]])
    f = tmp_path / "cloud.csv"
    f.write_text("a,b,c\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    assert dataset_dim(str(f)) == 3
    s = get_sampler(str(f), dtype=torch.float64)
    x = s(4000, g())
    assert x.shape == (4000, 3) and x.dtype == torch.float64
    idx = cdist(x, torch.as_tensor(rows)).argmin(1)
    torch.testing.assert_close(x, torch.as_tensor(rows)[idx])  # every sample is a row
    freq = idx.bincount(minlength=4) / 4000.0
    assert (freq - 0.25).abs().max() < 0.03
    assert torch.equal(s(50, g(5)), s(50, g(5))) and not torch.equal(s(50, g(5)), s(50, g(6)))


def test_registry_weighted_and_npy_files(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("x,y,weight\n0,0,1\n1,1,3\n2,2,0\n")
    x = get_sampler(f)(8000, g())
    k = x[:, 0].round().long().bincount(minlength=3)
    assert k[2] == 0 and abs(k[1].item() / 8000 - 0.75) < 0.03
    p = tmp_path / "c.npy"
    np.save(p, np.arange(12.0).reshape(6, 2))
    assert dataset_dim(p) == 2
    y = get_sampler(str(p))(100, g())
    assert y.shape == (100, 2) and ((y[:, 1] - y[:, 0]) == 1).all()
    with pytest.raises(ValueError, match="no such file"):
        get_sampler(str(tmp_path / "missing.npy"))
